"""Experiment configuration: loading, `base:` inheritance, typed `--set` overrides, validation messages
and the CLI's user-error contract (exit code 2, one "error: ..." line, no traceback, nothing written)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline import config as config_lib
from pipeline import experiment as experiment_lib
from pipeline.config import ConfigError, rundir

EXPERIMENTS = sorted(p.stem for p in config_lib.EXPERIMENTS_DIR.glob("*.yaml"))
CIFAR10_NET = config_lib.EXPERIMENTS_DIR / "cifar10_net.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_cli(capsys, argv):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, out, err, run_dir: Path, *fragments):
    """The CLI's contract for a user mistake: exit 2, one `error:` line on stderr, no traceback, no run."""
    assert code == 2, (code, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    assert out == ""
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert not run_dir.exists(), "a failing config must not create the run directory"


# --------------------------------------------------------------------------------------------------
# The shipped experiments
# --------------------------------------------------------------------------------------------------


def test_all_shipped_experiments_are_listed():
    assert {"cifar10_aug", "cifar10_deep", "cifar10_net", "fashion_mnist_cnn", "mnist_lenet", "tiny"} <= set(
        EXPERIMENTS
    )


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_loads_and_validates(name):
    config = experiment_lib.load_experiment(name)
    assert isinstance(config, config_lib.Config)
    assert config.name == name  # defaults to the file's stem
    import models
    from pipeline.data import datasets

    assert config.model.name in models.MODELS
    assert config.dataset.name in datasets.DATASETS
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # frozen: parsed once at the edge, never mutated below


def test_experiment_values_as_written():
    lenet = experiment_lib.load_experiment("mnist_lenet")
    assert (lenet.dataset.name, lenet.dataset.validation_split) == ("mnist", 0.2)
    assert (lenet.input.image_size, lenet.input.channels) == ([28, 28], 1)
    assert (lenet.model.name, lenet.train.epochs, lenet.train.batch_size) == ("lenet", 12, 128)
    assert (lenet.train.optimizer.name, lenet.train.optimizer.learning_rate) == ("adam", 0.001)
    fashion = experiment_lib.load_experiment("fashion_mnist_cnn")
    assert (fashion.model.name, fashion.train.batch_size, fashion.dataset.validation_split) == ("fashion_cnn", 32, 0.1)
    tiny = experiment_lib.load_experiment("tiny")
    assert (tiny.model.name, tiny.input.image_size, tiny.train.epochs) == ("tiny", [16, 16], 2)
    # keys not written keep the dataclass defaults
    assert tiny.seed == 42 and tiny.train.schedule.name == "constant" and tiny.train.jit_compile == "auto"


def test_base_inheritance_cifar10_deep_from_cifar10_net():
    net = experiment_lib.load_experiment("cifar10_net")
    deep = experiment_lib.load_experiment("cifar10_deep")
    assert deep.name == "cifar10_deep"  # the child's stem, not the base's
    assert deep.model.name == "cifar10_deep" and net.model.name == "cifar10_net"
    # everything else comes from cifar10_net, except the schedule and split cifar10_deep sets
    assert deep.dataset.name == net.dataset.name == "cifar10"
    assert deep.dataset.validation_split == 0.1 and net.dataset.validation_split == 0.2
    assert deep.input == net.input
    assert deep.train.optimizer == net.train.optimizer and deep.train.epochs == net.train.epochs == 12
    assert deep.train.optimizer.name == "rmsprop"
    assert deep.train.schedule.name == "cosine" and net.train.schedule.name == "constant"


def test_base_inheritance_two_levels_cifar10_aug():
    deep = experiment_lib.load_experiment("cifar10_deep")
    aug = experiment_lib.load_experiment("cifar10_aug")
    assert aug.model.name == "cifar10_deep"  # from cifar10_deep
    assert aug.dataset.validation_split == 0.2  # from cifar10_net, two levels up
    # dicts merge key by key: `input:` in cifar10_aug only sets augment, image_size/channels survive
    assert aug.input.image_size == [32, 32] and aug.input.channels == 3
    assert (aug.input.augment.width_shift, aug.input.augment.height_shift) == (0.1, 0.1)
    assert aug.input.augment.horizontal_flip is True
    assert aug.input.augment.fill_mode == deep.input.augment.fill_mode == "nearest"
    assert (aug.train.epochs, aug.train.label_smoothing) == (40, 0.1)
    assert (aug.train.optimizer.name, aug.train.optimizer.learning_rate) == ("adam", 0.002)
    assert (aug.train.schedule.name, aug.train.schedule.warmup_epochs) == ("cosine", 2.0)


def test_base_lists_are_replaced_and_dicts_merged(tmp_path):
    write(
        tmp_path / "parent.yaml",
        f"base: {CIFAR10_NET}\ntrain:\n  epochs: 20\n  schedule: {{name: step, boundaries: [2, 4, 6], factor: 0.5}}\n",
    )
    child = write(
        tmp_path / "child.yaml",
        "base: parent\n"  # no suffix: .yaml is added
        "input: {image_size: [16, 16]}\n"
        "train:\n  schedule: {boundaries: [3]}\n",
    )
    config = experiment_lib.load_experiment(str(child))
    assert config.name == "child"
    assert config.train.schedule.boundaries == [3.0]  # replaced, not [3, 4, 6]
    assert config.train.schedule.name == "step" and config.train.schedule.factor == 0.5  # merged
    assert config.train.epochs == 20
    assert config.input.image_size == [16, 16] and config.input.channels == 3  # list replaced, dict merged
    assert config.model.name == "cifar10_net" and config.train.optimizer.name == "rmsprop"


def test_deep_merge_unit():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": [1, 2, 3], "c": 1}
    merged = config_lib.deep_merge(base, {"a": {"y": [9]}, "b": [4], "d": {"e": 1}})
    assert merged == {"a": {"x": 1, "y": [9]}, "b": [4], "c": 1, "d": {"e": 1}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": [1, 2, 3], "c": 1}  # inputs untouched


# --------------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, keys, value",
    [
        ("train.epochs=3", ["train", "epochs"], 3),
        ("train.jit_compile=false", ["train", "jit_compile"], False),
        ("input.image_size=[16,16]", ["input", "image_size"], [16, 16]),
        ("train.optimizer.learning_rate=0.01", ["train", "optimizer", "learning_rate"], 0.01),
        ("input.channels=null", ["input", "channels"], None),
        ("dataset.name=mnist", ["dataset", "name"], "mnist"),
        ("name= spaced =", ["name"], "spaced ="),
    ],
)
def test_parse_override_types_values(text, keys, value):
    parsed_keys, parsed = config_lib.parse_override(text)
    assert parsed_keys == keys
    assert parsed == value and type(parsed) is type(value)


def test_overrides_are_typed_in_the_config():
    config = experiment_lib.load_experiment(
        "tiny",
        [
            "train.epochs=3",
            "train.jit_compile=false",
            "input.image_size=[16,16]",
            "train.optimizer.learning_rate=0.01",
            "model.options.filters=4",
        ],
    )
    assert config.train.epochs == 3 and type(config.train.epochs) is int
    assert config.train.jit_compile is False
    assert config.input.image_size == [16, 16] and isinstance(config.input.image_size, list)
    assert config.train.optimizer.learning_rate == 0.01
    assert config.model.options == {"filters": 4}
    # an override does not leak into a later load
    assert experiment_lib.load_experiment("tiny").train.epochs == 2


def test_later_override_wins_and_int_becomes_float_for_float_fields():
    config = experiment_lib.load_experiment("tiny", ["train.epochs=3", "train.epochs=5", "train.label_smoothing=0"])
    assert config.train.epochs == 5
    assert config.train.label_smoothing == 0.0 and type(config.train.label_smoothing) is float


@pytest.mark.parametrize(
    "text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("1e2", 100.0), ("-2.5e-1", -0.25), ("1.0e-3", 1e-3)]
)
def test_scientific_notation_is_a_float(text, value, tmp_path):
    # YAML 1.1 (PyYAML's default) reads `1e-3` as a string; the config's loader reads it as a float.
    config = experiment_lib.load_experiment("tiny", [f"train.schedule.end_learning_rate={text.lstrip('-')}"])
    assert config.train.schedule.end_learning_rate == pytest.approx(abs(value))
    assert config_lib.parse_override(f"x={text}")[1] == pytest.approx(value)
    assert type(config_lib.parse_override(f"x={text}")[1]) is float
    experiment = write(tmp_path / "sci.yaml", f"train:\n  optimizer: {{learning_rate: {text.lstrip('-')}}}\n")
    assert experiment_lib.load_experiment(str(experiment)).train.optimizer.learning_rate == pytest.approx(abs(value))


def test_integers_stay_integers_next_to_the_float_resolver():
    assert config_lib.parse_override("train.epochs=12")[1] == 12
    assert type(config_lib.parse_override("train.epochs=12")[1]) is int
    with pytest.raises(ConfigError, match="train.epochs: expected an integer, received 1000.0"):
        experiment_lib.load_experiment("tiny", ["train.epochs=1e3"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("train.epochs", "--set expects dotted.key=value"),
        ("=3", "--set expects dotted.key=value"),
        ("train..epochs=3", "--set expects dotted.key=value"),
    ],
)
def test_malformed_override(text, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.parse_override(text)


def test_override_through_a_non_section():
    with pytest.raises(ConfigError, match=r"train\.epochs is not a section"):
        experiment_lib.load_experiment("tiny", ["train.epochs.value=3"])


# --------------------------------------------------------------------------------------------------
# Broken variants through the CLI: exit 2, the message, no traceback, nothing written
# --------------------------------------------------------------------------------------------------

BROKEN_OVERRIDES = {
    "typo key": (
        ["train.epoch=3"],
        ["unknown key 'train.epoch'", "did you mean 'train.epochs'", "Allowed keys in train: epochs"],
    ),
    "wrong type": (["train.epochs=abc"], ["train.epochs", "expected an integer", "'abc'"]),
    "bool for int": (["train.epochs=true"], ["train.epochs", "expected an integer"]),
    "unknown model": (
        ["model.name=lenett"],
        [
            "model.name",
            "unknown model 'lenett'",
            "did you mean 'lenet'",
            "Known models:",
            "lenet",
            "tiny",
            "cifar10_deep",
            "fashion_cnn",
        ],
    ),
    "unknown dataset": (
        ["dataset.name=cifar100"],
        ["dataset.name", "unknown dataset 'cifar100'", "Known datasets:", "mnist"],
    ),
    "negative epochs": (["train.epochs=-1"], ["train.epochs", "must be >= 1", "-1"]),
    "zero batch": (["train.batch_size=0"], ["train.batch_size", "must be >= 1"]),
    "split of 1": (["dataset.validation_split=1"], ["dataset.validation_split", "must be < 1.0"]),
    "wrong choice": (
        ["train.optimizer.name=adamm"],
        ["train.optimizer.name", "must be one of sgd, adam", "did you mean 'adam'"],
    ),
    "jit choice": (["train.jit_compile=yes please"], ["train.jit_compile", "must be one of true, false, auto"]),
    "image_size length": (["input.image_size=[16]"], ["input.image_size", "expected a list of 2 values"]),
    "section as scalar": (["train=3"], ["train: expected a section"]),
    "null required": (["train.epochs=null"], ["train.epochs: a value is required"]),
    "step without boundaries": (
        ["train.schedule.name=step"],
        ["train.schedule.boundaries", "needs at least one boundary"],
    ),
    "decreasing boundaries": (
        ["train.schedule.name=step", "train.schedule.boundaries=[5,2]"],
        ["train.schedule.boundaries", "must be increasing"],
    ),
    "warmup without cosine": (
        ["train.schedule.warmup_epochs=1"],
        ["train.schedule.warmup_epochs", "only available with the cosine", "'constant'"],
    ),
    "warmup too long": (
        ["train.schedule.name=cosine", "train.schedule.warmup_epochs=12"],
        ["train.schedule.warmup_epochs", "must be < train.epochs"],
    ),
    "nesterov with adam": (
        ["train.optimizer.name=adam", "train.optimizer.nesterov=true"],
        ["train.optimizer.nesterov", "only the sgd optimizer", "'adam'"],
    ),
    "momentum with adam": (
        ["train.optimizer.name=adam", "train.optimizer.momentum=0.9"],
        ["train.optimizer.momentum", "only sgd and rmsprop"],
    ),
    "val monitor without split": (
        ["dataset.validation_split=0"],
        [
            "train.callbacks.checkpoint.monitor",
            "'val_accuracy'",
            "needs a validation split",
            "dataset.validation_split is 0",
        ],
    ),
    "val early stopping without split": (
        [
            "dataset.validation_split=0",
            "train.callbacks.checkpoint.monitor=loss",
            "train.callbacks.early_stopping.enabled=true",
        ],
        ["train.callbacks.early_stopping.monitor", "'val_loss'", "needs a validation split"],
    ),
    "unknown model option": (
        ["model.options.foo=1"],
        ["unknown key 'model.options.foo'", "accepts: dropout_rate, dense_dropout_rate"],
    ),
    "model option near miss": (
        ["model.options.dropout=0.1"],
        ["unknown key 'model.options.dropout'", "did you mean 'model.options.dropout_rate'"],
    ),
}


@pytest.mark.parametrize("overrides, fragments", list(BROKEN_OVERRIDES.values()), ids=list(BROKEN_OVERRIDES))
def test_cli_rejects_broken_override(capsys, tmp_path, overrides, fragments):
    run_dir = tmp_path / "run"
    argv = ["train", "cifar10_net", "--run-dir", str(run_dir)]
    for override in overrides:
        argv += ["--set", override]
    code, out, err = run_cli(capsys, argv)
    assert_user_error(code, out, err, run_dir, *fragments)
    assert err.count("\n") == 1, "one line"
    # the same error without the CLI: a ConfigError carrying the same message
    with pytest.raises(ConfigError) as raised:
        experiment_lib.load_experiment("cifar10_net", overrides)
    assert err == f"error: {raised.value}\n"


def test_cli_unknown_experiment(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", "cifar10_nett", "--run-dir", str(run_dir)])
    assert_user_error(
        code,
        out,
        err,
        run_dir,
        "unknown experiment 'cifar10_nett'",
        "did you mean 'cifar10_net'",
        "Known experiments:",
        "mnist_lenet",
        "tiny",
        "pass a path to a .yaml file",
    )


def test_cli_missing_yaml_file(capsys, tmp_path):
    run_dir = tmp_path / "run"
    missing = tmp_path / "nope.yaml"
    code, out, err = run_cli(capsys, ["train", str(missing), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, "experiment file not found", str(missing))


def test_cli_yaml_syntax_error_names_file_and_line(capsys, tmp_path):
    bad = write(tmp_path / "bad.yaml", "model:\n  name: tiny\ntrain:\n  epochs: [1, 2\n  batch_size: 4\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(bad), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, str(bad), "invalid YAML")
    assert " line 5," in err, err  # the line where the parser gave up, 1-based


def test_cli_yaml_syntax_error_in_a_base_file_names_that_file(capsys, tmp_path):
    write(tmp_path / "parent.yaml", "train: {epochs: 3\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\nmodel: {name: tiny}\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(child), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, str(tmp_path / "parent.yaml"), "invalid YAML", "line ")


def test_cli_yaml_not_a_mapping(capsys, tmp_path):
    bad = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(bad), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, str(bad), "must be a mapping", "list")


def test_cli_unknown_top_level_key_in_yaml(capsys, tmp_path):
    bad = write(tmp_path / "top.yaml", "trian:\n  epochs: 3\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(bad), "--run-dir", str(run_dir)])
    assert_user_error(
        code,
        out,
        err,
        run_dir,
        "unknown key 'trian'",
        "did you mean 'train'",
        "Allowed keys: name, seed, dataset, input, model, train",
    )


def test_cli_unknown_nested_key_in_yaml(capsys, tmp_path):
    bad = write(tmp_path / "nested.yaml", "input:\n  augment:\n    horizontal_flips: true\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(bad), "--run-dir", str(run_dir)])
    assert_user_error(
        code,
        out,
        err,
        run_dir,
        "unknown key 'input.augment.horizontal_flips'",
        "did you mean 'input.augment.horizontal_flip'",
    )


def test_cli_base_loop(capsys, tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(tmp_path / "a.yaml"), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, "`base:` inheritance loops", "a.yaml -> b.yaml -> a.yaml")


def test_cli_base_self_loop(capsys, tmp_path):
    me = write(tmp_path / "me.yaml", "base: me.yaml\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(me), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, "inheritance loops", "me.yaml -> me.yaml")


def test_cli_missing_base_file(capsys, tmp_path):
    child = write(tmp_path / "child.yaml", "base: nowhere.yaml\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(child), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, "base: file not found", str(tmp_path / "nowhere.yaml"))


def test_cli_wrong_type_in_yaml_file(capsys, tmp_path):
    bad = write(tmp_path / "types.yaml", "train:\n  batch_size: '32'\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", str(bad), "--run-dir", str(run_dir)])
    assert_user_error(code, out, err, run_dir, "train.batch_size: expected an integer", "'32' (str)")


def test_cli_print_config_valid(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys, ["train", "cifar10_aug", "--print-config", "--set", "train.epochs=3", "--run-dir", str(run_dir)]
    )
    assert code == 0, err
    assert "error" not in err
    printed = yaml.safe_load(out)
    assert printed["name"] == "cifar10_aug"
    assert printed["train"]["epochs"] == 3
    assert printed["model"]["name"] == "cifar10_deep"
    assert config_lib.from_dict(printed) == experiment_lib.load_experiment("cifar10_aug", ["train.epochs=3"])
    assert not run_dir.exists(), "--print-config only prints"


# --------------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_dump_yaml_round_trip(name):
    config = experiment_lib.load_experiment(name)
    assert config_lib.from_dict(yaml.safe_load(config_lib.dump_yaml(config))) == config


def test_round_trip_with_non_default_values(tmp_path):
    config = experiment_lib.load_experiment(
        "cifar10_net",
        [
            "train.jit_compile=false",
            "input.image_size=[24,20]",
            "input.channels=1",
            "train.optimizer.name=sgd",
            "train.optimizer.momentum=0.9",
            "train.optimizer.nesterov=true",
            "train.optimizer.weight_decay=0.0005",
            "train.optimizer.learning_rate=0.00001",
            "train.schedule.name=step",
            "train.schedule.boundaries=[4,8.5]",
            "model.options.dropout_rate=0.1",
            "dataset.mirror_dir=/some/where",
            "input.augment.crop_padding=4",
            "train.mixed_precision=mixed_bfloat16",
        ],
    )
    text = config_lib.dump_yaml(config)
    assert config_lib.from_dict(yaml.safe_load(text)) == config
    # and through the file a run directory stores (rundir.start writes it)
    rundir.start(tmp_path / "run", config, ["a", "b"])
    assert experiment_lib.load_experiment(str(rundir.RunLayout(tmp_path / "run").config)) == config


def test_from_dict_of_defaults():
    defaults = config_lib.Config()
    assert config_lib.from_dict({}) == defaults
    assert config_lib.from_dict(config_lib.to_dict(defaults)) == defaults
