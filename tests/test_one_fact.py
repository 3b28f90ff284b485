"""Each fact once (issue 21): the config's allowed values are the names the implementing code builds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.config import choices, schema


def schema_choices(section, name: str) -> list:
    """The `choices` rule of one field of a schema dataclass."""
    return list({field.name: field for field in dataclasses.fields(section)}[name].metadata["choices"])


def test_optimizer_names_are_the_optimizer_classes():
    from pipeline.training import optimizers

    assert schema_choices(schema.OptimizerConfig, "name") == list(optimizers.OPTIMIZER_CLASSES)
    for name in choices.OPTIMIZERS:
        built = optimizers.build_optimizer(name=name, learning_rate=0.1)
        assert isinstance(built, optimizers.OPTIMIZER_CLASSES[name])
    with pytest.raises(ValueError, match="sgd, adam, adamw, rmsprop"):
        optimizers.build_optimizer(name="adagrad", learning_rate=0.1)


def test_schedule_names_are_the_schedules_built():
    from pipeline.training import optimizers

    assert schema_choices(schema.ScheduleConfig, "name") == list(choices.SCHEDULES)
    rates = {}
    for name in choices.SCHEDULES:
        schedule = optimizers.build_schedule(
            name=name, learning_rate=0.1, steps_per_epoch=10, epochs=4, boundaries=[2], warmup_epochs=0
        )
        rates[name] = float(schedule if isinstance(schedule, float) else schedule(30))
    # step 30 = epoch 3: constant 0.1; step x0.1 after epoch 2; linear decay to 0 at step 40: 0.025;
    # cosine: 0.1 * (1 + cos(pi * 30 / 40)) / 2.
    np.testing.assert_allclose(
        [rates[name] for name in choices.SCHEDULES],
        [0.1, 0.01, 0.025, 0.1 * (1 + np.cos(np.pi * 0.75)) / 2],
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="constant, step, polynomial, cosine"):
        optimizers.build_schedule(name="exponential", learning_rate=0.1, steps_per_epoch=1, epochs=1)


def test_tta_modes_are_the_wrappers_built():
    import keras

    from pipeline.evaluation import tta

    assert schema_choices(schema.EvaluationConfig, "tta") == list(choices.TTA_MODES)
    assert schema_choices(schema.ExportConfig, "tta") == list(choices.TTA_MODES)
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(2)(keras.layers.Flatten()(inputs))))
    names = [tta.with_tta(model, mode).name for mode in choices.TTA_MODES]
    assert names == [model.name, f"{model.name}_flip_tta", f"{model.name}_flip_translate_tta"]
    with pytest.raises(ValueError, match="none, flip, flip_translate"):
        tta.with_tta(model, "rotate")


def test_strategy_names_are_the_strategies_resolved():
    from pipeline.distribute import strategy

    assert schema_choices(schema.DistributeConfig, "strategy") == list(strategy.STRATEGIES)
    resolved = [strategy.choose_strategy_name(name, tf_config={}, gpus=1) for name in choices.STRATEGIES]
    assert resolved == ["default", "default", "mirrored", "multi_worker"]
    with pytest.raises(strategy.DistributeError, match="did you mean 'mirrored'"):
        strategy.choose_strategy_name("mirored")


def test_input_choices_are_what_the_transform_and_layers_take():
    from pipeline.data import image_ops
    from pipeline.data.transform import EvalTransform

    assert schema_choices(schema.CropConfig, "mode") == list(choices.CROP_MODES)
    assert schema_choices(schema.InputConfig, "resize_method") == list(choices.RESIZE_METHODS)
    assert schema_choices(schema.InputConfig, "normalization") == list(choices.NORMALIZATIONS)
    assert schema_choices(schema.AugmentConfig, "fill_mode") == list(choices.FILL_MODES)
    image = np.arange(10 * 14 * 3, dtype=np.float32).reshape(10, 14, 3) % 255
    for crop in choices.CROP_MODES:
        for method in choices.RESIZE_METHODS:
            transform = EvalTransform(image_size=(6, 6), channels=3, crop=crop, resize_method=method, margin=1)
            assert transform(image).shape == (6, 6, 3), (crop, method)
    with pytest.raises(ValueError, match="none, square, shorter_side, random_resized"):
        EvalTransform(image_size=(6, 6), crop="centre")
    for mode in choices.NORMALIZATIONS:
        layer = image_ops.normalization_layer(mode, mean=[127.5] * 3, std=[127.5] * 3)
        np.testing.assert_allclose(layer(np.full((1, 1, 1, 3), 255.0, np.float32)), 1.0, rtol=1e-6)
    batch = image[None]
    for fill_mode in choices.FILL_MODES:
        shifted = image_ops.shift_and_flip(batch, np.array([1, 2]), max_rows=2, max_cols=2, fill_mode=fill_mode)
        assert shifted.shape == batch.shape
    with pytest.raises(ValueError, match="nearest, reflect, constant, wrap"):
        image_ops.shift_and_flip(batch, np.array([1, 2]), max_rows=2, max_cols=2, fill_mode="mirror")


# --------------------------------------------------------------------------------------------------
# `data stats` decodes and transforms as training does
# --------------------------------------------------------------------------------------------------


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth gradients plus a bright corner block: a JPEG-friendly picture that differs when rotated."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 255 // height, cols * 255 // width, (rows + cols + 40 * seed) % 256], -1)
    image[: height // 3, : width // 4] = 250
    return image.astype(np.uint8)


def write_photo(path, array: np.ndarray, fmt: str, orientation: int | None = None) -> None:
    """`array` as displayed, stored as a camera stores it: the raw pixels rotated back + EXIF orientation."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    options = {"quality": 90} if fmt == "JPEG" else {}
    if orientation is not None:
        inverse = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
        image = image.transpose(inverse[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    image.save(path, format=fmt, **options)


def test_data_stats_equal_the_statistics_training_standardizes_with(tmp_path):
    # One case (the pipeline's first trace costs seconds): shorter-side crop and area resize of photos of
    # several sizes and EXIF orientations; grey conversion is covered by tests/test_data_tools.py.
    crop, channels = "shorter_side", 3
    from pipeline.config import loader
    from pipeline.data import splits as splits_lib
    from pipeline.tools import stats

    root = tmp_path / "photos"
    pictures = [  # (class, name, height, width, format, EXIF orientation)
        ("cats", "phone.jpg", 48, 36, "JPEG", 6),
        ("cats", "upside.jpg", 30, 50, "JPEG", 3),
        ("cats", "wide.png", 20, 64, "PNG", None),
        ("dogs", "left.jpg", 40, 28, "JPEG", 8),
        ("dogs", "plain.jpg", 33, 33, "JPEG", None),
        ("dogs", "tall.png", 70, 24, "PNG", None),
    ]
    for seed, (label, name, height, width, fmt, orientation) in enumerate(pictures):
        write_photo(root / "train" / label / name, photo(height, width, seed), fmt, orientation)
        write_photo(root / "test" / label / name, photo(20, 20, seed), "PNG")  # never in the statistics
    config = loader.from_dict(
        {
            "name": "stats_check",
            "dataset": {"name": "folder", "root": str(root), "data_dir": str(tmp_path / "data"), "validation_split": 0},
            "input": {
                "image_size": [12, 16],
                "channels": channels,
                "crop": {"mode": crop, "margin": 2},
                "resize_method": "area",
                "normalization": "standardize",
                "cache": "none",
            },
            "model": {"name": "tiny"},
            "train": {"callbacks": {"checkpoint": {"monitor": "loss"}, "early_stopping": {"enabled": False}}},
        }
    )
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    assert len(splits.train[1]) == len(pictures)
    training_mean, training_std = splits.channel_statistics()

    result = stats.stats(
        root / "train",
        image_size=(12, 16),
        channels=channels,
        crop=crop,
        margin=2,
        resize_method="area",
        out=tmp_path / "stats",
    )
    assert result["images"] == len(pictures) and result["class_counts"] == {"cats": 3, "dogs": 3}
    np.testing.assert_allclose(result["mean"], training_mean, atol=1e-4)
    np.testing.assert_allclose(result["std"], training_std, atol=1e-4)
    # The file read back as `input.statistics` gives the same numbers.
    assert splits_lib.read_statistics(str(tmp_path / "stats" / "stats.json"), channels=channels) == (
        result["mean"],
        result["std"],
    )
    assert result["transform"]["crop"] == crop and result["transform"]["resize_method"] == "area"
    # The old `data stats` (tf.io.decode_image: no EXIF orientation, the fast IDCT, squash resize) is off by
    # more than 10 levels in every channel's mean on these pictures: the tolerance above tells them apart.


# --------------------------------------------------------------------------------------------------
# One eval-transform sizing
# --------------------------------------------------------------------------------------------------

PROJECT = __import__("pathlib").Path(__file__).resolve().parent.parent


def sources(*packages):
    """(relative path, text) of every module in `packages`."""
    for package in packages:
        for path in sorted((PROJECT / package).rglob("*.py")):
            yield path.relative_to(PROJECT).as_posix(), path.read_text()


def test_the_eval_transform_is_sized_in_one_place():
    import ast

    callers = set()  # calls of EvalTransform.sized(image_size=..., channels=...)
    for path, text in sources("pipeline", "models"):
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "sized"
                and {keyword.arg for keyword in node.keywords} >= {"image_size"}
            ):
                callers.add(path)
    assert callers == {"pipeline/data/transform.py"}


@pytest.mark.parametrize(
    "dataset, image_size, channels, expected",
    [("mnist", None, None, (28, 28, 1)), ("mnist", [20, 24], 3, (20, 24, 3)), ("fashion_mnist", None, 3, (28, 28, 3))],
)
def test_summary_training_and_export_size_the_transform_alike(data_env, dataset, image_size, channels, expected):
    import keras

    from pipeline.config import loader
    from pipeline.data import splits as splits_lib
    from pipeline.inspection import summary
    from pipeline.serving import export

    config = loader.load_config(
        "tiny",
        [
            *data_env,
            f"dataset.name={dataset}",
            f"input.image_size={image_size or 'null'}",
            f"input.channels={channels or 'null'}",
        ],
    )
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    from_summary = summary.eval_transform_for(config)
    assert splits.input_shape == from_summary.input_shape == expected
    assert splits.transform() == from_summary
    model = keras.Sequential([keras.Input(expected), keras.layers.Flatten(), keras.layers.Dense(2)])
    assert export.eval_transform(model, config) == from_summary


def test_registered_native_shapes_and_class_counts_are_the_data_s(data_env):
    from pipeline.data import datasets

    for name in ("mnist", "fashion_mnist", "cifar10"):
        data = datasets.load_dataset(name, data_dir=data_env[0].split("=", 1)[1])
        assert datasets.native_shape(name) == data.image_shape
        assert datasets.known_class_count(name) == len(data.class_names)
    assert datasets.native_shape("folder") is None and datasets.known_class_count("folder") is None
    assert datasets.known_class_count("hymenoptera") == 2 and datasets.native_shape("hymenoptera") is None


def test_summary_without_an_image_size_for_files_says_what_to_set():
    from pipeline.config import ConfigError, loader
    from pipeline.inspection import summary

    config = loader.load_config("tiny", ["dataset.name=folder", "dataset.root=/nowhere", "input.image_size=null"])
    with pytest.raises(ConfigError, match=r"input.image_size: required for dataset 'folder'.*224,224"):
        summary.eval_transform_for(config)


# --------------------------------------------------------------------------------------------------
# One copy of each helper
# --------------------------------------------------------------------------------------------------


def test_each_shared_helper_is_defined_once():
    import ast

    defined = {}
    for path, text in sources("pipeline", "models"):
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef):
                defined.setdefault(node.name.lstrip("_"), []).append(path)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        defined.setdefault(target.id, []).append(path)
    assert defined["flatten"] == ["pipeline/config/rundir.py"]
    assert defined["convert_channels"] == ["pipeline/data/decode.py"]
    assert defined["os_reason"] == ["pipeline/core/fileio.py"]
    assert [name for name in defined if "USER_ERROR" in name] == ["USER_ERROR_EXIT_CODE"]
    assert defined["USER_ERROR_EXIT_CODE"] == ["pipeline/core/errors.py"]
    # The OS-error wording: only fileio reads an error's strerror.
    assert [path for path, text in sources("pipeline", "models") if "strerror" in text] == ["pipeline/core/fileio.py"]


