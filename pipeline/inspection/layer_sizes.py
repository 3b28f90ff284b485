"""Input-size arithmetic: follows an image's height and width through a network's layer configs and finds
the first layer where the size stops being a whole positive number.

Works on `model.get_config()` (nested functional models and Sequential included, the graph's
connections followed), so a network that cannot be built at some size is explained from the same
architecture built at a size that works. Pure Python, no TensorFlow. Formulas (TensorFlow's rules):
valid padding (N + 2P - F) / S + 1 with P = 0, rounded down when >= 1; same padding ceil(N / S); F is the
dilated kernel d * (k - 1) + 1; transposed convolutions N * S (same) or (N - 1) * S + k (valid).
"""

from __future__ import annotations

import math

_WINDOWED = {
    "Conv2D",
    "Convolution2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
    "SeparableConvolution2D",
    "MaxPooling2D",
    "MaxPool2D",
    "AveragePooling2D",
    "AvgPool2D",
}
_GLOBAL_POOLS = {"GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D"}
_MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}
_AXES = ("height", "width")


class _Failure(Exception):
    def __init__(self, info: dict):
        super().__init__(info["message"])
        self.info = info


def _pair(value, default=None) -> tuple:
    if value is None:
        value = default
    if isinstance(value, (list, tuple)):
        return tuple(value) if len(value) == 2 else (value[0], value[0])
    return value, value


def _refs(value) -> list:
    """Functional config `input_layers`/`output_layers`: one [name, node, tensor] or a list of them."""
    if not value:
        return []
    if isinstance(value[0], str):
        return [tuple(value)]
    return [tuple(v) for v in value]


def _histories(node) -> list:
    found = []

    def visit(item):
        if isinstance(item, dict):
            if item.get("class_name") == "__keras_tensor__":
                found.append(item["config"]["keras_history"])
            else:
                for value in item.values():
                    visit(value)
        elif isinstance(item, (list, tuple)):
            for value in item:
                visit(value)

    visit(node.get("args", []) if isinstance(node, dict) else node)
    return found


def _fail(name, path, class_name, axis, formula, numbers, value, trace, reason=None) -> _Failure:
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    where = f", {axis}" if axis else ""
    message = (
        f"{name} ({class_name}{where}): {formula} = {numbers} = {shown} -> {reason or 'not a whole positive number'}"
    )
    return _Failure(
        {
            "layer": name,
            "path": path,
            "class_name": class_name,
            "axis": axis,
            "formula": formula,
            "numbers": numbers,
            "result": value,
            "message": message,
            "trace": list(trace),
        }
    )


def _windowed(layer, size, path, trace, square):
    cfg, class_name, name = layer["config"], layer["class_name"], layer["config"].get("name", layer.get("name"))
    pooling = "Pool" in class_name
    kernel = _pair(cfg.get("pool_size") if pooling else cfg.get("kernel_size"))
    strides = _pair(cfg.get("strides"), default=kernel if pooling else 1)
    dilation = _pair(cfg.get("dilation_rate", 1) or 1)
    padding = str(cfg.get("padding", "valid")).lower()
    out = []
    for axis, n, k, s, d in zip(_AXES, size, kernel, strides, dilation):
        f = d * (k - 1) + 1
        if padding == "same":
            out.append(math.ceil(n / s))
            continue
        value = (n + 2 * 0 - f) / s + 1
        if value < 1:
            numbers = f"({n} + 2*0 - {f}) / {s} + 1"
            if d > 1:
                numbers += f" (F = {d}*({k}-1)+1 with dilation {d})"
            raise _fail(name, path, class_name, None if square else axis, "(N + 2P - F) / S + 1", numbers, value, trace)
        out.append(math.floor(value))
    return tuple(out)


