"""TFLite for devices: `export --format tflite --quantize int8|float16` and `evaluate FILE.tflite`.

Fast: the quantized conversions of a tiny random network (int8 kernels present, outputs close to the float
model's). Slow: the command line end to end on a one-epoch tiny run (export, evaluate, evaluation.json).
"""

from __future__ import annotations

import collections
import json
import os
import warnings

import numpy as np
import pytest
import serving_helpers as helpers

from pipeline import cli


def interpreter(path):
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=str(path))


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    from models import registry

    keras.utils.set_random_seed(3)
    return registry.build_model("tiny", input_shape=(*helpers.IMAGE_SIZE, 3), num_classes=len(helpers.CLASS_NAMES))


@pytest.mark.slow  # 5-12 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_int8_and_float16_exports(tiny_model, tmp_path):
    from pipeline.data.transform import EvalTransform
    from pipeline.serving import export

    transform = EvalTransform(image_size=helpers.IMAGE_SIZE, channels=3)
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, size=(40, 1, *helpers.IMAGE_SIZE, 3), dtype=np.uint8)
    options = dict(out_dir=tmp_path, model_name="tiny", class_names=helpers.CLASS_NAMES, transform=transform)
    with pytest.raises(export.ExportError, match="needs representative images"):
        export.export_tflite(tiny_model, quantize="int8", **options)
    paths = {
        quantize: export.export_tflite(
            tiny_model, quantize=quantize, representative_images=lambda: iter(calibration), **options
        )
        / "model.tflite"
        for quantize in (None, "float16", "int8")
    }
    int8_ops = collections.Counter(d["dtype"].__name__ for d in interpreter(paths["int8"]).get_tensor_details())
    assert int8_ops["int8"] >= 4 and int8_ops["float32"] <= 2  # int8 kernels; float only at the output
    assert json.loads((paths["int8"].parent / "tflite.json").read_text()) == {"quantize": "int8"}
    assert paths["int8"].stat().st_size < paths[None].stat().st_size
    probe = rng.integers(0, 256, size=(8, 1, *helpers.IMAGE_SIZE, 3), dtype=np.uint8)
    reference = np.concatenate([tiny_model(image.astype("float32")).numpy() for image in probe])
    for quantize, path in paths.items():
        runner = interpreter(path).get_signature_runner("serving_default")
        outputs = np.concatenate([runner(images=image)["probabilities"] for image in probe])
        np.testing.assert_allclose(outputs, reference, atol=1e-5 if quantize is None else 0.03, err_msg=str(quantize))


@pytest.mark.slow
def test_quantized_export_and_evaluate_from_the_command_line(synthetic_mirror, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(synthetic_mirror))
    run_dir = tmp_path / "run"
    overrides = [f"dataset.data_dir={tmp_path / 'data'}", "train.epochs=1", "train.verbose=0", "export.enabled=false"]
    assert cli.main(["train", "tiny", "--run-dir", str(run_dir), *sum((["--set", o] for o in overrides), [])]) == 0
    assert cli.main(["export", str(run_dir), "--quantize", "int8"]) == 2
    assert "--quantize applies to --format tflite only" in capsys.readouterr().err
    assert cli.main(["export", str(run_dir), "--format", "tflite", "--quantize", "int8"]) == 0
    model = run_dir / "export_tflite" / "tiny" / "1" / "model.tflite"
    capsys.readouterr()
    assert cli.main(["evaluate", str(model)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    result = json.loads((model.parent / "evaluation.json").read_text())
    keras_accuracy = json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"]
    assert result["quantize"] == "int8" and result["bytes"] == os.path.getsize(model)
    assert result["test_images"] == 100 and abs(result["test_accuracy"] - keras_accuracy) <= 0.1
