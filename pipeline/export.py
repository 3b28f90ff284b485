"""SavedModel export in TF Serving's layout: `<out>/<model_name>/<version>/`.

Signatures (both run the eval transform from `pipeline.preprocessing`, the one evaluation uses):
    serving_default  image_bytes: tf.string [batch]  encoded JPEG/PNG/GIF/BMP, any size
    serve_images     images: tf.uint8 [batch, H, W, C] any H, W; C = 1, 3 or 4
Outputs: probabilities [batch, num_classes] float32, classes [batch, k] class-name strings,
scores [batch, k] float32 (top k, best first). Class names live in the graph itself.

`export_tflite` writes `<out>/<model_name>/<version>/model.tflite` (uint8 [1, H, W, C] -> probabilities)
with classes.txt beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from pipeline import preprocessing
from pipeline.config import Config


class ExportError(RuntimeError):
    """The export cannot be written; the message says why."""


def read_class_names(run_dir: Path) -> list[str]:
    path = Path(run_dir) / "classes.txt"
    if not path.is_file():
        raise ExportError(f"{path}: missing; the run directory is incomplete")
    return [line for line in path.read_text().splitlines() if line]


def serving_functions(model: keras.Model, *, class_names: list[str], image_size, channels: int,
                      resize_method: str = "bilinear", top_k: int = 5):
    """The two serving functions of an export, as plain callables (also used in-process by tests)."""
    names = tf.constant(class_names)
    k = min(int(top_k), len(class_names))
    height, width = int(image_size[0]), int(image_size[1])

    def outputs(images):
        probabilities = tf.cast(model(images, training=False), tf.float32)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "classes": tf.gather(names, indices), "scores": scores}

    def prepare(images):
        return preprocessing.prepare_images(images, image_size=(height, width), channels=channels,
                                            resize_method=resize_method)

    def serve_bytes(image_bytes):
        def decode_one(encoded):
            return prepare(preprocessing.decode_image(encoded, channels=channels))
        images = tf.map_fn(decode_one, image_bytes,
                           fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32))
        return outputs(images)

    def serve_images(images):
        return outputs(prepare(images))

    return serve_bytes, serve_images


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_model(model: keras.Model, *, out_dir: Path, model_name: str, class_names: list[str],
                 image_size, channels: int, resize_method: str = "bilinear", top_k: int = 5,
                 version: int | None = None) -> Path:
    """Writes `<out_dir>/<model_name>/<version>/` atomically and returns it. Never overwrites a version."""
    model_dir = Path(out_dir) / model_name
    version = next_version(model_dir) if version is None else int(version)
    target = model_dir / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; exports never overwrite a version. "
                          f"Choose another --version or omit it to use {next_version(model_dir)}")
    serve_bytes, serve_images = serving_functions(model, class_names=class_names, image_size=image_size,
                                                  channels=channels, resize_method=resize_method,
                                                  top_k=top_k)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serve_images", serve_images,
                         input_signature=[tf.TensorSpec([None, None, None, channels], tf.uint8,
                                                        name="images")])
    model_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        archive.write_out(str(temporary), verbose=False)
        (temporary / "assets").mkdir(exist_ok=True)
        # TF Serving ignores extra files in assets/; people and `predict` read the class names here.
        (temporary / "assets" / "classes.txt").write_text("\n".join(class_names) + "\n")
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return target


def export_run(run_dir: Path, *, config: Config | None = None, out_dir: Path | None = None,
               version: int | None = None, top_k: int | None = None, checkpoint: str = "best") -> Path:
    """`python -m pipeline export RUN_DIR`: exports the run's best checkpoint (default) to RUN_DIR/export."""
    from pipeline import evaluate

    run_dir = Path(run_dir)
    config = config or evaluate.load_run_config(run_dir)
    model = evaluate.load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.keras")
    height, width, channels = model.input_shape[1:]
    return export_model(model, out_dir=out_dir or run_dir / "export", model_name=config.name,
                        class_names=read_class_names(run_dir), image_size=(height, width),
                        channels=channels, resize_method=config.input.resize_method,
                        top_k=top_k or config.export.top_k, version=version)


def tflite_function(model: keras.Model, *, image_size, channels: int, resize_method: str = "bilinear"):
    """uint8 [1, H, W, C] at the training size -> {"probabilities": float32 [1, num_classes]}.

    The eval transform is inside (channel conversion, resize, cast), so a TFLite client feeds raw pixels.
    """
    height, width = int(image_size[0]), int(image_size[1])

    def predict(images):
        prepared = preprocessing.prepare_images(images, image_size=(height, width), channels=channels,
                                                resize_method=resize_method)
        return {"probabilities": tf.cast(model(prepared, training=False), tf.float32)}

    return predict, tf.TensorSpec([1, height, width, channels], tf.uint8, name="images")


def export_tflite(model: keras.Model, *, out_dir: Path, model_name: str, class_names: list[str],
                  image_size, channels: int, resize_method: str = "bilinear",
                  version: int | None = None) -> Path:
    """Writes `<out_dir>/<model_name>/<version>/model.tflite` and `classes.txt` beside it; returns the
    version directory. Signature `serving_default`: images uint8 [1, H, W, C] -> probabilities.
    Never overwrites a version."""
    model_dir = Path(out_dir) / model_name
    version = next_version(model_dir) if version is None else int(version)
    target = model_dir / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; exports never overwrite a version. "
                          f"Choose another --version or omit it to use {next_version(model_dir)}")
    predict, spec = tflite_function(model, image_size=image_size, channels=channels,
                                    resize_method=resize_method)
    # Keras 3's own path (keras/src/export/litert.py): ExportArchive -> SavedModel -> from_saved_model.
    # from_concrete_functions leaves Keras variables as uninitialised resource variables (NaN outputs).
    with tempfile.TemporaryDirectory(prefix="tflite-export-") as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", predict, input_signature=[spec])
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter raises ConverterError or plain exceptions
            raise ExportError(f"TFLite conversion of {model_name} failed: {error}") from error
    model_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        (temporary / "model.tflite").write_bytes(flatbuffer)
        (temporary / "classes.txt").write_text("\n".join(class_names) + "\n")
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return target


def export_run_tflite(run_dir: Path, *, config: Config | None = None, out_dir: Path | None = None,
                      version: int | None = None, checkpoint: str = "best") -> Path:
    """`python -m pipeline export RUN_DIR --format tflite`: the run's checkpoint as TFLite, by default in
    RUN_DIR/export_tflite (kept apart from RUN_DIR/export, whose versions TF Serving loads as SavedModels)."""
    from pipeline import evaluate

    run_dir = Path(run_dir)
    config = config or evaluate.load_run_config(run_dir)
    model = evaluate.load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.keras")
    height, width, channels = model.input_shape[1:]
    return export_tflite(model, out_dir=out_dir or run_dir / "export_tflite", model_name=config.name,
                         class_names=read_class_names(run_dir), image_size=(height, width),
                         channels=channels, resize_method=config.input.resize_method, version=version)