def test_os_reason_words():
    import errno

    from pipeline.core import fileio

    assert fileio.os_reason(PermissionError(errno.EACCES, "Permission denied", "x")) == "permission denied"
    assert fileio.os_reason(FileNotFoundError(errno.ENOENT, "No such file", "x")) == (
        "no such file (or a broken symbolic link)"
    )
    assert fileio.os_reason(OSError(errno.EIO, "Input/output error")) == "Input/output error"
    assert fileio.os_reason(ValueError("not an OSError")) == "not an OSError"


def test_convert_channels_decides_statically_when_it_can():
    import tensorflow as tf

    from pipeline.data import decode

    rgba = tf.constant(np.arange(2 * 2 * 4, dtype=np.uint8).reshape(2, 2, 4))
    grey = decode.convert_channels(rgba, 1)
    assert grey.shape == (2, 2, 1) and grey.dtype == tf.uint8
    unknown = tf.function(
        lambda image: decode.convert_channels(image, 1), input_signature=[tf.TensorSpec(None, tf.uint8)]
    )
    np.testing.assert_array_equal(unknown(rgba), grey)
    rgb = decode.convert_channels(rgba, None)
    np.testing.assert_array_equal(rgb, rgba[..., :3])
    assert decode.convert_channels(rgb, 3) is rgb


