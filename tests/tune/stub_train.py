"""A stand-in for `python -m pipeline train CONFIG --run-dir DIR` in the tuner's fast tests: no TensorFlow,
a metric computed from the trial's values, the same files and resume behaviour as a run.

val_accuracy per epoch = quality * epoch / epochs, with quality best at learning rate 1e-3 and batch 256,
and hopeless (0.05) from learning rate 0.5 up. STUB_EPOCH_SECONDS (default 0.02) is an epoch's duration;
STUB_FAIL=1 makes every run fail the way `train` reports a user error (exit 2, an `error:` line);
STUB_HOLD=NNNN:E makes run NNNN's first start wait after E epochs (to be killed there).
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import yaml


def quality(learning_rate: float, batch_size: int) -> float:
    if learning_rate >= 0.5:
        return 0.05
    return round((1.0 / (1.0 + abs(math.log10(learning_rate) + 3.0))) * (1.0 if batch_size == 256 else 0.9), 6)


def main(argv) -> int:
    config_path, run_dir = Path(argv[1]), Path(argv[argv.index("--run-dir") + 1])
    text = config_path.read_text()
    config = yaml.safe_load(text)
    if os.environ.get("STUB_FAIL"):
        print("error: training diverged: the loss became nan in epoch 1 (stub)")
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "metrics.json").exists():
        return 0
    if not (run_dir / "config.yaml").exists():
        (run_dir / "config.yaml").write_text(text)
    history = run_dir / "history.csv"
    done = max(0, len(history.read_text().splitlines()) - 1) if history.exists() else 0
    (run_dir / "stub.pid").write_text(str(os.getpid()))
    with open(run_dir / "starts.txt", "a") as starts:
        starts.write(f"{done}\n")
    if not history.exists():
        history.write_text("epoch,val_accuracy\n")
    epochs = config["train"]["epochs"]
    value = quality(config["train"]["optimizer"]["learning_rate"], config["train"]["batch_size"])
    hold = os.environ.get("STUB_HOLD", "")  # "RUN_NAME:EPOCHS": that run's first start waits there to be killed
    for epoch in range(done, epochs):
        if hold == f"{run_dir.name}:{epoch}" and done == 0:
            time.sleep(60)
        time.sleep(float(os.environ.get("STUB_EPOCH_SECONDS", "0.02")))
        with open(history, "a") as handle:
            handle.write(f"{epoch},{value * (epoch + 1) / epochs:.6f}\n")
    (run_dir / "metrics.json").write_text(json.dumps({"epochs_completed": epochs}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:  # as `python -m pipeline train` ends on Ctrl-C
        sys.exit(130)
