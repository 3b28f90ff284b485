"""Transfer from our own pretraining: hymenoptera_transfer from a checkpoint vs from random init.

ImageNet weights cannot be downloaded here, so the transfer demonstrated is one this pipeline makes itself:
`cifar10_mobilenet_pretrain` trains MobileNetV2 on CIFAR-10; this script fine-tunes `hymenoptera_transfer`
(ants vs bees, 64x64, two phases: head on cached features, then everything) from that run's checkpoint and,
with the same recipe and seeds, from random weights. Each seed changes the validation split, the
shuffling, the augmentation and the head's initialisation. Reported: test accuracy (the photos' val/
folder, 153 images) of each run's best checkpoint, per seed and the mean.

    benchmarks/train_experiments.sh cifar10_mobilenet_pretrain     # once, ~30 min on 2 cores
    .venv/bin/python -m benchmarks.transfer --weights runs/cifar10_mobilenet_pretrain/<time>/checkpoints/best.keras
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.transfer"
EXPERIMENT = "hymenoptera_transfer"
HEADERS = ["weights", "seed", "test acc", "best val acc", "phase-1 val acc (head only)", "train acc (last)", "wall s"]


def run(weights: str | None, seed: int, run_dir: Path, overrides: list[str]) -> dict:
    import csv

    from pipeline import experiment  # noqa: F401
    from pipeline import run as train

    config = experiment.load_experiment(
        EXPERIMENT,
        [
            *overrides,
            f"seed={seed}",
            "train.verbose=0",
            "export.enabled=false",
            f"model.options.weights={weights or 'null'}",
        ],
    )
    start = time.perf_counter()
    metrics = train.train(config, run_dir=run_dir, log=lambda *_: None)
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    first_phase = config.train.phases[0].epochs if config.train.phases else len(rows)
    return {
        "test": metrics["test"]["accuracy"],
        "best_val": metrics["best_validation"]["val_accuracy"],
        "phase1_val": max(float(r["val_accuracy"]) for r in rows[:first_phase]),
        "train_last": float(rows[-1]["accuracy"]),
        "wall": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a .keras checkpoint of a cifar10_mobilenet_pretrain run")
    parser.add_argument("--seeds", default="42,1,2", help="comma-separated seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    overrides = list(args.set)
    if args.quick:
        seeds = seeds[:1]
        overrides += [
            "train.epochs=2",
            "train.phases=[{epochs: 1, trainable: none, cache_features: true}, {epochs: 1, trainable: all}]",
        ]
    weights = Path(args.weights).expanduser()
    if not weights.is_file():
        raise SystemExit(f"--weights {weights}: no such file (train cifar10_mobilenet_pretrain first)")

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    results = {"pretrained": [], "random init": []}
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as temporary:
        for seed in seeds:
            for label, source in (("pretrained", str(weights.resolve())), ("random init", None)):
                print(f"{label}, seed {seed} ...", flush=True)
                results[label].append((seed, run(source, seed, Path(temporary) / f"{label[0]}-{seed}", overrides)))
    rows = []
    for label, runs in results.items():
        for seed, r in runs:
            rows.append(
                [
                    label,
                    seed,
                    f"{r['test']:.4f}",
                    f"{r['best_val']:.4f}",
                    f"{r['phase1_val']:.4f}",
                    f"{r['train_last']:.4f}",
                    r["wall"],
                ]
            )
    means = {label: statistics.mean(r["test"] for _, r in runs) for label, runs in results.items()}
    for label, runs in results.items():
        rows.append(
            [
                f"**{label}: mean**",
                "",
                f"{means[label]:.4f}",
                f"{statistics.mean(r['best_val'] for _, r in runs):.4f}",
                f"{statistics.mean(r['phase1_val'] for _, r in runs):.4f}",
                f"{statistics.mean(r['train_last'] for _, r in runs):.4f}",
                "",
            ]
        )
    table = common.markdown_table(HEADERS, rows)
    title = f"Transfer: {EXPERIMENT} from a cifar10_mobilenet_pretrain checkpoint vs random init"
    notes = (
        f"Weights: `{args.weights}`. Same recipe, seeds {', '.join(map(str, seeds))}; mean test accuracy "
        f"pretrained {means['pretrained']:.4f} vs random init {means['random init']:.4f} "
        f"({100 * (means['pretrained'] - means['random init']):+.1f} points). 208 training / 36 validation "
        f"images (seeded split of train/), 153 test images (val/)."
    )
    common.finish(args, title=title, module=MODULE, argv=argv, table=table, notes=notes, info=info)
    return {"means": means, "runs": results}


if __name__ == "__main__":
    main()