def _layer_output(layer, inbound, path, trace, square):
    class_name, cfg = layer["class_name"], layer.get("config", {})
    name = cfg.get("name", layer.get("name"))
    if isinstance(cfg, dict) and "layers" in cfg and "input_layers" in cfg:  # a nested functional model
        return _simulate(cfg, inbound, path + "/", trace, square)[0]
    if class_name == "Sequential":
        size = inbound[0] if inbound else None
        for inner in cfg.get("layers", []):
            inner_name = inner.get("config", {}).get("name", "?")
            size = _layer_output(inner, [size], f"{path}/{inner_name}", trace, square)
        return size
    known = [s for s in inbound if s is not None]
    size = known[0] if known else None
    if size is None:
        if class_name == "Reshape":
            target = cfg.get("target_shape") or ()
            return (
                tuple(target[:2])
                if len(target) == 3 and all(isinstance(t, int) and t > 0 for t in target[:2])
                else None
            )
        return None
    if class_name in _WINDOWED:
        result = _windowed(layer, size, path, trace, square)
    elif class_name == "Conv2DTranspose":
        kernel, strides = _pair(cfg.get("kernel_size")), _pair(cfg.get("strides"), 1)
        same = str(cfg.get("padding", "valid")).lower() == "same"
        result = tuple(n * s if same else (n - 1) * s + k for n, k, s in zip(size, kernel, strides))
    elif class_name == "ZeroPadding2D":
        padding = cfg.get("padding", 1)
        pads = (
            [_pair(p) for p in padding]
            if isinstance(padding, (list, tuple)) and isinstance(padding[0], (list, tuple))
            else [(p, p) for p in _pair(padding)]
        )
        result = tuple(n + a + b for n, (a, b) in zip(size, pads))
    elif class_name == "Cropping2D":
        cropping = cfg.get("cropping", 0)
        crops = (
            [_pair(c) for c in cropping]
            if isinstance(cropping, (list, tuple)) and isinstance(cropping[0], (list, tuple))
            else [(c, c) for c in _pair(cropping)]
        )
        result = []
        for axis, n, (a, b) in zip(_AXES, size, crops):
            if n - a - b < 1:
                raise _fail(
                    name,
                    path,
                    class_name,
                    None if square else axis,
                    "N - top - bottom",
                    f"{n} - {a} - {b}",
                    n - a - b,
                    trace,
                )
            result.append(n - a - b)
        result = tuple(result)
    elif class_name == "UpSampling2D":
        result = tuple(n * s for n, s in zip(size, _pair(cfg.get("size", 2))))
    elif class_name in ("Resizing", "CenterCrop", "RandomCrop"):
        result = (int(cfg["height"]), int(cfg["width"]))
    elif class_name in _GLOBAL_POOLS:
        result = (1, 1) if cfg.get("keepdims") else None
    elif class_name == "Flatten":
        result = None
    elif class_name == "Reshape":
        target = cfg.get("target_shape") or ()
        result = (
            tuple(target[:2]) if len(target) == 3 and all(isinstance(t, int) and t > 0 for t in target[:2]) else None
        )
    elif class_name in _MERGES:
        distinct = sorted({s for s in known if s != (1, 1)}) or [known[0]]
        if len(distinct) > 1:
            sizes = " and ".join(f"{h}x{w}" for h, w in distinct)
            raise _Failure(
                {
                    "layer": name,
                    "path": path,
                    "class_name": class_name,
                    "axis": None,
                    "formula": None,
                    "numbers": None,
                    "result": None,
                    "trace": list(trace),
                    "message": f"{name} ({class_name}): its inputs are {sizes}, which cannot be merged",
                }
            )
        result = distinct[0]
    else:
        result = size
    if result != size:
        trace.append((path, class_name, result))
    return result


def _simulate(config: dict, input_sizes: list, prefix: str, trace: list, square: bool) -> list:
    layers_list = config.get("layers", [])
    sizes: dict = {}
    inputs = _refs(config.get("input_layers"))
    if not inputs:
        inputs = [
            (layer.get("name") or layer["config"]["name"], 0, 0)
            for layer in layers_list
            if layer.get("class_name") == "InputLayer"
        ][:1]
    for ref, size in zip(inputs, input_sizes):
        sizes[(ref[0], 0)] = size
    previous = input_sizes[0] if input_sizes else None
    for layer in layers_list:
        name = layer.get("name") or layer.get("config", {}).get("name")
        nodes = layer.get("inbound_nodes")
        if layer.get("class_name") == "InputLayer":
            sizes.setdefault((name, 0), previous)
            previous = sizes[(name, 0)]
            continue
        if not nodes:  # a plain list of layer configs: a chain
            previous = sizes[(name, 0)] = _layer_output(layer, [previous], prefix + name, trace, square)
            continue
        for index, node in enumerate(nodes):
            inbound = [sizes.get((history[0], history[1])) for history in _histories(node)]
            previous = sizes[(name, index)] = _layer_output(layer, inbound, prefix + name, trace, square)
    outputs = _refs(config.get("output_layers"))
    return [sizes.get((ref[0], ref[1])) for ref in outputs] or [previous]


def conv_arithmetic(layers_config, input_size) -> dict | None:
    """Follows the spatial size of `input_size` (height, width) through a network's layer configs and
    returns the first layer whose output would be smaller than 1, or None when every layer works.

    Args:
        layers_config: `model.get_config()` of a functional model (nested models included; the graph's
            connections are followed), or a plain list of layer configs applied one after the other.
        input_size: (height, width) at the network's input.
    Returns:
        {"layer", "path", "class_name", "axis", "formula", "numbers", "result", "message", "trace"}: e.g.
        message "block5_pool (MaxPooling2D): (N + 2P - F) / S + 1 = (1 + 2*0 - 2) / 2 + 1 = 0.5 -> not a
        whole positive number"; trace lists (path, type, size) of each layer that changed the size before.
        Valid padding: (N + 2P - F) / S + 1 with P = 0, rounded down when >= 1 (TensorFlow's rule); same
        padding: ceil(N / S); F is the dilated kernel.
    """
    config = layers_config if isinstance(layers_config, dict) else {"layers": list(layers_config)}
    size = tuple(int(v) for v in input_size)
    trace: list = []
    try:
        _simulate(config, [size], "", trace, size[0] == size[1])
    except _Failure as failure:
        return failure.info
    return None
