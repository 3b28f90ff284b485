"""`pipeline tune` refuses bad input before any process, directory or storage exists: exit 2, one line."""

from __future__ import annotations

import pytest

from pipeline import cli

PROJECT = __import__("pathlib").Path(__file__).resolve().parents[2]

SPACE = """
tune:
  trials: 4
  space:
    train.optimizer.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    train.batch_size: {type: categorical, choices: [128, 256]}
"""


def experiment(tmp_path, tune_text: str = SPACE):
    path = tmp_path / "search.yaml"
    path.write_text(f"base: {PROJECT / 'experiments' / 'tiny.yaml'}\n{tune_text}")
    return str(path)


@pytest.mark.parametrize(
    "tune_text, sets, expected",
    [
        (
            "tune:\n  space:\n    train.optimizer.learning_rat: {type: float, low: 0.001, high: 0.1}\n",
            [],
            "tune.space: unknown key 'train.optimizer.learning_rat' (did you mean 'train.optimizer.learning_rate'?)",
        ),
        (
            "tune:\n  space:\n    train.label_smoothing: {type: float, low: 0.2, high: 0.2}\n",
            [],
            "tune.space.train.label_smoothing: empty range, low must be < high; received low 0.2, high 0.2",
        ),
        (
            "tune:\n  space:\n    input.augment.fill_mode: {type: categorical, choices: [nearest, mirror]}\n",
            [],
            "tune.space.input.augment.fill_mode: value 'mirror' is refused by the schema: "
            "input.augment.fill_mode: must be one of nearest, reflect, constant, wrap; received 'mirror'",
        ),
        (
            "tune:\n  space:\n    train.batch_size: {type: float, low: 16, high: 64}\n",
            [],
            "tune.space.train.batch_size: value 16.0 is refused by the schema: train.batch_size: expected an integer",
        ),
        (
            "tune:\n  space:\n    train.label_smoothing: {type: float, low: 0.0, high: 1.5}\n",
            [],
            "train.label_smoothing: must be < 1.0; received 1.5",
        ),
        (SPACE, ["--set", "tune.trials=0"], "tune.trials: must be >= 1; received 0"),
        (SPACE, ["--set", "tune.metric=val_acc"], "tune.metric: this run does not log 'val_acc' (did you mean"),
        (
            SPACE,
            ["--set", "tune.trials=9", "--set", "train.optimizer.learning_rate=0.01", "--set", "tune.space={}"],
            "tune.space: empty",
        ),
        (
            "tune:\n  trials: 5\n  space:\n    train.batch_size: {type: categorical, choices: [128, 256]}\n",
            [],
            "tune.trials: 5 exceeds the 2 distinct points of tune.space",
        ),
        (SPACE, ["--set", "tune.sampler.name=grid"], "tune.space.train.optimizer.learning_rate: the grid sampler"),
        (SPACE, ["--set", "model.name=tinny"], "model.name: unknown model 'tinny'"),
        (SPACE, ["--workers", "2", "--storage", "sqlite:///x.db"], "SQLite locks the whole file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, tune_text, sets, expected):
    study = tmp_path / "study"
    code = cli.main(["tune", experiment(tmp_path, tune_text), "--study", str(study), *sets])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: ") and expected in error, error
    assert len(error.strip().splitlines()) == 1, error
    assert not study.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["search.yaml"]


def test_a_directory_that_is_not_a_study_is_refused(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert cli.main(["tune", "--status", str(tmp_path / "other")]) == 2
    assert "not a study directory (no study.json)" in capsys.readouterr().err
    assert cli.main(["tune", experiment(tmp_path), "--study", str(tmp_path / "other")]) == 2
    assert "exists and is not a study directory" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "other").iterdir()) == ["notes.txt"]


def test_a_study_of_another_space_is_refused_with_the_differences(tmp_path, capsys):
    from pipeline.tune import study as study_lib

    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text(
        '{"study_name": "search", "storage": null, "tune": {"space": {}}, "base": {"train": {"epochs": 3}}}'
    )
    assert cli.main(["tune", experiment(tmp_path), "--study", str(study)]) == 2
    error = capsys.readouterr().err
    assert "holds a study with different settings" in error and "base.train.epochs: 3 -> 2" in error
    assert sorted(path.name for path in study.iterdir()) == ["study.json"]
    assert study_lib.RESUMABLE_CHANGES == ("tune.trials", "tune.max_failures")
