"""`python -m pipeline summary EXPERIMENT [--set k=v ...]`: what a network is before training it.

Prints a table of every layer (nested models such as an applications `backbone` expanded layer by layer):
name, type, output shape, parameters and FLOPs per image, then total / trainable / non-trainable
parameters and total GFLOPs; with `train.phases` in the config, the trainable and frozen parameters of
each phase (flags set by `pipeline.phases.set_trainable`, as training sets them). FLOPs count multiply-adds x2 in Conv1D/2D/3D, DepthwiseConv, SeparableConv, ConvTranspose and
Dense layers (biases, activations, normalisation and pooling are not counted).

When the network cannot take the configured input size, the command names the FIRST layer where the
size arithmetic fails, with the formula and its numbers, e.g. for vgg16 at 16x16
    block5_pool (MaxPooling2D): (N + 2P - F) / S + 1 = (1 + 2*0 - 2) / 2 + 1 = 0.5
                                -> not a whole positive number           (printed on one line)
found by simulating the requested size through the layer configs of the same architecture built at a
size that works, and exits with code 2.

The network is built with `weights` set to null when the model has that option: the architecture is the
same, and nothing is downloaded or read.
"""

from __future__ import annotations

import math
import re
import sys

import keras

# Native image shape of datasets whose images all have one size (used when input.image_size / channels
# are null, as train.py does with the arrays it loads).
NATIVE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
CLASS_COUNTS = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "hymenoptera": 2}
REFERENCE_SIZE = 224  # a size every registered network takes, for the arithmetic of a size that fails

USER_ERROR = 2


class SummaryError(ValueError):
    """The summary cannot be made; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------
# The network of an experiment
# --------------------------------------------------------------------------------------------------

def input_shape_for(config) -> tuple[int, int, int]:
    """(height, width, channels) the experiment's network is built for: input.image_size and
    input.channels, or the dataset's native shape where they are null."""
    native = NATIVE_SHAPES.get(config.dataset.name)
    image_size, channels = config.input.image_size, config.input.channels
    if image_size:
        height, width = (int(v) for v in image_size)
    elif native:
        height, width = native[:2]
    else:
        raise SummaryError(f"input.image_size: dataset {config.dataset.name!r} has no single native image size; "
                           f"set one, e.g. --set input.image_size=[224,224]")
    return height, width, int(channels or (native[2] if native else 3))


def num_classes_for(config) -> int:
    """The dataset's class count: known for the built-in datasets, else read from the dataset's listing."""
    if config.dataset.name in CLASS_COUNTS:
        return CLASS_COUNTS[config.dataset.name]
    from pipeline import datasets

    options = config.dataset
    try:
        data = datasets.load_dataset(options.name, data_dir=options.data_dir, mirror_dir=options.mirror_dir,
                                     root=options.root, lists=options.lists, classes=options.classes)
    except datasets.DatasetError as error:
        raise SummaryError(f"cannot count the classes of dataset {options.name!r} ({error}); "
                           f"pass --num-classes N") from None
    return len(data.class_names)


def _options_without_weights(name: str, options: dict) -> dict:
    import models

    options = dict(options)
    if "weights" in models.MODELS.options(name):
        options["weights"] = None
    return options


def build_network(config, input_shape, num_classes: int) -> keras.Model:
    """The registered network of the experiment (no weights loaded, no normalisation wrapper)."""
    import models

    return models.build_model(config.model.name, input_shape=input_shape, num_classes=num_classes,
                              **_options_without_weights(config.model.name, config.model.options))


# --------------------------------------------------------------------------------------------------
# Layer table
# --------------------------------------------------------------------------------------------------

def _prod(values) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _size(weights) -> int:
    return sum(_prod(w.shape) for w in weights)


