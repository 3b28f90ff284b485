"""`train.cpu_kernels` (pipeline/core/cpu_kernels.py): TensorFlow's CPU kernels chosen from the config before
TensorFlow is imported, oneDNN's by default on every x86 CPU, the user's TF_ENABLE_ONEDNN_OPTS respected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import cpu_kernels

PROJECT = Path(__file__).resolve().parent.parent
ON_X86 = cpu_kernels.platform.machine().lower() in cpu_kernels.X86_MACHINES


@pytest.fixture
def tensorflow_not_imported(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)


@pytest.mark.parametrize("machine", ["x86_64", "AMD64", "i686"])
@pytest.mark.parametrize(("setting", "value"), [("onednn", "1"), ("eigen", "0")])
def test_sets_the_variable_on_x86(tensorflow_not_imported, machine, setting, value):
    environ = {}
    assert cpu_kernels.choose(setting, environ, machine=machine) == value
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": value}


def test_auto_leaves_tensorflows_rule(tensorflow_not_imported):
    environ = {}
    assert cpu_kernels.choose("auto", environ, machine="x86_64") is None
    assert environ == {}


@pytest.mark.parametrize("value", ["0", "false", "1"])
def test_the_users_variable_wins_over_the_config(tensorflow_not_imported, value):
    environ = {"TF_ENABLE_ONEDNN_OPTS": value}
    assert cpu_kernels.choose("onednn", environ, machine="x86_64") is None
    assert cpu_kernels.choose("eigen", environ, machine="x86_64") is None
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": value}


def test_other_machines_are_left_alone(tensorflow_not_imported):
    environ = {}
    assert cpu_kernels.choose("onednn", environ, machine="aarch64") is None
    assert environ == {}


def test_too_late_once_tensorflow_is_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    environ = {}
    assert cpu_kernels.choose("onednn", environ, machine="x86_64") is None
    assert environ == {}


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match=r"cpu_kernels must be one of \['auto', 'eigen', 'onednn'\]"):
        cpu_kernels.choose("mkl", {}, machine="x86_64")


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        ({}, "TensorFlow's choice"),
        ({"TF_ENABLE_ONEDNN_OPTS": "1"}, "oneDNN"),
        ({"TF_ENABLE_ONEDNN_OPTS": "0"}, "Eigen"),
    ],
)
def test_the_run_log_says_which(environ, said):
    assert said in cpu_kernels.describe(environ)


def test_the_config_key_is_checked():
    from pipeline import config as config_lib

    assert config_lib.from_dict({"name": "x"}).train.cpu_kernels == "onednn"
    with pytest.raises(config_lib.ConfigError, match="train.cpu_kernels"):
        config_lib.from_dict({"name": "x", "train": {"cpu_kernels": "mkl"}})


def _train_then_import_tensorflow(overrides: list[str]) -> subprocess.CompletedProcess:
    # `train` up to the point where it imports TensorFlow (its main module is replaced by a stub that only
    # imports TensorFlow), then TensorFlow's own start-up log says which kernels it took.
    code = (
        "import os, sys, types\n"
        "from pipeline import cli\n"
        "stub = types.ModuleType('pipeline.run')\n"
        "def train(config, run_dir=None):\n"
        "    print('set:', os.environ.get('TF_ENABLE_ONEDNN_OPTS'), flush=True)\n"
        "    import tensorflow\n"
        "stub.train = train\n"
        "sys.modules['pipeline.run'] = stub\n"
        f"cli.main(['train', 'tiny', *{overrides!r}])\n"
    )
    environ = {key: value for key, value in os.environ.items() if key not in ("TF_ENABLE_ONEDNN_OPTS",)}
    environ.update(PYTHONPATH=str(PROJECT), TF_CPP_MIN_LOG_LEVEL="0")
    return subprocess.run([sys.executable, "-c", code], env=environ, cwd=PROJECT, capture_output=True, text=True)


@pytest.mark.skipif(not ON_X86, reason="oneDNN custom ops: x86 only")
def test_train_sets_it_from_the_config_before_tensorflow_and_tensorflow_takes_it():
    done = _train_then_import_tensorflow([])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "set: 1" in done.stdout
    assert "oneDNN custom operations are on" in done.stderr
    # train.cpu_kernels=eigen takes the same path with "0" (test_sets_the_variable_on_x86); one TensorFlow
    # start-up is enough here.
