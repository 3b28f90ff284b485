"""`python -m pipeline summary EXPERIMENT [--set k=v ...]`: what a network is before training it.

Prints a table of every layer (nested models such as an applications `backbone` expanded layer by layer):
name, type, output shape, parameters and FLOPs per image, then total / trainable / non-trainable
parameters and total GFLOPs; with `train.phases` in the config, the trainable and frozen parameters of
each phase (flags set by `pipeline.training.phases.set_trainable`, as training sets them). The figures come from
`pipeline.inspection.model_stats` (FLOPs: multiply-adds x2 in convolution and dense layers, see there).

When the network cannot take the configured input size, the command names the FIRST layer where the
size arithmetic fails, with the formula and its numbers, e.g. for vgg16 at 16x16
    block5_pool (MaxPooling2D): (N + 2P - F) / S + 1 = (1 + 2*0 - 2) / 2 + 1 = 0.5
                                -> not a whole positive number           (printed on one line)
found by simulating the requested size through the layer configs of the same architecture built at a
size that works (`pipeline.inspection.layer_sizes`), and exits with code 2.

The network is built with `weights` set to null when the model has that option: the architecture is the
same, and nothing is downloaded or read.
"""

from __future__ import annotations

import re
import sys

from pipeline.core.errors import UserError
from pipeline.inspection import layer_sizes  # pure Python; Keras and TensorFlow are imported once the config is read

REFERENCE_SIZE = 224  # a size every registered network takes, for the arithmetic of a size that fails


