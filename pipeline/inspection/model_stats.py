"""Sizes of a built network, layer by layer: output shapes, parameters and FLOPs per image.

Pure arithmetic over a Keras model (nothing is run): `summarize` makes one row per layer, nested models
expanded after their own row, and `totals` adds them up; `pipeline/inspection/summary.py` prints them.

FLOPs count multiply-adds x2 in Conv1D/2D/3D, DepthwiseConv, SeparableConv, ConvTranspose and Dense
layers, per image: positions x kernel size x 2, with positions the spatial size of the output (of the
input for transposed convolutions). Biases, activations, normalisation and pooling are not counted.
"""

from __future__ import annotations

import keras

from pipeline import compat


def _prod(values) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def weight_count(weights) -> int:
    """Number of scalars in a list of weights (variables or arrays with a `shape`)."""
    return sum(_prod(w.shape) for w in weights)


def _shape(tensor):
    if tensor is None:
        return None
    if isinstance(tensor, (list, tuple)):
        return [tuple(t.shape) for t in tensor]
    return tuple(tensor.shape)


def _spatial(shape) -> int | None:
    """Positions per image in a channels-last shape (None, *spatial, channels); None when unknown."""
    if shape is None or isinstance(shape, list) or any(dim is None for dim in shape[1:]):
        return None
    return _prod(shape[1:-1])


def layer_flops(layer) -> int | None:
    """FLOPs per image (2 x multiply-adds) of one layer; 0 for layers that are not counted, None when the
    layer's spatial size is unknown (e.g. a variable input size)."""
    L = keras.layers
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        positions = _spatial(_shape(compat.node_tensor(layer, "output")))
        return (
            None
            if positions is None
            else 2 * positions * (_prod(layer.depthwise_kernel.shape) + _prod(layer.pointwise_kernel.shape))
        )
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D, L.Conv1D, L.Conv2D, L.Conv3D)):
        positions = _spatial(_shape(compat.node_tensor(layer, "output")))
        return None if positions is None else 2 * positions * _prod(layer.kernel.shape)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        positions = _spatial(_shape(compat.node_tensor(layer, "input")))
        return None if positions is None else 2 * positions * _prod(layer.kernel.shape)
    if isinstance(layer, L.Dense):
        positions = _spatial(_shape(compat.node_tensor(layer, "output")))
        return None if positions is None else 2 * positions * _prod(layer.kernel.shape)
    return 0


def summarize(model: keras.Model) -> list[dict]:
    """One row per operation of the model's functional graph, nested models expanded right after their
    own row (their inner input layers left out), in graph order (`compat.walk_layers(graph=True)`).

    Returns:
        Rows with keys name, path (e.g. "backbone/block1_conv1"), depth (0 at the top), type (class
        name), output_shape (tuple with None for the batch; a list of tuples for several outputs; None
        when unknown), params, trainable_params, flops (per image; a nested model's row sums its layers;
        None when unknown), nested (True for a nested model's own row).
    """
    rows: list[dict] = []
    for ancestors, operation in compat.walk_layers(model, graph=True):
        depth = len(ancestors) - 1
        if depth and isinstance(operation, keras.layers.InputLayer):
            continue
        is_layer = isinstance(operation, keras.layers.Layer)
        nested = isinstance(operation, keras.Model)
        rows.append(
            {
                "name": operation.name,
                "path": "".join(f"{a.name}/" for a in ancestors[1:]) + operation.name,
                "depth": depth,
                "type": type(operation).__name__,
                "output_shape": _shape(compat.node_tensor(operation, "output")),
                "params": operation.count_params() if is_layer and operation.built else 0,
                "trainable_params": weight_count(operation.trainable_weights) if is_layer else 0,
                "flops": 0 if nested or not is_layer else layer_flops(operation),
                "nested": nested,
            }
        )
    for index, row in enumerate(rows):
        if row["nested"]:  # its layers are the rows right after it, down to the next row as shallow
            inner = []
            for later in rows[index + 1 :]:
                if later["depth"] <= row["depth"]:
                    break
                if not later["nested"]:
                    inner.append(later["flops"])
            row["flops"] = None if any(f is None for f in inner) else sum(inner)
    return rows


def totals(model: keras.Model, rows: list[dict]) -> dict:
    """{params, trainable_params, non_trainable_params, flops} of the model; flops sums the rows' layers
    (nested models' own rows excluded, so nothing counts twice), None when any is unknown."""
    leaf_flops = [row["flops"] for row in rows if not row["nested"]]
    flops = None if any(f is None for f in leaf_flops) else sum(leaf_flops)
    total = model.count_params()
    trainable = weight_count(model.trainable_weights)
    return {"params": total, "trainable_params": trainable, "non_trainable_params": total - trainable, "flops": flops}
