"""The serving side: the SavedModel export (signatures, self-containment, TF Serving's REST encoding,
never overwriting), the TFLite export and `python -m pipeline predict`.

One tiny training run (module-scoped) provides the checkpoint and its export, run_dir/export/tiny/1.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import cli
from pipeline.data import image_ops as preprocessing

PROJECT_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = (16, 16)  # experiments/tiny.yaml: input.image_size
CHANNELS = 3
NUM_CLASSES = 10
TOP_K = 5  # export.top_k default


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(synthetic_mirror, tmp_path_factory) -> Path:
    """One tiny training run (one epoch); training exports version 1."""
    root = tmp_path_factory.mktemp("serving")
    previous = os.environ.get("DATA_MIRROR")
    os.environ["DATA_MIRROR"] = str(synthetic_mirror)
    try:
        code = cli.main(
            [
                "train",
                "tiny",
                "--run-dir",
                str(root / "run"),
                "--set",
                f"dataset.data_dir={root / 'data'}",
                "--set",
                "train.epochs=1",
                "--set",
                "train.verbose=0",
                "--set",
                "evaluation.report=false",
                "--set",
                "train.callbacks.tensorboard.images=false",
            ]
        )
    finally:
        if previous is None:
            os.environ.pop("DATA_MIRROR", None)
        else:
            os.environ["DATA_MIRROR"] = previous
    assert code == 0
    return root / "run"


@pytest.fixture(scope="module")
def version_dir(run_dir) -> Path:
    path = run_dir / "export" / "tiny" / "1"
    assert (path / "saved_model.pb").is_file()
    return path


@pytest.fixture(scope="module")
def class_names(run_dir) -> list[str]:
    return (run_dir / "classes.txt").read_text().split()


@pytest.fixture(scope="module")
def keras_model(run_dir):
    return keras.models.load_model(run_dir / "checkpoints" / "best.keras")


@pytest.fixture(scope="module")
def loaded(version_dir):
    return tf.saved_model.load(str(version_dir))


def _pattern(height, width, channels, seed):
    """Noise plus a bright block somewhere: images the model does not score uniformly."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 80, size=(height, width, channels), dtype=np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    image[top : top + height // 2, left : left + width // 2] = rng.integers(150, 256, size=channels)
    return image


