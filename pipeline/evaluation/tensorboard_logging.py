"""What a run shows in TensorBoard besides Keras' scalars: images, confusion matrices, hparams, text, graph.

Layout under the run's log directory (`RUN/tensorboard/`), next to what `keras.callbacks.TensorBoard`
writes into `train/` and `validation/`:

    ./            hparams session (HParams tab), resolved config (Text tab)
    train/        input_samples/train_augmented (Images), op graph of the forward pass (Graphs),
                  profiler traces under plugins/profile/ (Profile, `ProfileSteps`, when asked for)
    validation/   input_samples/evaluation, confusion_matrix every epoch (Images),
                  per_class_precision/NN_name, per_class_recall/NN_name (Scalars, <= 20 classes)
    test/         epoch_accuracy, epoch_loss, evaluation/* scalars at the last epoch's step,
                  confusion_matrix, evaluation text

Steps are 0-based epochs, like Keras' `epoch_*` scalars, so test points line up with the last epoch.
Distributed runs must add these callbacks on the chief only (the caller decides).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.evaluation import figures

MAX_CLASSES_PER_CLASS_SCALARS = 20
MAX_SAMPLE_IMAGES = 16

# HParams metrics: (tag, sub-run relative to the log directory, display name). Keras writes
# `epoch_<metric>` into train/ and validation/; `write_evaluation_summary` writes test/.
DEFAULT_HPARAMS_METRICS = (
    ("epoch_accuracy", "validation", "validation accuracy"),
    ("epoch_loss", "validation", "validation loss"),
    ("epoch_accuracy", "test", "test accuracy"),
    ("evaluation/top_k_accuracy", "test", "test top-k accuracy"),
    ("epoch_loss", "test", "test loss"),
    ("epoch_accuracy", "train", "train accuracy"),
)


def _writer(log_dir: os.PathLike, run: str = ""):
    return tf.summary.create_file_writer(str(Path(log_dir) / run) if run else str(log_dir))


def _figure_image(figure) -> tf.Tensor:
    """[1, H, W, 4] uint8 RGBA for `tf.summary.image`."""
    return tf.io.decode_png(figures.png_bytes(figure), channels=4)[tf.newaxis]


def tag_name(index: int, class_name: str, num_classes: int) -> str:
    """`03_cat`: label index first (TensorBoard sorts tags as text), characters outside [A-Za-z0-9_.-]
    replaced by `_` (TensorFlow name scopes refuse them)."""
    width = len(str(max(num_classes - 1, 0)))
    return f"{index:0{width}d}_" + re.sub(r"[^A-Za-z0-9_.\-]", "_", str(class_name))


def predict_labelled(model: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N] int64, probabilities [N, C] float32) of `model` over a batched labelled dataset.

    `dataset` yields (images, labels) or (images, labels, weights); labels are integers or one-hot
    (argmax is taken). Batches run through `predict_on_batch` (Keras' compiled predict function),
    keeping labels and predictions paired whatever the dataset's order.
    """
    labels, probabilities = [], []
    for batch in dataset:
        images, batch_labels = batch[0], np.asarray(batch[1])
        probabilities.append(np.asarray(model.predict_on_batch(images), dtype=np.float32))
        labels.append(batch_labels.argmax(axis=-1) if batch_labels.ndim == 2 else batch_labels.reshape(-1))
    return np.concatenate(labels).astype(np.int64), np.concatenate(probabilities)