# --------------------------------------------------------------------------------------------------
# One run-directory layout
# --------------------------------------------------------------------------------------------------


def test_only_rundir_spells_the_run_directory_s_file_names():
    import ast

    from pipeline.config.rundir import RunLayout

    # classes.txt is left out: datasets' list folders and exports have a file of that name too.
    files = {RunLayout.CONFIG, RunLayout.BEST, RunLayout.LAST, RunLayout.HISTORY, RunLayout.CURVES}
    files |= {RunLayout.REPORT, RunLayout.PER_CLASS, RunLayout.METRICS}
    folders = {RunLayout.CHECKPOINTS, RunLayout.BACKUP, RunLayout.TENSORBOARD, RunLayout.EVALUATION, RunLayout.EXPORT}
    spelled = []
    for path, text in sources("pipeline", "models"):
        if path == "pipeline/config/rundir.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and node.value in files:
                spelled.append(f"{path}:{node.lineno} {node.value}")
            elif (
                isinstance(node, ast.BinOp)
                and isinstance(node.op, ast.Div)
                and isinstance(node.right, ast.Constant)
                and node.right.value in folders
            ):
                spelled.append(f"{path}:{node.lineno} / {node.right.value!r}")
    assert not spelled, "run-directory names outside RunLayout:\n" + "\n".join(spelled)