class SummaryError(UserError):
    """The summary cannot be made; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------
# The network of an experiment
# --------------------------------------------------------------------------------------------------


def input_shape_for(config) -> tuple[int, int, int]:
    """(height, width, channels) the experiment's network is built for: its eval transform's output."""
    return eval_transform_for(config).input_shape


def eval_transform_for(config):
    """The experiment's `EvalTransform` (the one training, evaluation and the export use), sized with
    input.image_size and input.channels, or the dataset's native shape (its registry flag) where they are
    null; raises ConfigError when there is none."""
    from pipeline.data import datasets
    from pipeline.data.transform import EvalTransform

    name = config.dataset.name
    return EvalTransform.sized_for_data(
        config.input, native_shape=datasets.native_shape(name), source=f"dataset {name!r}"
    )


def num_classes_for(config) -> int:
    """The dataset's class count: known for the built-in datasets, else read from the dataset's listing."""
    from pipeline.data import datasets

    if datasets.known_class_count(config.dataset.name):
        return datasets.known_class_count(config.dataset.name)

    options = config.dataset
    try:
        data = datasets.load_dataset(
            options.name,
            data_dir=options.data_dir,
            mirror_dir=options.mirror_dir,
            root=options.root,
            lists=options.lists,
            classes=options.classes,
        )
    except datasets.DatasetError as error:
        raise SummaryError(
            f"cannot count the classes of dataset {options.name!r} ({error}); pass --num-classes N"
        ) from None
    return len(data.class_names)


def _options_without_weights(name: str, options: dict) -> dict:
    import models

    options = dict(options)
    if "weights" in models.MODELS.options(name):
        options["weights"] = None
    return options


def build_network(config, input_shape, num_classes: int):
    """The registered network of the experiment, a keras.Model (no weights loaded, no normalisation
    wrapper)."""
    import models

    return models.build_model(
        config.model.name,
        input_shape=input_shape,
        num_classes=num_classes,
        **_options_without_weights(config.model.name, config.model.options),
    )


# --------------------------------------------------------------------------------------------------
# Layer table (rows and totals from pipeline.inspection.model_stats)
# --------------------------------------------------------------------------------------------------


def _number(value) -> str:
    return "?" if value is None else f"{value:,}"


def _shape_text(shape) -> str:
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def format_table(rows: list[dict], summary_totals: dict) -> str:
    """The layer table of `model_stats.summarize` rows (nested layers indented) and the totals of
    `model_stats.totals`, as lines of text."""
    header = ("Layer", "Type", "Output shape", "Params", "FLOPs")
    body = [
        (
            "  " * row["depth"] + row["name"],
            row["type"],
            _shape_text(row["output_shape"]),
            _number(row["params"]),
            _number(row["flops"]),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            cell.ljust(width) if i < 3 else cell.rjust(width) for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(header))
    flops = summary_totals["flops"]
    gflops = "?" if flops is None else f"{flops / 1e9:.4f} GFLOPs"
    lines = [
        line(header),
        rule,
        *(line(cells) for cells in body),
        rule,
        f"Total params:         {_number(summary_totals['params'])}",
        f"Trainable params:     {_number(summary_totals['trainable_params'])}",
        f"Non-trainable params: {_number(summary_totals['non_trainable_params'])}",
        f"FLOPs per image:      {_number(flops)} ({gflops}; multiply-adds x2 in conv and dense layers)",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Training phases: which weights train
# --------------------------------------------------------------------------------------------------


def _phase_value(phase, key, default=None):
    if isinstance(phase, dict):
        return phase.get(key, default)
    return getattr(phase, key, default)


def phase_parameter_counts(model, phases) -> list[dict]:
    """Trainable and frozen parameters of each phase ({epochs, trainable} dicts, or PhaseConfig objects),
    with the trainable flags set exactly as training sets them (`pipeline.training.phases.set_trainable`); the
    model's own flags are restored afterwards.

    Raises:
        pipeline.training.phases.PhaseError: a phase names a layer the backbone lacks, or the model has no backbone.
    """
    from pipeline import compat
    from pipeline.inspection import model_stats
    from pipeline.training import phases as phase_lib

    saved = [(layer, layer.trainable) for layer in compat.iter_layers(model, include_self=True)]
    total = model.count_params()
    counts = []
    try:
        for index, phase in enumerate(phases, start=1):
            spec = _phase_value(phase, "trainable", "all")
            phase_lib.set_trainable(model, spec)
            trainable = model_stats.weight_count(model.trainable_weights)
            counts.append(
                {
                    "phase": index,
                    "epochs": _phase_value(phase, "epochs"),
                    "trainable": spec,
                    "trainable_params": trainable,
                    "frozen_params": total - trainable,
                    "cache_features": bool(_phase_value(phase, "cache_features", False)),
                }
            )
    finally:
        for layer, flag in saved:  # containers first: setting one resets its layers, restored next
            compat.force_trainable(layer, flag)
    return counts


def format_phases(counts: list[dict]) -> str:
    """'Training phases (train.phases):' and one line per `phase_parameter_counts` entry."""
    lines = ["Training phases (train.phases):"]
    for count in counts:
        epochs = count["epochs"]
        epochs = "" if epochs is None else f"{epochs} epoch{'' if epochs == 1 else 's'}, "
        lines.append(
            f"  phase {count['phase']}: {epochs}trainable {count['trainable']}: "
            f"{count['trainable_params']:,} trainable, {count['frozen_params']:,} frozen parameters"
            + ("; head trained on the backbone's cached features" if count.get("cache_features") else "")
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# A network that cannot take the input size
# --------------------------------------------------------------------------------------------------


def explain_bad_size(config, input_shape, num_classes: int, error: Exception) -> str:
    """The message for a network that cannot be built at `input_shape`: the first failing layer with its
    arithmetic (from the same architecture built at a size that works), then the builder's own message.
    When the network cannot be built at any size, its options are at fault: 'error: model.options: ' and
    the builder's message."""
    height, width, channels = input_shape
    options = _options_without_weights(config.model.name, config.model.options)
    start = (height, width)
    upscale = options.pop("upscale_to", None)
    if upscale is not None:  # the network sees the upscaled size; simulate from there
        start = tuple(upscale) if isinstance(upscale, (list, tuple)) else (upscale, upscale)
    reference_side = max(REFERENCE_SIZE, height, width)
    import models

    try:
        reference = models.build_model(
            config.model.name,
            input_shape=(reference_side, reference_side, channels),
            num_classes=num_classes,
            **options,
        )
    except Exception:  # noqa: BLE001 - the options themselves are wrong: the builder's message says it all
        reference = None
    if reference is None or len(start) != 2 or not all(isinstance(side, int) for side in start):
        return f"model.options: {_error_line(error)}"
    lines = [
        f"{config.model.name} cannot take a {height}x{width}x{channels} input"
        + (f" (upscaled to {start[0]}x{start[1]})" if upscale is not None else "")
    ]
    failure = layer_sizes.conv_arithmetic(reference.get_config(), start)
    if failure:
        steps = " -> ".join(
            [f"input {start[0]}x{start[1]}"]
            + [f"{path.rsplit('/', 1)[-1]} {size[0]}x{size[1]}" for path, _, size in failure["trace"] if size]
        )
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
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("Exception encountered when calling")
    ]
    return lines[0] if lines else type(error).__name__


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def summary_command(config, *, num_classes: int | None = None, out=None) -> int:
    """Prints the summary of an experiment's network (its config validated by the caller, as `train`
    validates it); returns 0.

    Raises:
        SummaryError: the input size does not fit the network, the classes cannot be counted, or a phase
            names a layer the network lacks.
    """
    import keras

    from pipeline.inspection import model_stats
    from pipeline.training.phases import PhaseError

    out = out or sys.stdout
    input_shape = input_shape_for(config)
    classes = num_classes or num_classes_for(config)
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        model = build_network(config, input_shape, classes)
    except ValueError as error:  # Keras' shape errors and the builders' argument errors
        raise SummaryError(explain_bad_size(config, input_shape, classes, error)) from None
    rows = model_stats.summarize(model)
    print(
        f"Experiment {config.name}: model {config.model.name}, input {input_shape[0]}x{input_shape[1]}x"
        f"{input_shape[2]}, {classes} classes",
        file=out,
    )
    print(format_table(rows, model_stats.totals(model, rows)), file=out)
    phases = getattr(config.train, "phases", None)  # train.phases: [{epochs, trainable, ...}] or null
    if phases:
        try:
            counts = phase_parameter_counts(model, phases)
        except PhaseError as error:
            raise SummaryError(str(error)) from None
        print(file=out)
        print(format_phases(counts), file=out)
    print(file=out)
    print(format_recipe(config), file=out)
    return 0


