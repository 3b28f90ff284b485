"""Starting weights of the `applications` models: checking the `weights` argument, and copying the weights
of an earlier run's `.keras` or `.weights.h5` file into a freshly built model.

keras.applications loads `imagenet` and its own no-top `.h5` files itself (models/applications.py); this
module handles the files this pipeline writes. A file that cannot be used raises `WeightsError` naming
the file and the fix. Paths are taken as given (relative ones: from the working directory); the caller
resolves config-relative paths before building.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras

from pipeline import compat
from pipeline.core.errors import UserError

HEAD_LAYERS = ("fc", "logits")  # the head layers with weights, in order


class WeightsError(UserError, RuntimeError):
    """Weights cannot be obtained or do not fit the model. The message names the file and the fix (exit
    code 2; still a RuntimeError, as before)."""


def check_weights_argument(weights):
    """Validates a builder's `weights` argument; returns None, "imagenet" or the file's path as a string.

    Raises:
        ValueError: not None, "imagenet" or a path ending in .keras or .h5.
        WeightsError: the path does not name an existing file.
    """
    if weights is None or weights == "imagenet":
        return weights
    allowed = (
        "None, 'imagenet', the path of a .keras or .weights.h5 file from an earlier run, or of a "
        "keras.applications weights file (.h5, e.g. the no-top ImageNet file)"
    )
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"The `weights` argument should be {allowed}. Received: weights={weights!r}")
    path = Path(weights).expanduser()
    if not path.name.endswith((".keras", ".h5")):
        raise ValueError(f"The `weights` argument should be {allowed}. Received: weights={str(weights)!r}")
    if not path.is_file():
        raise WeightsError(f"Weights file not found: {path}. Received: weights={str(weights)!r}")
    return str(path)


def is_applications_file(weights) -> bool:
    """True for a keras.applications weights file (HDF5 `.h5`, by layer order: the no-top ImageNet
    files), as opposed to our runs' `.keras` / `.weights.h5`."""
    return isinstance(weights, str) and weights.endswith(".h5") and not weights.endswith(".weights.h5")


def keras_models_dir() -> str:
    """Where `keras.utils.get_file` keeps downloaded weights: $KERAS_HOME/models, or ~/.keras/models
    (/tmp/.keras/models when the home directory is not writable), as documented for `get_file`."""
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return os.path.join(os.path.expanduser(home), "models")


def first_line(error: Exception) -> str:
    """'TypeName: first line of the message' of an error, for a one-line reason inside our messages."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


# --------------------------------------------------------------------------------------------------
# Transfer from an earlier run
# --------------------------------------------------------------------------------------------------


def _parameter_count(layer) -> int:
    return int(sum(int(_prod(w.shape)) for w in layer.weights))


def _prod(shape) -> int:
    result = 1
    for dim in shape:
        result *= int(dim)
    return result


def _weights_mismatch(source, target) -> str | None:
    """Why `source`'s weights cannot be copied into `target` (None when they can)."""
    source_weights, target_weights = source.weights, target.weights
    if len(source_weights) != len(target_weights):
        return (
            f"its backbone has {len(source_weights)} weight tensors ({_parameter_count(source):,} parameters), "
            f"this model's has {len(target_weights)} ({_parameter_count(target):,} parameters): a different "
            f"architecture"
        )
    for source_weight, target_weight in zip(source_weights, target_weights):
        if tuple(source_weight.shape) != tuple(target_weight.shape):
            return (
                f"its backbone weight {source_weight.path} has shape {tuple(source_weight.shape)}, this "
                f"model's {target_weight.path} has {tuple(target_weight.shape)}: a different architecture"
            )
    return None


def transfer_weights(model: keras.Model, path) -> dict:
    """Copies weights from an earlier run's `.keras` or `.weights.h5` file into `model` (built by
    models.applications: a layer named `backbone`, head layers `fc` and `logits`).

    Returns:
        {"file": path, "backbone": True, "head_copied": [layer names], "head_kept": [layer names],
         "reason": why the kept head layers were not copied}.
    Raises:
        WeightsError: the file cannot be read, has no `backbone` layer, or its backbone does not match.
    """
    path = str(Path(path).expanduser())
    if path.endswith(".keras"):
        return _transfer_from_keras(model, path)
    if path.endswith(".weights.h5"):
        return _transfer_from_weights_h5(model, path)
    raise WeightsError(f"{path}: expected a .keras or .weights.h5 file")


