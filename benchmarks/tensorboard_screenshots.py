"""Looks at TensorBoard as a user does: serves a log directory and takes headless Chromium screenshots.

TensorBoard is started on 127.0.0.1 at a free port (never another address), each dashboard is loaded
by Debian's `chromium` (`apt-get install -y chromium`) with a virtual-time budget so the page's
JavaScript finishes loading, and the PNGs are written to --out. TensorBoard is stopped at the end.

`--demo DIR` first writes two tiny runs into DIR (synthetic images, two learning rates) with everything
`pipeline.evaluation.tensorboard_logging` offers (input samples, validation confusion matrices, per-class scalars,
hparams, config text, op graph, a profiler trace, the test evaluation), then serves DIR.

    .venv/bin/python benchmarks/tensorboard_screenshots.py LOGDIR [--out DIR] [--dashboards scalars images ...]
    .venv/bin/python benchmarks/tensorboard_screenshots.py --demo /tmp/tb-demo --out /tmp/tb-shots
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Screenshot name -> URL fragment. "profile" is left out by default: XProf's page loads Google Charts
# from www.gstatic.com before it draws anything, so it stays blank offline; `check_profile` asks the
# plugin's data API instead.
DASHBOARDS = {
    "scalars": "scalars&tagFilter=epoch_",
    "class_scalars": "scalars&tagFilter=per_class_",
    "images": "images&tagFilter=confusion",
    "samples": "images&tagFilter=input_samples",
    "hparams": "hparams",
    "graphs": "graphs",
    "text": "text",
    "profile": "profile",
}
DEFAULT_DASHBOARDS = ["scalars", "class_scalars", "images", "samples", "hparams", "graphs", "text"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_tensorboard(logdir: Path, port: int, *, timeout: float = 90.0) -> subprocess.Popen:
    """TensorBoard on 127.0.0.1:port; returns once its front page answers (or raises after `timeout`)."""
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--reload_interval",
        "2",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"TensorBoard exited with code {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"TensorBoard did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


def check_profile(port: int) -> str:
    """What the Profile plugin serves for the first run with a trace: its tools, and trace events."""
    import gzip
    import json

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/profile/{path}", timeout=60) as response:
            body = response.read()
            return json.loads(gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body)

    runs = get("runs")
    if not runs:
        return "profile: no profiler trace under the log directory"
    run = urllib.parse.quote(runs[0])
    tools = get(f"run_tools?run={run}")
    host = get(f"hosts?run={run}&tag=trace_viewer%40")[0]["hostname"]
    trace = get(f"data?run={run}&tag=trace_viewer%40&host={urllib.parse.quote(host)}")
    return (
        f"profile: {len(runs)} trace(s); {runs[0]}: tools {', '.join(tools)}; trace viewer "
        f"{len(trace.get('traceEvents', []))} events"
    )


def screenshot(url: str, out_png: Path, *, width: int, height: int, budget_ms: int, chromium: str) -> float:
    """One headless Chromium screenshot of `url`; returns the seconds it took."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out_png}",
            url,
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------------
# Demo runs
# --------------------------------------------------------------------------------------------------

DEMO_CLASSES = ["red", "green", "blue", "yellow"]
DEMO_COLOURS = [(230, 40, 40), (40, 200, 40), (50, 70, 230), (230, 220, 40)]


