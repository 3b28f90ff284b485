"""SavedModel export in TF Serving's layout: `<out>/<model_name>/<version>/`.

Signatures (both run the run's `EvalTransform` (pipeline/data/transform.py), the one evaluation uses; it is also
written to `assets/transform.json`, so an export states its own input contract):
    serving_default  image_bytes: tf.string [batch]  encoded JPEG/PNG/GIF/BMP, any size
    serve_images     images: tf.uint8 [batch, H, W, C] any H, W; C = 1, 2, 3 or 4 (converted)
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

from pipeline.config import Config, rundir
from pipeline.config.rundir import read_class_names  # noqa: F401  (re-exported)
from pipeline.core import errors
from pipeline.data import decode, image_header
from pipeline.data.transform import EvalTransform
from pipeline.evaluation import evaluate


class ExportError(errors.UserError):
    """The export cannot be written; the message says why."""


def header_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """int64 width x height that an encoded image's header promises (JPEG, PNG, GIF, BMP, WebP), read
    without decoding; 0 for other content (the decoder then reports it). The graph twin of
    `image_header.dimensions`, for the SavedModel, whose callers (TF Serving, HTTP) never pass through Python."""
    padded = tf.strings.join([encoded, tf.constant(b"\0" * 32)])  # short files read zeros, never out of range

    def number(offset, count, big_endian=False):
        values = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, count), tf.uint8), tf.int64)
        shifts = tf.range(count - 1, -1, -1, dtype=tf.int64) * 8 if big_endian else tf.range(count, dtype=tf.int64) * 8
        return tf.reduce_sum(tf.bitwise.left_shift(values, shifts))

    def signed32(value):
        return tf.where(value >= 2**31, 2**32 - value, value)  # BMP: a negative height is a top-down bitmap

    def starts(offset, text):
        return tf.equal(tf.strings.substr(padded, offset, len(text)), text)

    def webp():
        lossless = number(21, 4)
        return tf.case(
            [
                (starts(12, b"VP8X"), lambda: (number(24, 3) + 1) * (number(27, 3) + 1)),
                (starts(12, b"VP8L"), lambda: (lossless % 2**14 + 1) * (lossless // 2**14 % 2**14 + 1)),
                (starts(12, b"VP8 "), lambda: (number(26, 2) % 2**14) * (number(28, 2) % 2**14)),
            ],
            default=lambda: tf.constant(0, tf.int64),
        )

    return tf.case(
        [
            (
                starts(0, b"\xff\xd8\xff"),
                lambda: tf.reduce_prod(tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64)),
            ),
            (starts(0, b"\x89PNG"), lambda: number(16, 4, big_endian=True) * number(20, 4, big_endian=True)),
            (starts(0, b"GIF8"), lambda: number(6, 2) * number(8, 2)),
            (starts(0, b"BM"), lambda: signed32(number(18, 4)) * signed32(number(22, 4))),
            (starts(0, b"RIFF") & starts(8, b"WEBP"), webp),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )


def serving_functions(
    model: keras.Model,
    *,
    class_names: list[str],
    transform: EvalTransform,
    top_k: int = 5,
    max_pixels: int = image_header.DEFAULT_MAX_PIXELS,
):
    """The two serving functions of an export, as plain callables (also used in-process by tests).

    Args:
        transform: the run's eval transform with image_size and channels set, see `eval_transform`.
        max_pixels: `serving_default` refuses (InvalidArgumentError) an image whose header promises more
            pixels, before decoding it; 0: no limit.
    """
    names = tf.constant(class_names)
    k = min(int(top_k), len(class_names))
    height, width = transform.image_size
    channels = transform.channels

    def outputs(images):
        probabilities = tf.cast(model(images, training=False), tf.float32)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "classes": tf.gather(names, indices), "scores": scores}

    def serve_bytes(image_bytes):
        def decode_one(encoded):
            if max_pixels:  # a decompression bomb is refused before the decoder allocates what it promises
                tf.debugging.assert_less_equal(
                    header_pixels(encoded),
                    tf.constant(max_pixels, tf.int64),
                    message=f"image refused: its header promises more than {max_pixels} pixels (a decompression bomb?)",
                )
            decoded = decode.decode_image(encoded, channels=channels)
            return transform(decoded)

        images = tf.map_fn(
            decode_one, image_bytes, fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32)
        )
        return outputs(images)

    def serve_images(images):
        return outputs(transform(decode.convert_channels(images, channels)))

    return serve_bytes, serve_images


def eval_transform(model: keras.Model, config: Config) -> EvalTransform:
    """The eval transform of a run, sized by the model's input."""
    return EvalTransform.sized_for_data(config.input, native_shape=model.input_shape[1:])


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _write_version(out_dir: Path, model_name: str, version: int | None, write) -> Path:
    """Creates `<out_dir>/<model_name>/<version>/` atomically: `write(folder)` fills a temporary folder
    that is renamed into place when complete. Never overwrites an existing version."""
    model_dir = Path(out_dir) / model_name
    version = next_version(model_dir) if version is None else int(version)
    target = model_dir / str(version)
    if target.exists():
        raise ExportError(
            f"{target} already exists; exports never overwrite a version. "
            f"Choose another --version or omit it to use {next_version(model_dir)}"
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return target


def export_model(
    model: keras.Model,
    *,
    out_dir: Path,
    model_name: str,
    class_names: list[str],
    transform: EvalTransform,
    top_k: int = 5,
    version: int | None = None,
    max_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> Path:
    """Writes the SavedModel `<out_dir>/<model_name>/<version>/` and returns it. `max_pixels`: see
    `serving_functions` (the run's `dataset.max_image_pixels`)."""
    serve_bytes, serve_images = serving_functions(
        model, class_names=class_names, transform=transform, top_k=top_k, max_pixels=max_pixels
    )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
    )
    archive.add_endpoint(
        "serve_images", serve_images, input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")]
    )

    def write(folder: Path):
        archive.write_out(str(folder), verbose=False)
        (folder / "assets").mkdir(exist_ok=True)
        # TF Serving ignores extra files in assets/; people and `predict` read the class names here.
        (folder / "assets" / "classes.txt").write_text("\n".join(class_names) + "\n")
        (folder / "assets" / "transform.json").write_text(transform.to_json())

    return _write_version(out_dir, model_name, version, write)


def _load_run(run_dir: Path, config: Config | None, checkpoint: str):
    config = config or rundir.load_run_config(run_dir)
    model = evaluate.load_checkpoint(rundir.checkpoint_path(run_dir, checkpoint))
    return config, model, read_class_names(run_dir)


def export_run(
    run_dir: Path,
    *,
    config: Config | None = None,
    out_dir: Path | None = None,
    version: int | None = None,
    top_k: int | None = None,
    checkpoint: str = "best",
) -> Path:
    """`python -m pipeline export RUN_DIR`: exports the run's best checkpoint (default) to RUN_DIR/export."""
    from pipeline.evaluation import tta

    with rundir.exclusive(run_dir):  # not while a `train` writes the run directory
        config, model, class_names = _load_run(run_dir, config, checkpoint)
        model = tta.with_tta(model, config.export.tta)
        return export_model(
            model,
            out_dir=out_dir or rundir.RunLayout(run_dir).export,
            model_name=config.name,
            class_names=class_names,
            transform=eval_transform(model, config),
            top_k=top_k or config.export.top_k,
            version=version,
            max_pixels=config.dataset.max_image_pixels,
        )


def tflite_function(model: keras.Model, *, transform: EvalTransform):
    """uint8 [1, H, W, C] at the training size -> {"probabilities": float32 [1, num_classes]}.

    The eval transform is inside (channel conversion, crop, resize, cast), so a TFLite client feeds raw
    pixels.
    """
    height, width = transform.image_size

    def predict(images):
        prepared = transform(images)
        return {"probabilities": tf.cast(model(prepared, training=False), tf.float32)}

    return predict, tf.TensorSpec([1, height, width, transform.channels], tf.uint8, name="images")


def export_tflite(
    model: keras.Model,
    *,
    out_dir: Path,
    model_name: str,
    class_names: list[str],
    transform: EvalTransform,
    version: int | None = None,
) -> Path:
    """Writes `<out_dir>/<model_name>/<version>/model.tflite` and `classes.txt` beside it; returns the
    version directory. Signature `serving_default`: images uint8 [1, H, W, C] -> probabilities."""
    predict, spec = tflite_function(model, transform=transform)
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

    def write(folder: Path):
        (folder / "model.tflite").write_bytes(flatbuffer)
        (folder / "classes.txt").write_text("\n".join(class_names) + "\n")

    return _write_version(out_dir, model_name, version, write)


def export_run_tflite(
    run_dir: Path,
    *,
    config: Config | None = None,
    out_dir: Path | None = None,
    version: int | None = None,
    checkpoint: str = "best",
) -> Path:
    """`python -m pipeline export RUN_DIR --format tflite`: the run's checkpoint as TFLite, by default in
    RUN_DIR/export_tflite (kept apart from RUN_DIR/export, whose versions TF Serving loads as SavedModels)."""
    with rundir.exclusive(run_dir):
        config, model, class_names = _load_run(run_dir, config, checkpoint)
        return export_tflite(
            model,
            out_dir=out_dir or Path(run_dir) / "export_tflite",
            model_name=config.name,
            class_names=class_names,
            transform=eval_transform(model, config),
            version=version,
        )