def _node_tensor(operation, attribute: str):
    """`operation.output` / `.input`, or the first call's tensors for an operation called several times."""
    try:
        return getattr(operation, attribute)
    except Exception:  # noqa: BLE001 - e.g. "has multiple inbound nodes"
        nodes = getattr(operation, "_inbound_nodes", [])
        if not nodes:
            return None
        tensors = nodes[0].output_tensors if attribute == "output" else nodes[0].input_tensors
        return tensors[0] if len(tensors) == 1 else tensors


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
    """FLOPs per image (2 x multiply-adds) of one layer; 0 for layers that are not counted."""
    L = keras.layers
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        positions = _spatial(_shape(_node_tensor(layer, "output")))
        return None if positions is None else 2 * positions * (
            _prod(layer.depthwise_kernel.shape) + _prod(layer.pointwise_kernel.shape))
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D, L.Conv1D, L.Conv2D, L.Conv3D)):
        positions = _spatial(_shape(_node_tensor(layer, "output")))
        return None if positions is None else 2 * positions * _prod(layer.kernel.shape)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        positions = _spatial(_shape(_node_tensor(layer, "input")))
        return None if positions is None else 2 * positions * _prod(layer.kernel.shape)
    if isinstance(layer, L.Dense):
        positions = _spatial(_shape(_node_tensor(layer, "output")))
        return None if positions is None else 2 * positions * _prod(layer.kernel.shape)
    return 0


def _is_container(operation) -> bool:
    return isinstance(operation, keras.Model) and hasattr(operation, "layers")


def _children(container) -> list:
    """A nested model's layers and operations (e.g. a `keras.ops.flip` node) in graph order."""
    operations = getattr(container, "operations", None)
    return list(operations) if operations is not None else list(container.layers)


def summarize(model: keras.Model) -> list[dict]:
    """One row per layer, nested models expanded after their own row (inner input layers left out).

    Row keys: name, path (nested/names), depth, type, output_shape, params, trainable_params, flops
    (a nested model's row sums its layers), nested (True for a nested model's own row).
    """
    rows: list[dict] = []

    def walk(container, prefix: str, depth: int) -> None:
        for operation in _children(container):
            if depth and isinstance(operation, keras.layers.InputLayer):
                continue
            nested = _is_container(operation)
            is_layer = isinstance(operation, keras.layers.Layer)
            row = {"name": operation.name, "path": prefix + operation.name, "depth": depth,
                   "type": type(operation).__name__, "output_shape": _shape(_node_tensor(operation, "output")),
                   "params": operation.count_params() if is_layer and operation.built else 0,
                   "trainable_params": _size(operation.trainable_weights) if is_layer else 0,
                   "flops": 0, "nested": nested}
            rows.append(row)
            if nested:
                start = len(rows)
                walk(operation, row["path"] + "/", depth + 1)
                inner = [r["flops"] for r in rows[start:] if not r["nested"]]
                row["flops"] = None if any(f is None for f in inner) else sum(inner)
            elif is_layer:
                row["flops"] = layer_flops(operation)

    walk(model, "", 0)
    return rows


def totals(model: keras.Model, rows: list[dict]) -> dict:
    leaf_flops = [row["flops"] for row in rows if not row["nested"]]
    flops = None if any(f is None for f in leaf_flops) else sum(leaf_flops)
    total = model.count_params()
    trainable = _size(model.trainable_weights)
    return {"params": total, "trainable_params": trainable, "non_trainable_params": total - trainable,
            "flops": flops}


def _number(value) -> str:
    return "?" if value is None else f"{value:,}"