def describe_transfer(report: dict) -> str:
    """One line saying what `transfer_weights` copied, e.g. 'weights: backbone copied from F; head copied:
    fc; new head kept: logits (...)'."""
    head = f"head copied: {', '.join(report['head_copied'])}" if report["head_copied"] else "head copied: none"
    if report["head_kept"]:
        head += f"; new head kept: {', '.join(report['head_kept'])}"
        if report.get("reason"):
            head += f" ({report['reason']})"
    return f"weights: backbone copied from {report['file']}; {head}"


def _head_layers(model) -> list:
    return [model.get_layer(name) for name in HEAD_LAYERS if name in {layer.name for layer in model.layers}]


def _transfer_from_keras(model: keras.Model, path: str) -> dict:
    try:
        source = keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure means the file is unusable; say why
        raise WeightsError(f"{path}: cannot be loaded as a Keras model ({first_line(error)})") from error
    found = compat.find_layer_path(source, "backbone")
    if found is None:
        raise WeightsError(
            f"{path}: has no layer named 'backbone', so it was not built by models.applications "
            f"(its model is {source.name!r}); transfer needs a checkpoint of an applications or "
            f"vgg16_finetune run"
        )
    source_network, source_backbone = found[-2], found[-1]
    target_backbone = model.get_layer("backbone")
    mismatch = _weights_mismatch(source_backbone, target_backbone)
    if mismatch:
        raise WeightsError(f"{path}: does not fit this model's backbone: {mismatch}")
    target_backbone.set_weights(source_backbone.get_weights())
    copied, kept, reasons = [], [], []
    for layer in _head_layers(model):
        source_layer = next((candidate for candidate in source_network.layers if candidate.name == layer.name), None)
        if source_layer is None:
            kept.append(layer.name)
            reasons.append(f"no {layer.name} layer in the file")
        elif [tuple(w.shape) for w in source_layer.weights] != [tuple(w.shape) for w in layer.weights]:
            kept.append(layer.name)
            reasons.append(
                f"{layer.name}: {[tuple(w.shape) for w in source_layer.weights][0]} in the file, "
                f"{[tuple(w.shape) for w in layer.weights][0]} here"
            )
        else:
            layer.set_weights(source_layer.get_weights())
            copied.append(layer.name)
    return {"file": path, "backbone": True, "head_copied": copied, "head_kept": kept, "reason": "; ".join(reasons)}


def _load_weights_strictly(target: keras.Model, path: str, **options) -> None:
    """`target.load_weights` that also fails when Keras only warns that parts were left unloaded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target.load_weights(path, **options)
    for warning in caught:
        text = str(warning.message)
        if "freshly-initialized" in text or "could not be loaded" in text:
            raise ValueError(text.splitlines()[0])


def _transfer_from_weights_h5(model: keras.Model, path: str) -> dict:
    logits = model.get_layer("logits")
    fresh_logits = logits.get_weights()
    head = [layer.name for layer in _head_layers(model)]
    errors = []
    for layout in ("bare", "wrapped"):
        if layout == "bare":
            target = model
        else:  # train.py's layout: the network nested in an outer model
            inputs = keras.Input(shape=model.input_shape[1:])
            target = keras.Model(inputs, model(inputs))
        try:
            _load_weights_strictly(target, path)
            return {"file": path, "backbone": True, "head_copied": head, "head_kept": [], "reason": ""}
        except Exception as error:  # noqa: BLE001 - try the next layout, report the first if none fits
            errors.append(error)
        try:
            _load_weights_strictly(target, path, objects_to_skip=[logits])
            logits.set_weights(fresh_logits)
            return {
                "file": path,
                "backbone": True,
                "head_copied": [name for name in head if name != "logits"],
                "head_kept": ["logits"],
                "reason": "the class count differs",
            }
        except Exception as error:  # noqa: BLE001
            errors.append(error)
    first = str(errors[0]).strip().splitlines()
    raise WeightsError(
        f"{path}: its weights do not fit this model ({first[0] if first else type(errors[0]).__name__}"
        f"). A .weights.h5 file only loads into a model built by models.applications with the same "
        f"backbone, channels, upscale_to, pooling and dense_units (the class count may differ); "
        f"to transfer between other settings use the run's .keras checkpoint instead"
    )