def _demo_images(count: int, seed: int):
    """32x32 RGB uint8 noise with a square of the class' colour at a random place (flips keep the label)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(DEMO_CLASSES), count)
    images = rng.integers(0, 120, (count, 32, 32, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        top, left = rng.integers(0, 22, 2)
        colour = np.clip(np.array(DEMO_COLOURS[label]) + rng.integers(-40, 41, 3), 0, 255)
        images[index, top : top + 10, left : left + 10] = colour.astype(np.uint8)
    return images, labels


def make_demo_runs(root: Path, *, epochs: int = 5) -> list[Path]:
    """Two tiny runs (learning rates 0.003 and 0.0003) with every summary of `pipeline.evaluation.tensorboard_logging`."""
    import keras
    import tensorflow as tf

    from pipeline.evaluation import report as evaluation_report
    from pipeline.evaluation import tensorboard_logging as tb_logging

    train_x, train_y = _demo_images(768, seed=1)
    test_x, test_y = _demo_images(256, seed=2)
    one_hot = lambda labels: tf.one_hot(labels, len(DEMO_CLASSES))  # noqa: E731

    def pipeline(images, labels, *, training):
        data = tf.data.Dataset.from_tensor_slices((images.astype("float32") / 255.0, one_hot(labels)))
        if training:  # flips are the "augmentation" the samples grid should show
            data = data.shuffle(len(images), seed=0).map(lambda x, y: (tf.image.random_flip_left_right(x), y))
        return data.batch(64)

    run_dirs = []
    for learning_rate in (0.003, 0.0003):
        keras.utils.set_random_seed(0)
        log_dir = root / f"demo_lr{learning_rate}" / "tensorboard"
        inputs = keras.Input((32, 32, 3), name="images")
        hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
        hidden = keras.layers.MaxPooling2D(name="pool1")(hidden)
        hidden = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(hidden)
        hidden = keras.layers.GlobalAveragePooling2D(name="pool2")(hidden)
        outputs = keras.layers.Dense(len(DEMO_CLASSES), activation="softmax", name="classifier")(hidden)
        model = keras.Model(inputs, outputs, name="demo_cnn")
        model.compile(keras.optimizers.Adam(learning_rate), "categorical_crossentropy", metrics=["accuracy"])
        hparams = {
            "model.name": "demo_cnn",
            "train.optimizer.learning_rate": learning_rate,
            "train.batch_size": 64,
            "train.epochs": epochs,
        }
        tb_logging.write_hparams(log_dir, hparams, trial_id=log_dir.parent.name)
        tb_logging.write_config_text(log_dir, "\n".join(f"{key}: {value}" for key, value in hparams.items()))
        tb_logging.write_op_graph(log_dir, model)
        callbacks = [
            keras.callbacks.TensorBoard(str(log_dir), write_graph=False),
            tb_logging.ProfileSteps(log_dir, steps=[3, 5]),
            tb_logging.InputSamples(
                log_dir,
                class_names=DEMO_CLASSES,
                train_data=pipeline(train_x, train_y, training=True),
                eval_data=pipeline(test_x, test_y, training=False),
            ),
            tb_logging.ValidationConfusion(
                log_dir, validation_data=pipeline(test_x[:128], test_y[:128], training=False), class_names=DEMO_CLASSES
            ),
        ]
        model.fit(
            pipeline(train_x, train_y, training=True),
            epochs=epochs,
            verbose=0,
            callbacks=callbacks,
            validation_data=pipeline(test_x[:128], test_y[:128], training=False),
        )
        labels, probabilities = tb_logging.predict_labelled(model, pipeline(test_x, test_y, training=False))
        report = evaluation_report.build_report(
            labels=labels, probabilities=probabilities, class_names=DEMO_CLASSES, top_k=2
        )
        loss = model.evaluate(pipeline(test_x, test_y, training=False), verbose=0, return_dict=True)["loss"]
        tb_logging.write_evaluation_summary(log_dir, report, step=epochs - 1, loss=loss)
        print(
            f"demo run {log_dir.parent}: test accuracy {report['accuracy']:.4f}, "
            f"profiler traces {len(tb_logging.profile_traces(log_dir))}"
        )
        run_dirs.append(log_dir.parent)
    return run_dirs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "logdir", nargs="?", type=Path, help="TensorBoard log directory (e.g. runs/ or RUN/tensorboard)"
    )
    parser.add_argument("--demo", type=Path, metavar="DIR", help="write two tiny demo runs into DIR and serve it")
    parser.add_argument("--out", type=Path, default=Path("tensorboard_screenshots"), help="folder for the PNGs")
    parser.add_argument("--dashboards", nargs="+", choices=list(DASHBOARDS), default=DEFAULT_DASHBOARDS)
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1100), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--budget-ms", type=int, default=20000, help="Chromium virtual-time budget per page")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args(argv)
    if (args.logdir is None) == (args.demo is None):
        parser.error("give a LOGDIR or --demo DIR (one of them)")
    if not shutil.which(args.chromium):
        parser.error(f"{args.chromium!r} not found: apt-get install -y chromium")
    logdir = args.logdir
    if args.demo is not None:
        make_demo_runs(args.demo)
        logdir = args.demo
    if not logdir.is_dir():
        parser.error(f"{logdir}: not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_tensorboard(logdir, port)
    try:
        for dashboard in args.dashboards:
            out_png = args.out / f"{dashboard}.png"
            seconds = screenshot(
                f"http://127.0.0.1:{port}/#{DASHBOARDS[dashboard]}",
                out_png,
                width=args.size[0],
                height=args.size[1],
                budget_ms=args.budget_ms,
                chromium=args.chromium,
            )
            print(f"{dashboard:13s} {out_png} {out_png.stat().st_size / 1024:.0f} KiB in {seconds:.1f} s")
        print(check_profile(port))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