def _shape_text(shape) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def format_table(rows: list[dict], summary_totals: dict) -> str:
    header = ("Layer", "Type", "Output shape", "Params", "FLOPs")
    body = [("  " * row["depth"] + row["name"], row["type"], _shape_text(row["output_shape"]),
             _number(row["params"]), _number(row["flops"])) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(header))
    flops = summary_totals["flops"]
    gflops = "?" if flops is None else f"{flops / 1e9:.4f} GFLOPs"
    lines = [line(header), rule, *(line(cells) for cells in body), rule,
             f"Total params:         {_number(summary_totals['params'])}",
             f"Trainable params:     {_number(summary_totals['trainable_params'])}",
             f"Non-trainable params: {_number(summary_totals['non_trainable_params'])}",
             f"FLOPs per image:      {_number(flops)} ({gflops}; multiply-adds x2 in conv and dense layers)"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Training phases: which weights train
# --------------------------------------------------------------------------------------------------

def _flatten_layers(container) -> list:
    """Every layer inside `container`, depth first (a nested model before its own layers)."""
    result = []
    for layer in container.layers:
        result.append(layer)
        if _is_container(layer):
            result.extend(_flatten_layers(layer))
    return result


def set_trainable(layer, value: bool) -> None:
    """`layer.trainable = value`, applied to every sublayer even where the flag already has that value:
    under the TensorFlow backend a plain assignment is skipped when `layer.trainable == value` (tf's
    AutoTrackable short-circuits `x.a = x.a`), which would leave sublayers frozen earlier frozen."""
    keras.layers.Layer.trainable.fset(layer, bool(value))
    for sublayer in getattr(layer, "_layers", None) or getattr(layer, "layers", []):
        set_trainable(sublayer, value)


def _phase_value(phase, key, default=None):
    if isinstance(phase, dict):
        return phase.get(key, default)
    return getattr(phase, key, default)


def phase_parameter_counts(model: keras.Model, phases) -> list[dict]:
    """Trainable and frozen parameters of each phase ({epochs, trainable} dicts, or PhaseConfig objects),
    with the trainable flags set exactly as training sets them (`pipeline.phases.set_trainable`); the
    model's own flags are restored afterwards.

    Raises:
        pipeline.phases.PhaseError: a phase names a layer the backbone lacks, or the model has no backbone.
    """
    from pipeline import phases as phase_lib

    everything = [model, *_flatten_layers(model)]
    saved = [(layer, layer.trainable) for layer in everything]
    total = model.count_params()
    counts = []
    try:
        for index, phase in enumerate(phases, start=1):
            spec = _phase_value(phase, "trainable", "all")
            phase_lib.set_trainable(model, spec)
            trainable = _size(model.trainable_weights)
            counts.append({"phase": index, "epochs": _phase_value(phase, "epochs"), "trainable": spec,
                           "trainable_params": trainable, "frozen_params": total - trainable,
                           "cache_features": bool(_phase_value(phase, "cache_features", False))})
    finally:
        for layer, flag in saved:  # containers first: setting one resets its layers, restored next
            set_trainable(layer, flag)
    return counts


def format_phases(counts: list[dict]) -> str:
    lines = ["Training phases (train.phases):"]
    for count in counts:
        epochs = count["epochs"]
        epochs = "" if epochs is None else f"{epochs} epoch{'' if epochs == 1 else 's'}, "
        lines.append(f"  phase {count['phase']}: {epochs}trainable {count['trainable']}: "
                     f"{count['trainable_params']:,} trainable, {count['frozen_params']:,} frozen parameters"
                     + ("; head trained on the backbone's cached features" if count.get("cache_features") else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Input-size arithmetic
# --------------------------------------------------------------------------------------------------

_WINDOWED = {"Conv2D", "Convolution2D", "DepthwiseConv2D", "SeparableConv2D", "SeparableConvolution2D",
             "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D"}
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
    message = (f"{name} ({class_name}{where}): {formula} = {numbers} = {shown} -> "
               f"{reason or 'not a whole positive number'}")
    return _Failure({"layer": name, "path": path, "class_name": class_name, "axis": axis, "formula": formula,
                     "numbers": numbers, "result": value, "message": message, "trace": list(trace)})


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
            raise _fail(name, path, class_name, None if square else axis, "(N + 2P - F) / S + 1", numbers,
                        value, trace)
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
            return tuple(target[:2]) if len(target) == 3 and all(isinstance(t, int) and t > 0 for t in target[:2]) \
                else None
        return None
    if class_name in _WINDOWED:
        result = _windowed(layer, size, path, trace, square)
    elif class_name == "Conv2DTranspose":
        kernel, strides = _pair(cfg.get("kernel_size")), _pair(cfg.get("strides"), 1)
        same = str(cfg.get("padding", "valid")).lower() == "same"
        result = tuple(n * s if same else (n - 1) * s + k for n, k, s in zip(size, kernel, strides))
    elif class_name == "ZeroPadding2D":
        padding = cfg.get("padding", 1)
        pads = [_pair(p) for p in padding] if isinstance(padding, (list, tuple)) and \
            isinstance(padding[0], (list, tuple)) else [(p, p) for p in _pair(padding)]
        result = tuple(n + a + b for n, (a, b) in zip(size, pads))
    elif class_name == "Cropping2D":
        cropping = cfg.get("cropping", 0)
        crops = [_pair(c) for c in cropping] if isinstance(cropping, (list, tuple)) and \
            isinstance(cropping[0], (list, tuple)) else [(c, c) for c in _pair(cropping)]
        result = []
        for axis, n, (a, b) in zip(_AXES, size, crops):
            if n - a - b < 1:
                raise _fail(name, path, class_name, None if square else axis, "N - top - bottom",
                            f"{n} - {a} - {b}", n - a - b, trace)
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
        result = tuple(target[:2]) if len(target) == 3 and all(isinstance(t, int) and t > 0 for t in target[:2]) \
            else None
    elif class_name in _MERGES:
        distinct = sorted({s for s in known if s != (1, 1)}) or [known[0]]
        if len(distinct) > 1:
            sizes = " and ".join(f"{h}x{w}" for h, w in distinct)
            raise _Failure({"layer": name, "path": path, "class_name": class_name, "axis": None, "formula": None,
                            "numbers": None, "result": None, "trace": list(trace),
                            "message": f"{name} ({class_name}): its inputs are {sizes}, which cannot be merged"})
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
        inputs = [(layer.get("name") or layer["config"]["name"], 0, 0) for layer in layers_list
                  if layer.get("class_name") == "InputLayer"][:1]
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


def explain_bad_size(config, input_shape, num_classes: int, error: Exception) -> str:
    """The message for a network that cannot be built at `input_shape`: the first failing layer with its
    arithmetic (from the same architecture built at a size that works), then the builder's own message."""
    height, width, channels = input_shape
    options = _options_without_weights(config.model.name, config.model.options)
    start = (height, width)
    upscale = options.pop("upscale_to", None)
    if upscale is not None:  # the network sees the upscaled size; simulate from there
        start = tuple(upscale) if isinstance(upscale, (list, tuple)) else (upscale, upscale)
    reference_side = max(REFERENCE_SIZE, height, width)
    import models

    lines = [f"error: {config.model.name} cannot take a {height}x{width}x{channels} input"
             + (f" (upscaled to {start[0]}x{start[1]})" if upscale is not None else "")]
    try:
        reference = models.build_model(config.model.name, input_shape=(reference_side, reference_side, channels),
                                       num_classes=num_classes, **options)
    except Exception:  # noqa: BLE001 - the options themselves are wrong: the builder's message says it all
        reference = None
    failure = conv_arithmetic(reference.get_config(), start) if reference is not None else None
    if failure:
        steps = " -> ".join([f"input {start[0]}x{start[1]}"] + [
            f"{path.rsplit('/', 1)[-1]} {size[0]}x{size[1]}" for path, _, size in failure["trace"] if size])
        lines.append(f"  first failing layer: {failure['message']}")
        if "/" in failure["path"]:
            lines.append(f"  (in {failure['path'].rsplit('/', 1)[0]})")
        lines.append(f"  sizes before it: {steps}")
    lines.append(f"  {_error_line(error)}")
    return "\n".join(lines)


def _error_line(error: Exception) -> str:
    """The informative line of an error: Keras wraps its shape errors in "Exception encountered when
    calling ..." and ANSI bold codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("Exception encountered when calling")]
    return lines[0] if lines else type(error).__name__


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------

def summary_command(experiment: str, overrides=(), *, num_classes: int | None = None, out=None) -> int:
    """Prints the summary of an experiment's network; returns the exit code (2: the input size does not fit
    the network, or the summary cannot be made). ConfigError from the config propagates (the CLI reports it)."""
    from pipeline import config as config_lib

    out = out or sys.stdout
    config = config_lib.load_config(experiment, list(overrides))
    try:
        input_shape = input_shape_for(config)
        classes = num_classes or num_classes_for(config)
    except SummaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        model = build_network(config, input_shape, classes)
    except ValueError as error:  # Keras' shape errors and the builders' ConfigError are ValueErrors
        print(explain_bad_size(config, input_shape, classes, error), file=sys.stderr)
        return USER_ERROR
    rows = summarize(model)
    print(f"Experiment {config.name}: model {config.model.name}, input {input_shape[0]}x{input_shape[1]}x"
          f"{input_shape[2]}, {classes} classes", file=out)
    print(format_table(rows, totals(model, rows)), file=out)
    phases = getattr(config.train, "phases", None)  # train.phases: [{epochs, trainable, ...}] or null
    if phases:
        from pipeline.phases import PhaseError

        try:
            counts = phase_parameter_counts(model, phases)
        except PhaseError as error:
            print(f"error: {error}", file=sys.stderr)
            return USER_ERROR
        print(file=out)
        print(format_phases(counts), file=out)
    return 0
