"""`python -m pipeline evaluate RUN/export_tflite/<name>/<version>/model.tflite`: a TFLite file's test accuracy.

The file is run with TensorFlow's TFLite interpreter on the run's test split, one image at a time (its
signature takes uint8 [1, H, W, C]), fed the eval pipeline's images rounded to uint8: at the training
size the transform inside the file is then the identity (a resize to the same size), so float32, float16
and int8 files are compared on the same pixels. Written beside the file as `evaluation.json` (accuracy,
file size, quantization) next to the run's own float32 Keras test accuracy.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from pipeline.config import rundir
from pipeline.core import fileio
from pipeline.data.splits import Splits


def run_of(tflite_path: Path) -> Path:
    """RUN for RUN/export_tflite/<name>/<version>/model.tflite (the layout `export --format tflite` writes)."""
    run_dir = Path(tflite_path).resolve().parents[3]
    config_file = rundir.RunLayout(run_dir).config
    if not config_file.is_file():
        raise rundir.RunDirError(
            f"{tflite_path}: no run directory found above it (looked for {config_file}); "
            f"evaluate a file written by `python -m pipeline export RUN --format tflite` in RUN/export_tflite"
        )
    return run_dir


def evaluate_tflite(path: Path, *, run_dir: Path | None = None, log=print) -> dict:
    """Test accuracy of a .tflite file on its run's test split; writes `evaluation.json` beside it.

    Args:
        run_dir: the run whose test split and config to use (default: the run the file was exported into).

    Returns:
        {"file", "bytes", "quantize", "test_accuracy", "test_images", "keras_test_accuracy"}.

    Raises:
        RunDirError: the file or its run directory is missing.
    """
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        raise rundir.RunDirError(f"{path}: no such file")
    run_dir = Path(run_dir) if run_dir is not None else run_of(path)
    config = rundir.load_run_config(run_dir)
    splits = Splits.from_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("serving_default")
    correct = total = 0
    for images, labels in splits.dataset("test", batch_size=256):
        pixels = np.clip(np.round(images.numpy()), 0, 255).astype(np.uint8)
        for image, label in zip(pixels, labels.numpy().argmax(-1)):
            probabilities = runner(images=image[None])["probabilities"]
            correct += int(probabilities.argmax() == label)
            total += 1
    try:
        quantize = json.loads((path.parent / "tflite.json").read_text())["quantize"]
    except (OSError, ValueError, KeyError):
        quantize = "unknown"
    keras_accuracy = (rundir.read_metrics(run_dir) or {}).get("test", {}).get("accuracy")
    result = {
        "file": str(path),
        "bytes": path.stat().st_size,
        "quantize": quantize,
        "test_accuracy": correct / total,
        "test_images": total,
        "keras_test_accuracy": keras_accuracy,
    }
    fileio.atomic_write_json(path.parent / "evaluation.json", result)
    versus = f" (Keras float32: {keras_accuracy:.4f})" if keras_accuracy is not None else ""
    log(
        f"{path}: test accuracy {result['test_accuracy']:.4f}{versus} on {total} images; "
        f"{result['bytes'] / 1024:.0f} KiB, quantization {quantize}; written to {path.parent / 'evaluation.json'}"
    )
    return result
