"""Performance knobs change speed, not results: XLA, thread settings' resolution, and the image cache."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from pipeline import experiment as experiment_lib
from pipeline import run as train
from pipeline.core import cpu_kernels
from pipeline.data import input_pipeline
from pipeline.data.transform import EvalTransform
from pipeline.training import model_setup as modeling


@pytest.mark.slow  # XLA compiles for ~30 s on 2 cores
def test_xla_trains_to_the_same_result(data_env, tmp_path):
    """train.jit_compile=true compiles the train step with XLA: same data, same seed, same numbers up to
    floating-point reordering."""
    losses = {}
    for jit in ("false", "true"):
        config = experiment_lib.load_experiment("tiny", [*data_env, f"train.jit_compile={jit}", "export.enabled=false"])
        metrics = train.train(config, run_dir=tmp_path / jit, log=lambda *_: None)
        with open(tmp_path / jit / "history.csv") as handle:
            losses[jit] = [float(row["loss"]) for row in csv.DictReader(handle)] + [metrics["test"]["loss"]]
    np.testing.assert_allclose(losses["true"], losses["false"], rtol=2e-3)


def test_auto_jit_is_off_without_a_gpu():
    import tensorflow as tf

    assert modeling.resolve_jit_compile("auto") is bool(tf.config.list_physical_devices("GPU"))
    assert modeling.resolve_jit_compile(True) is True and modeling.resolve_jit_compile(False) is False


AVX2_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2\n"
AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_cpu_bfloat16_is_read_from_the_flags():
    assert cpu_kernels.cpu_has_bfloat16(AVX2_CPUINFO) is False
    assert cpu_kernels.cpu_has_bfloat16(AMX_CPUINFO) is True
    assert cpu_kernels.cpu_has_bfloat16("flags : avx512f avx512_bf16\n") is True  # Zen 4: AVX-512 BF16, no AMX
    assert cpu_kernels.cpu_has_bfloat16("") is False


@pytest.mark.parametrize(
    "gpus, cpu_bfloat16, expected",
    [
        ([], False, "float32"),  # AVX2 CPU: bfloat16 would be emulated, 10x slower
        ([], True, "mixed_bfloat16"),  # AMX / AVX-512 BF16
        ([(9, 0)], False, "mixed_bfloat16"),
        ([(8, 0), (7, 5)], False, "mixed_float16"),  # the weakest GPU decides
        ([(6, 1)], False, "float32"),
    ],
)
def test_auto_mixed_precision_follows_the_hardware(gpus, cpu_bfloat16, expected):
    lines = []
    assert modeling.resolve_mixed_precision("auto", gpus=gpus, cpu_bfloat16=cpu_bfloat16, log=lines.append) == expected
    assert lines and expected in lines[0]


def test_explicit_bfloat16_on_a_cpu_without_it_is_kept_with_a_warning():
    lines = []
    policy = modeling.resolve_mixed_precision("mixed_bfloat16", gpus=[], cpu_bfloat16=False, log=lines.append)
    assert policy == "mixed_bfloat16"
    assert lines[0].startswith("warning:") and "float32" in lines[0]
    lines.clear()
    assert modeling.resolve_mixed_precision("mixed_bfloat16", gpus=[], cpu_bfloat16=True, log=lines.append)
    assert modeling.resolve_mixed_precision("float32", gpus=[], log=lines.append) == "float32"
    assert not lines


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_auto_mixed_precision_on_this_machine_trains(data_env, tmp_path):
    """`auto` through a whole run: the policy the log names is the one the saved model's layers carry."""
    import keras

    lines = []
    config = experiment_lib.load_experiment(
        "tiny", [*data_env, "train.mixed_precision=auto", "train.epochs=1", "export.enabled=false"]
    )
    train.train(config, run_dir=tmp_path / "run", log=lines.append)
    chosen = next(line for line in lines if line.startswith("train.mixed_precision auto:")).split()[2]
    expected = "mixed_bfloat16" if cpu_kernels.cpu_has_bfloat16() else "float32"
    assert chosen == expected
    model = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "best.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers if layer.weights} == {expected}


@pytest.fixture
def photo_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, labels = [], []
    for index in range(12):
        size = (20 + index, 16 + 2 * index)
        path = tmp_path / "photos" / f"{index:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
        labels.append(index % 3)
    return paths, labels


@pytest.mark.slow  # 5-12 s on a 2-core AVX2 VM: make test must stay under 4 min there
@pytest.mark.parametrize("training", [False, True])
def test_cache_modes_give_identical_batches(photo_files, tmp_path, training):
    """input.cache memory / a file / none: the same images in the same order, augmentation included."""
    paths, labels = photo_files
    options = dict(
        training=training,
        batch_size=5,
        num_classes=3,
        transform=EvalTransform(image_size=(16, 16), channels=3, crop="square"),
        seed=3,
        augment={"horizontal_flip": True, "width_shift": 0.2} if training else None,
    )
    epochs = {}
    for cache in ("memory", str(tmp_path / "cache" / "images"), "none"):
        (tmp_path / "cache").mkdir(exist_ok=True)
        dataset = input_pipeline.make_file_dataset(paths, labels, cache=cache, **options)
        epochs[cache] = [np.concatenate([x for x, _ in dataset.as_numpy_iterator()]) for _ in range(2)]
    reference = epochs.pop("none")
    for cache, batches in epochs.items():
        for got, want in zip(batches, reference):
            np.testing.assert_array_equal(got, want, err_msg=cache)
    assert list((tmp_path / "cache").iterdir()), "the file cache was written"