def test_run_layout_paths():
    from pipeline.config.rundir import RunLayout

    layout = RunLayout("runs/x/1")
    assert layout.checkpoint("best").as_posix() == "runs/x/1/checkpoints/best.keras"
    assert layout.checkpoint("last").as_posix() == "runs/x/1/checkpoints/last.keras"
    assert layout.report.as_posix() == "runs/x/1/evaluation/report.json"
    names = [layout.config, layout.classes, layout.backup, layout.tensorboard, layout.history, layout.curves]
    names += [layout.metrics, layout.export]
    assert [p.name for p in names] == [
        "config.yaml", "classes.txt", "backup", "tensorboard", "history.csv", "curves.png", "metrics.json", "export"
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# One error contract
# --------------------------------------------------------------------------------------------------

# Errors a user can fix, by module: each must be a UserError (exit code 2, one line, no traceback).
USER_ERRORS = {
    "pipeline.core.errors": ["UnknownNameError"],
    "pipeline.core.fileio": ["StorageFullError", "DamagedFileError"],
    "pipeline.config.loader": ["ConfigError"],
    "pipeline.config.rundir": ["RunError", "RunDirError", "DataChangedError"],
    "pipeline.data.folders": ["DatasetError"],
    "pipeline.data.records": ["TFRecordError"],
    "pipeline.data.sharding": ["ShardError"],
    "pipeline.data.disk_cache": ["DiskCacheInUseError"],
    "pipeline.data.class_balance": ["ClassWeightError"],
    "pipeline.training.phases": ["PhaseError"],
    "pipeline.training.callbacks": ["MonitorError"],
    "pipeline.distribute.strategy": ["DistributeError"],
    "pipeline.evaluation.report": ["ReportError"],
    "pipeline.evaluation.compare_runs": ["CompareError"],
    "pipeline.inspection.summary": ["SummaryError"],
    "pipeline.serving.export": ["ExportError"],
    "pipeline.serving.predict": ["PredictError"],
    "pipeline.serving.server": ["ServeError"],
    "pipeline.serving.batching": ["BatchingError"],
    "pipeline.tools.common": ["DataError"],
    "pipeline.tune.space": ["TuneError"],
    "pipeline.audit.common": ["AuditError"],
    "models.weights": ["WeightsError"],
}
# Builtins kept as second bases, for callers (and tests) that catch them.
ALSO = {"UnknownNameError": KeyError, "PhaseError": ValueError, "WeightsError": RuntimeError}
ALSO |= {"ConfigError": ValueError}


def user_error_classes():
    import importlib

    return [getattr(importlib.import_module(module), name) for module, names in USER_ERRORS.items() for name in names]


def test_every_error_class_is_in_the_table():
    import ast

    listed = {(module, name) for module, names in USER_ERRORS.items() for name in names}
    found = set()
    for path, text in sources("pipeline", "models"):
        module = path[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                found.add((module, node.name))
    # The base itself, and a YAML parse error raised inside the loader and reported as a ConfigError.
    assert found - listed == {("pipeline.core.errors", "UserError"), ("pipeline.config.loader", "DuplicateKeyError")}
    assert listed <= found


def test_every_user_error_is_a_user_error():
    from pipeline.core.errors import UserError

    for error_class in user_error_classes():
        assert issubclass(error_class, UserError), error_class
        if error_class.__name__ in ALSO:
            assert issubclass(error_class, ALSO[error_class.__name__]), error_class


@pytest.mark.parametrize("error_class", user_error_classes(), ids=lambda c: c.__name__)
def test_the_cli_exits_2_with_one_line_for_each(error_class, monkeypatch, capsys):
    from pipeline import cli

    message = f"{error_class.__name__}: what is wrong, what is allowed, what was received"
    if error_class.__name__ == "StorageFullError":
        error, message = error_class("runs/x/history.csv", "no space left on device"), "cannot write runs/x/history.csv"
    elif error_class.__name__ == "DamagedFileError":
        error = error_class(
            "runs/x/checkpoints/best.keras", reason="not a complete zip archive", remedy="Copy it again."
        )
        message = "runs/x/checkpoints/best.keras: damaged or truncated (not a complete zip archive). Copy it again."
    else:
        error = error_class(message)

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "run_command", fail)
    assert cli.main(["train", "tiny"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and f"'{message}" not in captured.err  # no KeyError quotes