def format_recipe(config) -> str:
    """The training recipe in a few lines: input transform, augmentation, optimisation, evaluation."""
    from pipeline import config as config_lib

    augment = {
        key: value for key, value in config_lib.to_dict(config.input.augment).items() if value and key != "fill_mode"
    }
    transform = eval_transform_for(config)
    crop_text = {
        "square": f"square (margin {transform.margin})",
        "random_resized": f"random_resized (scale {list(transform.scale)}, ratio {list(transform.ratio)}; eval: 0.875 centre "
        f"crop)",
    }.get(transform.crop, transform.crop)
    optimizer, schedule, train = config.train.optimizer, config.train.schedule, config.train
    optimizer_text = ", ".join(
        f"{key} {value}"
        for key, value in config_lib.to_dict(optimizer).items()
        if value not in (None, False, 0.0) and key != "name" and not (key == "norm_bias_lr_factor" and value == 1.0)
    )
    lines = [
        f"Input:        {transform.image_size[0]}x{transform.image_size[1]}x{transform.channels}, crop {crop_text}, "
        f"resize {transform.resize_method}, normalization "
        f"{config.input.normalization}, cache {config.input.cache}",
        f"Augmentation: {', '.join(f'{k}={v}' for k, v in augment.items()) or 'none'}",
        f"Optimizer:    {optimizer.name} ({optimizer_text}); schedule {schedule.name}"
        f"{f' with {schedule.warmup_epochs:g} warm-up epochs' if schedule.warmup_epochs else ''}"
        f"{f' from {schedule.warmup_start:g}x the peak' if schedule.warmup_epochs and schedule.warmup_start else ''}"
        f"{f' to {schedule.end_learning_rate:g}' if schedule.name == 'polynomial' and schedule.end_learning_rate else ''}; "
        f"{train.epochs} epochs, global batch {train.batch_size}"
        f"{'' if train.mixed_precision == 'float32' else f', {train.mixed_precision}'}",
        f"Loss:         label smoothing {train.label_smoothing}, class weights {train.class_weight}",
        f"Evaluation:   top-{config.evaluation.top_k}, TTA {config.evaluation.tta}; export TTA "
        f"{config.export.tta}; distribute {config.distribute.strategy}",
    ]
    return "\n".join(lines)