def _take_images(dataset, count: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels, total = [], [], 0
    for batch in dataset:
        batch_images, batch_labels = np.asarray(batch[0]), np.asarray(batch[1])
        images.append(batch_images[: count - total])
        labels.append((batch_labels.argmax(-1) if batch_labels.ndim == 2 else batch_labels)[: count - total])
        total += len(images[-1])
        if total >= count:
            break
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def write_image_grid(
    log_dir: os.PathLike, run: str, tag: str, *, images, labels, class_names, step: int = 0, title: str | None = None
) -> None:
    """One grid image of `images` [N, H, W, channels] (any range), each captioned with its class name."""
    figure = figures.image_grid_figure(images, [str(class_names[label]) for label in labels], title=title)
    writer = _writer(log_dir, run)
    with writer.as_default():
        tf.summary.image(tag, _figure_image(figure), step=step)
    writer.close()


class InputSamples(keras.callbacks.Callback):
    """Grids of training images after augmentation and of evaluation images, written once per run.

    They are written when the first epoch that begins is epoch 0, so a resumed fit (`initial_epoch`
    > 0, or restored by a backup callback) and later training phases write nothing again.

    Args:
        log_dir: the run's TensorBoard directory.
        class_names: names in label order.
        train_data: batched (images, labels) training pipeline with augmentation. Pass a separate
            instance from the one given to `fit`: drawing a batch from a reshuffling dataset advances
            its seed, which would change the order `fit` then sees.
        eval_data: batched (images, labels) evaluation pipeline (e.g. validation).
        max_images: images per grid.
    """

    def __init__(
        self, log_dir: os.PathLike, *, class_names, train_data=None, eval_data=None, max_images: int = MAX_SAMPLE_IMAGES
    ):
        super().__init__()
        self.log_dir, self.class_names = Path(log_dir), list(class_names)
        self.train_data, self.eval_data, self.max_images = train_data, eval_data, max_images
        self._first_epoch_seen = False

    def on_train_begin(self, logs=None):
        self._first_epoch_seen = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch_seen:
            return
        self._first_epoch_seen = True
        if epoch != 0:
            return
        for data, run, tag, title in (
            (self.train_data, "train", "input_samples/train_augmented", "training images after augmentation"),
            (self.eval_data, "validation", "input_samples/evaluation", "evaluation images"),
        ):
            if data is not None:
                images, labels = _take_images(data, self.max_images)
                write_image_grid(
                    self.log_dir, run, tag, images=images, labels=labels, class_names=self.class_names, title=title
                )


class ValidationConfusion(keras.callbacks.Callback):
    """Every `freq` epochs: the validation confusion matrix as an image, and per-class precision and
    recall scalars when there are at most `MAX_CLASSES_PER_CLASS_SCALARS` classes.

    Costs one extra inference pass over `validation_data` per logged epoch (Keras' own validation
    pass keeps no predictions).

    Args:
        log_dir: the run's TensorBoard directory (writes into its `validation/`).
        validation_data: batched (images, labels) evaluation pipeline of the validation split.
        class_names: names in label order.
        freq: log every `freq` epochs (epoch index divisible by `freq`) and at the last epoch.

    Attributes:
        target: when set, the model that predicts instead of the one being fit (a phase that fits a
            head on cached features must still be judged by the full model on images).
    """

    target = None

    def __init__(self, log_dir: os.PathLike, *, validation_data, class_names, freq: int = 1):
        super().__init__()
        if freq < 1:
            raise ValueError(f"`freq` must be >= 1. Received: freq={freq}")
        self.log_dir, self.validation_data, self.class_names = Path(log_dir), validation_data, list(class_names)
        self.freq = freq
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") == epoch + 1 if self.params else False
        if epoch % self.freq and not last:
            return
        self.log_epoch(epoch)

    def log_epoch(self, epoch: int) -> np.ndarray:
        """Predicts the validation split and writes the epoch's summaries; returns the [C, C] matrix."""
        from sklearn import metrics

        model = self.target if self.target is not None else self.model
        labels, probabilities = predict_labelled(model, self.validation_data)
        predictions = probabilities.argmax(axis=1)
        num_classes = len(self.class_names)
        matrix = metrics.confusion_matrix(labels, predictions, labels=list(range(num_classes)))
        accuracy = float(np.trace(matrix)) / max(int(matrix.sum()), 1)
        figure = figures.confusion_matrix_figure(
            matrix, self.class_names, title=f"Validation, epoch {epoch + 1} (accuracy {accuracy:.4f})"
        )
        if self._writer is None:
            self._writer = _writer(self.log_dir, "validation")
        with self._writer.as_default():
            tf.summary.image("confusion_matrix", _figure_image(figure), step=epoch)
            if num_classes <= MAX_CLASSES_PER_CLASS_SCALARS:
                precision, recall, _, _ = metrics.precision_recall_fscore_support(
                    labels, predictions, labels=list(range(num_classes)), zero_division=0
                )
                for index, name in enumerate(self.class_names):
                    tag = tag_name(index, name, num_classes)
                    tf.summary.scalar(f"per_class_precision/{tag}", float(precision[index]), step=epoch)
                    tf.summary.scalar(f"per_class_recall/{tag}", float(recall[index]), step=epoch)
        self._writer.flush()
        return matrix

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def hparam_value(value):
    """A value TensorBoard's HParams plugin accepts (bool, int, float, str); others become their str()."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_hparams(
    log_dir: os.PathLike, hparams: dict, *, trial_id: str | None = None, metrics=DEFAULT_HPARAMS_METRICS
) -> None:
    """The HParams tab's session of this run: `hparams` with `metrics` read from the sub-runs.

    Args:
        log_dir: the run's TensorBoard directory (the session is its root run).
        hparams: flat {dotted key: value} (e.g. "train.optimizer.learning_rate": 0.001). Values that
            are not bool/int/float/str are written as text.
        trial_id: the name shown for the session (e.g. the run directory's name).
        metrics: (tag, sub-run, display name) triples, e.g. ("epoch_accuracy", "validation", ...).

    No experiment config is written: TensorBoard then infers the table from the sessions it finds, marks
    the hparams whose values differ between runs and shows those first (with a written config it shows the
    first five by name, e.g. dataset.name but not the learning rate that two runs differ in), and takes the
    metrics from the runs' scalars (`metrics` is kept for callers that write a config themselves).
    """
    from tensorboard.plugins.hparams import api as hp

    values = {str(key): hparam_value(value) for key, value in hparams.items()}
    writer = _writer(log_dir)
    with writer.as_default():
        hp.hparams(values, trial_id=trial_id)
    writer.close()


def write_text(log_dir: os.PathLike, run: str, tag: str, markdown: str, *, step: int = 0) -> None:
    """A Markdown text summary (Text tab) in `log_dir/run`."""
    writer = _writer(log_dir, run)
    with writer.as_default():
        tf.summary.text(tag, markdown, step=step)
    writer.close()


def write_config_text(log_dir: os.PathLike, config_yaml: str) -> None:
    """The resolved config as a code block in the root run's Text tab (tag `config`)."""
    write_text(log_dir, "", "config", "\n".join("    " + line for line in config_yaml.splitlines()))


def evaluation_markdown(report: dict, *, loss: float | None = None) -> str:
    """Markdown of an evaluation report (`pipeline.evaluation.report.build_report`): totals and per class."""
    lines = [
        "| metric | value |",
        "| --- | --- |",
        f"| test accuracy | {report['accuracy']:.4f} ({report['num_correct']} / {report['num_examples']}) |",
        f"| top-{report['top_k']} accuracy | {report['top_k_accuracy']:.4f} |",
        f"| balanced accuracy | {report['balanced_accuracy']:.4f} |",
        f"| macro F1 | {report['macro_avg']['f1']:.4f} |",
        f"| expected calibration error ({report['calibration']['bins']} bins) | "
        f"{report['expected_calibration_error']:.4f} |",
    ]
    if loss is not None:
        lines.append(f"| test loss | {loss:.4f} |")
    lines += ["", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {row['class']} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
        for row in report["per_class"]
    ]
    return "\n".join(lines)


def write_evaluation_summary(log_dir: os.PathLike, report: dict, *, step: int, loss: float | None = None) -> None:
    """The test evaluation in the `test/` sub-run: scalars, confusion matrix image and a text table.

    Args:
        log_dir: the run's TensorBoard directory.
        report: from `pipeline.evaluation.report.build_report`.
        step: where the points go; pass the last epoch's index (`epochs_completed - 1`) so they line
            up with the train/validation curves.
        loss: the test loss, when known (Keras' evaluate).

    `epoch_accuracy` and `epoch_loss` share their tags with Keras' scalars, so the test point is on the
    same chart as train and validation.
    """
    writer = _writer(log_dir, "test")
    class_names = [row["class"] for row in report["per_class"]]
    with writer.as_default():
        tf.summary.scalar("epoch_accuracy", report["accuracy"], step=step)
        if loss is not None:
            tf.summary.scalar("epoch_loss", float(loss), step=step)
        for name in ("top_k_accuracy", "balanced_accuracy", "expected_calibration_error"):
            tf.summary.scalar(f"evaluation/{name}", report[name], step=step)
        tf.summary.scalar("evaluation/macro_f1", report["macro_avg"]["f1"], step=step)
        figure = figures.confusion_matrix_figure(
            report["confusion_matrix"], class_names, title=f"Test (accuracy {report['accuracy']:.4f})"
        )
        tf.summary.image("confusion_matrix", _figure_image(figure), step=step)
        tf.summary.text("evaluation", evaluation_markdown(report, loss=loss), step=step)
    writer.close()


def write_op_graph(log_dir: os.PathLike, model: keras.Model, *, run: str = "train") -> None:
    """The op graph of one inference forward pass (Graphs tab), traced with a [None, ...] batch.

    Keras 3's TensorBoard callback writes only a Keras-JSON "conceptual graph" that TensorBoard 2.21
    cannot parse ("Malformed GraphDef"); pass it `write_graph=False` and call this once instead.
    """
    spec = [tf.TensorSpec((None,) + tuple(tensor.shape[1:]), tensor.dtype) for tensor in model.inputs]
    forward = tf.function(lambda *inputs: model(inputs[0] if len(inputs) == 1 else list(inputs), training=False))
    graph = forward.get_concrete_function(*spec).graph
    writer = _writer(log_dir, run)
    with writer.as_default():
        tf.summary.graph(graph)
    writer.close()


def profile_batch_range(steps) -> tuple[int, int] | int:
    """(start, stop) from a [start, stop] pair of training steps (1-based, inclusive, counted from the
    start of each `fit` call), or 0 (no profiling) for None or []. The same form as Keras TensorBoard's
    `profile_batch`.

    Raises:
        ValueError: not two integers with 1 <= start <= stop.
    """
    if steps is None or (isinstance(steps, (list, tuple)) and len(steps) == 0):
        return 0
    if (
        not isinstance(steps, (list, tuple))
        or len(steps) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
        or not 1 <= steps[0] <= steps[1]
    ):
        raise ValueError(
            f"profile steps must be [start, stop] with 1 <= start <= stop (training steps of a fit, "
            f"the first is 1). Received: {steps!r}"
        )
    return int(steps[0]), int(steps[1])


class ProfileSteps(keras.callbacks.Callback):
    """Profiles training steps `start`..`stop` of each `fit` call into `log_dir/train/plugins/profile/`.

    What Keras' `TensorBoard(profile_batch=...)` does, without its side effect: that one also turns on
    graph tracing after the train function is already traced and exports an empty `batch_N` graph,
    which the Graphs tab then offers and fails on ("The graph is empty"). Each profiled step is
    marked with `tf.profiler.experimental.Trace(step_num=...)` so the Profile tab can split step time.

    Args:
        log_dir: the run's TensorBoard directory.
        steps: [start, stop], see `profile_batch_range`; None or [] profiles nothing.
    """

    def __init__(self, log_dir: os.PathLike, *, steps):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.range = profile_batch_range(steps)
        self._step, self._profiling, self._step_trace = 0, False, None

    def on_train_begin(self, logs=None):
        self._step = 0

    def on_train_batch_begin(self, batch, logs=None):
        self._step += 1
        if not self.range:
            return
        if self._step == self.range[0] and not self._profiling:
            tf.profiler.experimental.start(str(self.log_dir / "train"))
            self._profiling = True
        if self._profiling:
            self._step_trace = tf.profiler.experimental.Trace("train", step_num=self._step)
            self._step_trace.__enter__()

    def on_train_batch_end(self, batch, logs=None):
        if self._step_trace is not None:
            self._step_trace.__exit__(None, None, None)
            self._step_trace = None
        if self._profiling and self._step >= self.range[1]:
            self._stop()

    def on_train_end(self, logs=None):
        self._stop()

    def _stop(self):
        if self._profiling:
            tf.profiler.experimental.stop()
            self._profiling = False


def profile_traces(log_dir: os.PathLike) -> list[Path]:
    """Profiler trace files (`*.xplane.pb`) under the log directory, oldest first."""
    return sorted(Path(log_dir).glob("**/plugins/profile/*/*.xplane.pb"), key=lambda path: path.stat().st_mtime)