def _encode(array, image_format, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


# name: (file name, PIL array, format). Training size, other sizes and aspect ratios, grey, RGBA.
IMAGE_SPECS = {
    "train_png": ("train.png", lambda: _pattern(16, 16, 3, 1), "PNG"),
    "train_jpeg": ("train.jpg", lambda: _pattern(16, 16, 3, 2), "JPEG"),
    "wide_png": ("wide.png", lambda: _pattern(24, 40, 3, 3), "PNG"),
    "tall_jpeg": ("tall.jpeg", lambda: _pattern(50, 20, 3, 4), "JPEG"),
    "large_png": ("large.png", lambda: _pattern(97, 64, 3, 5), "PNG"),
    "small_png": ("small.png", lambda: _pattern(7, 11, 3, 6), "PNG"),
    "grey_png": ("grey.png", lambda: _pattern(20, 20, 1, 7)[..., 0], "PNG"),
    "rgba_png": ("rgba.png", lambda: _pattern(16, 16, 4, 8), "PNG"),
    "rgba_odd_png": ("rgba_odd.png", lambda: _pattern(30, 18, 4, 9), "PNG"),
    "train_bmp": ("train.bmp", lambda: _pattern(16, 16, 3, 10), "BMP"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """name -> {path, bytes, decoded (uint8 [H, W, C] as the file holds it), rgb (uint8 [H, W, 3])}.

    Decoded with PIL, independently of TensorFlow: PNG/BMP are lossless, and the serving graph decodes
    JPEG with the accurate IDCT (decode.JPEG_DCT_METHOD), which gives PIL's pixels exactly."""
    folder = tmp_path_factory.mktemp("images")
    result = {}
    for name, (filename, make, image_format) in IMAGE_SPECS.items():
        array = make()
        data = _encode(array, image_format, **({"quality": 90} if image_format == "JPEG" else {}))
        path = folder / filename
        path.write_bytes(data)
        decoded = np.asarray(Image.open(io.BytesIO(data)))
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        rgb = decoded[..., :3] if decoded.shape[-1] == 4 else decoded
        rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb
        result[name] = {"path": path, "bytes": data, "decoded": decoded, "rgb": np.ascontiguousarray(rgb)}
    return result


@pytest.fixture(scope="module")
def expected(images, keras_model) -> dict:
    """name -> the Keras checkpoint's probabilities for prepare_images(decoded image)."""
    result = {}
    for name, image in images.items():
        prepared = preprocessing.prepare_images(
            tf.constant(image["decoded"][None]), image_size=IMAGE_SIZE, channels=CHANNELS
        )
        result[name] = np.asarray(keras_model(prepared, training=False))[0]
    return result


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())


def _newest_saved_model(model_dir: Path) -> Path:
    return model_dir / str(max(v for v in _versions(model_dir) if (model_dir / str(v) / "saved_model.pb").exists()))


# --------------------------------------------------------------------------------------------------
# The SavedModel
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a fresh process or two: kept out of `make test`'s 4 minutes (run with `make test-slow`)
def test_saved_model_cli_lists_both_signatures(version_dir):
    tool = Path(sys.executable).parent / "saved_model_cli"
    tool = str(tool) if tool.exists() else shutil.which("saved_model_cli")
    assert tool, "saved_model_cli not found next to the interpreter or on PATH"
    shown = subprocess.run(
        [tool, "show", "--all", "--dir", str(version_dir)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    blocks = {
        match.group(1): match.group(2)
        for match in re.finditer(r"signature_def\['(\w+)'\]:(.*?)(?=signature_def\[|\Z)", shown, re.S)
    }
    tensor = re.compile(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))")

    def tensors(block):
        found = {}
        for kind, name, dtype, shape in tensor.findall(block):
            found.setdefault(kind, {})[name] = (dtype, shape)
        return found

    outputs = {
        "probabilities": ("DT_FLOAT", f"(-1, {NUM_CLASSES})"),
        "classes": ("DT_STRING", f"(-1, {TOP_K})"),
        "scores": ("DT_FLOAT", f"(-1, {TOP_K})"),
    }
    assert tensors(blocks["serving_default"]) == {"inputs": {"image_bytes": ("DT_STRING", "(-1)")}, "outputs": outputs}
    assert tensors(blocks["serve_images"]) == {
        "inputs": {"images": ("DT_UINT8", "(-1, -1, -1, -1)")},
        "outputs": outputs,
    }
    for name in ("serving_default", "serve_images"):
        assert "Method name is: tensorflow/serving/predict" in blocks[name]
    assert (version_dir / "assets" / "classes.txt").read_text().split() == (
        version_dir.parents[2] / "classes.txt"
    ).read_text().split()


FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    try:
        import pipeline  # noqa: F401
        pipeline_importable = True
    except ImportError:
        pipeline_importable = False
    import tensorflow as tf

    export_dir, manifest_path, out_path = sys.argv[1:]
    manifest = json.load(open(manifest_path))
    loaded = tf.saved_model.load(export_dir)
    results = {"pipeline_importable": np.array(pipeline_importable)}
    encoded = [open(path, "rb").read() for path in manifest["files"]]
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    for key, value in outputs.items():
        results["bytes/" + key] = value.numpy().astype(str) if value.dtype == tf.string else value.numpy()
    arrays = np.load(manifest["arrays"])
    for name in arrays.files:
        outputs = loaded.signatures["serve_images"](images=tf.constant(arrays[name]))
        for key, value in outputs.items():
            results[name + "/" + key] = (value.numpy().astype(str) if value.dtype == tf.string
                                         else value.numpy())
    np.savez(out_path, **results)
""")


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_fresh_process_without_the_project_matches_the_keras_model(
    version_dir, images, expected, class_names, tmp_path
):
    names = list(images)
    arrays = {name: images[name]["rgb"][None] for name in names}
    # serve_images also takes the native channel layout (grey, RGBA) and converts it in the graph.
    arrays.update(
        {f"native-{name}": images[name]["decoded"][None] for name in names if images[name]["decoded"].shape[-1] != 3}
    )
    assert any(key.startswith("native-") for key in arrays)
    same_size = [name for name in names if images[name]["rgb"].shape[:2] == IMAGE_SIZE]
    assert len(same_size) >= 3
    arrays["batch"] = np.stack([images[name]["rgb"] for name in same_size])
    np.savez(tmp_path / "arrays.npz", **arrays)
    manifest = {"files": [str(images[name]["path"]) for name in names], "arrays": str(tmp_path / "arrays.npz")}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "serve.py").write_text(FRESH_PROCESS)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    completed = subprocess.run(
        [sys.executable, "serve.py", str(version_dir), "manifest.json", "out.npz"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert str(PROJECT_ROOT) != str(tmp_path)
    results = np.load(tmp_path / "out.npz")
    assert not results["pipeline_importable"], "the fresh process could import the project"

    def check(probabilities, classes, scores, want):
        np.testing.assert_allclose(probabilities, want, rtol=0, atol=1e-5)
        assert np.argmax(probabilities) == np.argmax(want)
        order = np.argsort(-want, kind="stable")[:TOP_K]
        np.testing.assert_allclose(scores, want[order], rtol=0, atol=1e-5)
        assert classes[0] == class_names[int(np.argmax(want))]

    for index, name in enumerate(names):
        check(
            results["bytes/probabilities"][index],
            results["bytes/classes"][index],
            results["bytes/scores"][index],
            expected[name],
        )
        # serve_images gets the 3-channel pixels; grey -> RGB and RGBA -> RGB do not change the result
        check(
            results[f"{name}/probabilities"][0],
            results[f"{name}/classes"][0],
            results[f"{name}/scores"][0],
            expected[name],
        )
    for name in (key[len("native-") :] for key in arrays if key.startswith("native-")):
        check(
            results[f"native-{name}/probabilities"][0],
            results[f"native-{name}/classes"][0],
            results[f"native-{name}/scores"][0],
            expected[name],
        )
    for index, name in enumerate(same_size):
        check(
            results["batch/probabilities"][index],
            results["batch/classes"][index],
            results["batch/scores"][index],
            expected[name],
        )


def _tf_serving_tensor(body: str, input_name: str) -> tf.Tensor:
    """What TF Serving's REST API builds from a row-format body for a single DT_STRING input: each
    instance is the input's value, either bare or under the input's name; {"b64": ...} is base64-decoded
    into the bytes of one tf.string element."""
    instances = json.loads(body)["instances"]
    values = []
    for instance in instances:
        if isinstance(instance, dict) and set(instance) == {input_name}:
            instance = instance[input_name]
        if isinstance(instance, dict) and set(instance) == {"b64"}:
            values.append(base64.b64decode(instance["b64"]))
        else:
            values.append(str(instance).encode())
    return tf.constant(values, dtype=tf.string)


def test_rest_b64_body_gives_the_same_results_as_raw_bytes(loaded, images):
    signature = loaded.signatures["serving_default"]
    encoded = [image["bytes"] for image in images.values()]
    direct = signature(image_bytes=tf.constant(encoded))
    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in encoded]}),
        json.dumps(
            {
                "signature_name": "serving_default",
                "instances": [{"image_bytes": {"b64": base64.b64encode(data).decode("ascii")}} for data in encoded],
            }
        ),
    ]
    for body in bodies:
        served = signature(image_bytes=_tf_serving_tensor(body, "image_bytes"))
        for key in ("probabilities", "classes", "scores"):
            np.testing.assert_array_equal(served[key].numpy(), direct[key].numpy())


@pytest.mark.parametrize(
    "data",
    [
        b"this is not an image",
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "truncated_jpeg",
        "good_then_bad",
    ],
    ids=["text", "empty", "png-header-only", "truncated-jpeg", "mixed-batch"],
)
def test_bytes_that_are_not_an_image_raise(loaded, images, data):
    signature = loaded.signatures["serving_default"]
    if data == "truncated_jpeg":
        batch = [images["tall_jpeg"]["bytes"][: len(images["tall_jpeg"]["bytes"]) // 2]]
    elif data == "good_then_bad":
        batch = [images["train_png"]["bytes"], b"GIF89a but nothing else"]
    else:
        batch = [data]
    with pytest.raises(tf.errors.InvalidArgumentError):
        signature(image_bytes=tf.constant(batch))


def test_exporting_again_never_overwrites(run_dir, version_dir, capsys):
    model_dir = version_dir.parent
    fingerprint = hashlib.sha256((version_dir / "saved_model.pb").read_bytes()).hexdigest()
    before = _versions(model_dir)
    assert cli.main(["export", str(run_dir)]) == 0
    new = model_dir / str(max(before) + 1)
    assert f"exported {new}" in capsys.readouterr().out
    assert (new / "saved_model.pb").is_file() and (new / "assets" / "classes.txt").is_file()
    assert hashlib.sha256((version_dir / "saved_model.pb").read_bytes()).hexdigest() == fingerprint

    assert cli.main(["export", str(run_dir), "--version", "1"]) == 2
    message = capsys.readouterr().err
    assert str(version_dir) in message and "already exists" in message
    assert _versions(model_dir) == before + [max(before) + 1]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_tflite_export_matches_the_saved_model(run_dir, loaded, images, class_names, capsys):
    assert cli.main(["export", str(run_dir), "--format", "tflite"]) == 0
    target = run_dir / "export_tflite" / "tiny" / "1"
    assert f"exported {target}" in capsys.readouterr().out
    assert (target / "classes.txt").read_text().split() == class_names
    assert cli.main(["export", str(run_dir), "--format", "tflite", "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err

    batch = [image["rgb"] for image in images.values() if image["rgb"].shape[:2] == IMAGE_SIZE]
    batch += [_pattern(*IMAGE_SIZE, CHANNELS, seed) for seed in range(20, 26)]
    batch = np.stack(batch)
    reference = loaded.signatures["serve_images"](images=tf.constant(batch))["probabilities"].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_path=str(target / "model.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    details = runner.get_input_details()["images"]
    assert list(details["shape"]) == [1, *IMAGE_SIZE, CHANNELS] and details["dtype"] == np.uint8
    lite = np.concatenate([runner(images=image[None])["probabilities"] for image in batch])
    np.testing.assert_array_equal(lite.argmax(-1), reference.argmax(-1))
    np.testing.assert_allclose(lite, reference, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def predict_folder(images, tmp_path) -> tuple[Path, list[str], dict]:
    """Good images (one in a subfolder, one recognised by content only), broken files, a text file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    good = {
        "train_png": folder / "a.png",
        "wide_png": folder / "b.png",
        "grey_png": folder / "c.png",
        "tall_jpeg": folder / "sub" / "d.jpeg",
        "rgba_png": folder / "sub" / "e.png",
        "train_jpeg": folder / "sub" / "no_extension",
    }
    for name, path in good.items():
        path.write_bytes(images[name]["bytes"])
    broken = {
        folder / "truncated.jpg": images["tall_jpeg"]["bytes"][:200],
        folder / "x.jpg": b"just some text, not a JPEG\n",
        folder / "sub" / "empty.png": b"",
    }
    for path, data in broken.items():
        path.write_bytes(data)
    (folder / "notes.txt").write_text("not an image and not named like one: skipped\n")
    reasons = {
        str(folder / "truncated.jpg"): "corrupt or truncated JPEG",
        str(folder / "x.jpg"): "not an image (cannot decode)",
        str(folder / "sub" / "empty.png"): "empty file",
    }
    if os.geteuid() != 0:  # root reads anything
        locked = folder / "locked.png"
        locked.write_bytes(images["train_png"]["bytes"])
        locked.chmod(0)
        reasons[str(locked)] = "permission denied"
    return folder, sorted(str(p) for p in good.values()), reasons


@pytest.mark.slow  # 5-12 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_predict_reports_broken_files_and_predicts_the_others(run_dir, loaded, images, predict_folder, capsys):
    folder, good, reasons = predict_folder
    # batch size 4: the broken files share batches with good ones
    assert (
        cli.main(["predict", str(run_dir), str(folder), "--format", "json", "--batch-size", "4", "--top-k", "3"]) == 1
    )
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert sorted(r["path"] for r in document["results"]) == good
    assert {e["path"] for e in document["errors"]} == set(reasons)
    for error in document["errors"]:
        assert error["reason"].startswith(reasons[error["path"]]), error
        assert error["path"] in captured.err
    assert "notes.txt" not in captured.out + captured.err
    direct = loaded.signatures["serving_default"]
    for result in document["results"]:
        assert len(result["predictions"]) == 3
        scores = [p["score"] for p in result["predictions"]]
        assert scores == sorted(scores, reverse=True)
        served = direct(image_bytes=tf.constant([Path(result["path"]).read_bytes()]))
        assert result["predictions"][0]["class"] == served["classes"].numpy()[0, 0].decode()
        assert abs(scores[0] - float(served["scores"].numpy()[0, 0])) < 1e-6

    assert cli.main(["predict", str(run_dir), str(folder), "--format", "csv"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted({row["path"] for row in rows}) == good
    assert len(rows) == len(good) * TOP_K
    assert [int(row["rank"]) for row in rows[:TOP_K]] == list(range(1, TOP_K + 1))
    assert all(0.0 <= float(row["score"]) <= 1.0 for row in rows)

    assert cli.main(["predict", str(run_dir), str(folder)]) == 1
    captured = capsys.readouterr()
    for path in good:
        assert path in captured.out
    for path, reason in reasons.items():
        assert f"{path}: {reason}" in captured.err


@pytest.mark.slow  # 3-4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_predict_accepts_run_model_and_version_dirs(run_dir, version_dir, images, capsys):
    files = [str(images["train_png"]["path"]), str(images["tall_jpeg"]["path"])]
    newest = _newest_saved_model(version_dir.parent)
    for export_dir, used in ((run_dir, newest), (version_dir.parent, newest), (version_dir, version_dir)):
        assert cli.main(["predict", str(export_dir), *files, "--format", "json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["export"] == str(used)
        assert [r["path"] for r in document["results"]] == files and document["errors"] == []
        assert len(document["results"][0]["predictions"]) == TOP_K


def test_predict_rejects_a_directory_that_is_not_an_export(tmp_path, images, capsys):
    not_export = tmp_path / "just_a_folder"
    (not_export / "7").mkdir(parents=True)
    assert cli.main(["predict", str(not_export), str(images["train_png"]["path"])]) == 2
    message = capsys.readouterr().err
    assert str(not_export) in message and "not an export" in message
    assert cli.main(["predict", str(tmp_path / "missing"), str(images["train_png"]["path"])]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_predict_uses_only_the_saved_model():
    """predict must prove the export is self-contained: nothing from the project transforms the pixels.
    Its project imports: the user-error base, image_files for the folder walk and format sniffer `data check`
    uses, image_header for the pixel limit read from headers (no pixel is decoded or transformed there), and
    two facts defined once elsewhere: the run directory's layout (rundir.RunLayout: where export/ and
    config.yaml are) and the OS-error wording (fileio.os_reason)."""
    tree = ast.parse((PROJECT_ROOT / "pipeline" / "serving" / "predict.py").read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    project = [name for name in imported if name.split(".")[0] in ("pipeline", "models")]
    assert sorted(project) == [
        "pipeline.config.rundir",
        "pipeline.core.errors.UserError",
        "pipeline.core.fileio",
        "pipeline.data.image_files",
        "pipeline.data.image_header",
    ], imported
