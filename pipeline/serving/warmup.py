"""Warm-up requests in TF Serving's format: `<version>/assets.extra/tf_serving_warmup_requests`.

TF Serving replays this file when it loads a version, before the version is marked AVAILABLE, so the
first real request does not pay for kernel initialisation and memory allocation
(https://www.tensorflow.org/tfx/serving/saved_model_warmup). The file is a TFRecord of serialized
`tensorflow.serving.PredictionLog` messages (the official protos from the `tensorflow-serving-api`
package), each holding a PredictRequest for `serving_default`: one per sample image, then one with all
of them as a batch. `pipeline serve` replays it the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
SIGNATURE = "serving_default"
INPUT_NAME = "image_bytes"  # pipeline/serving/export.py's serving_default input


def warmup_path(version_dir: Path) -> Path:
    return Path(version_dir) / WARMUP_DIR / WARMUP_FILE


def prediction_log(model_name: str, encoded_images: list[bytes]) -> prediction_log_pb2.PredictionLog:
    """One PredictRequest of `serving_default` with these encoded images, as a PredictionLog."""
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE),
    )
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(np.array(encoded_images, dtype=object)))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def write_warmup(version_dir: Path, *, model_name: str, encoded_images: list[bytes]) -> Path | None:
    """Writes the warm-up file into a version folder (before it is renamed into place); None without images.

    Args:
        encoded_images: a few real JPEG/PNG files of the run's classes (see `sample_images`).
    """
    if not encoded_images:
        return None
    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image in encoded_images:
            writer.write(prediction_log(model_name, [image]).SerializeToString())
        if len(encoded_images) > 1:
            writer.write(prediction_log(model_name, list(encoded_images)).SerializeToString())
    return path


def read_warmup(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLog records of a warm-up file, parsed with the official protos."""
    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def replay(version_dir: Path, run, *, model_name: str) -> int:
    """Runs each warm-up request through `run(signature_name, values)`; returns how many ran.

    Only `predict_log` records apply to our signatures (TF Serving also knows classify/regress logs).
    """
    path = warmup_path(version_dir)
    if not path.is_file():
        return 0
    count = 0
    for log in read_warmup(path):
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        for tensor in request.inputs.values():
            array = tf.make_ndarray(tensor)
            values = list(array) if array.dtype == object else [image for image in array]
            run(request.model_spec.signature_name or SIGNATURE, values)
            count += 1
    return count


def sample_images(splits, *, count: int = 4) -> list[bytes]:
    """Up to `count` encoded test images, of different classes where possible.

    Args:
        splits: a `pipeline.data.splits.Splits`: image files are read as they are; arrays (MNIST,
            CIFAR-10) are encoded as PNG; TFRecord datasets give none (their bytes stay in the shards).
    """
    from pipeline.data import readers

    if not isinstance(splits.reader, (readers.ArrayReader, readers.FileReader)):
        return []
    items, labels = splits.test
    chosen, seen = [], set()
    for index, label in enumerate(np.asarray(labels)):
        if int(label) not in seen:
            seen.add(int(label))
            chosen.append(index)
        if len(chosen) == count:
            break
    if isinstance(splits.reader, readers.ArrayReader):
        return [tf.io.encode_png(np.asarray(items[index], np.uint8)).numpy() for index in chosen]
    return [Path(items[index]).read_bytes() for index in chosen]
