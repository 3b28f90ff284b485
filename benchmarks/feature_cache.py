"""Frozen-backbone feature caching: phase 1 of vgg16_hymenoptera with and without `cache_features`.

Both variants train the same thing: VGG16 base frozen, the new head on the hymenoptera photos at 224x224,
no augmentation (caching needs none), RMSprop 1e-4, --epochs epochs, batch 16, validation every epoch,
through `pipeline.run` (checkpoints, resume state and TensorBoard included). The base has random weights
(`weights: null`): ImageNet weights cannot be downloaded here, and they do not change the work done.
Reported per variant: the phase's seconds (feature computation + fit), seconds per epoch, the whole run's
wall time (data check, model build, test evaluation included) and test accuracy; and the speed-up.

    .venv/bin/python -m benchmarks.feature_cache [--epochs 5] [--image-size 224]
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.feature_cache"
EXPERIMENT = "vgg16_hymenoptera"
HEADERS = ["variant", "epochs", "features s", "fit s", "phase s", "s/epoch (fit)", "run wall s", "test acc"]


def run_variant(*, cache: bool, epochs: int, overrides: list[str], run_dir: Path) -> dict:
    from pipeline import experiment  # noqa: F401
    from pipeline import run as train

    phase = (
        f"train.phases=[{{epochs: {epochs}, trainable: none, cache_features: {str(cache).lower()}, "
        f"optimizer: {{name: rmsprop, learning_rate: 1e-4}}}}]"
    )
    config = experiment.load_experiment(EXPERIMENT, [*overrides, f"train.epochs={epochs}", phase])
    messages = []
    start = time.perf_counter()
    metrics = train.train(config, run_dir=run_dir, log=messages.append)
    wall = time.perf_counter() - start
    feature_seconds = 0.0
    for message in messages:
        found = re.search(r"cached backbone features .* in ([0-9.]+) s", message)
        if found:
            feature_seconds = float(found.group(1))
    fit_seconds = metrics["train_seconds"]
    return {
        "features": feature_seconds,
        "fit": fit_seconds,
        "phase": feature_seconds + fit_seconds,
        "per_epoch": fit_seconds / epochs,
        "wall": wall,
        "accuracy": metrics["test"]["accuracy"],
        "train_images": metrics["train_images"],
        "validation_images": metrics["validation_images"],
    }


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.set_defaults(batch_size=16)
    parser.add_argument("--epochs", type=int, default=None, help="phase-1 epochs (default 5, --quick 2)")
    parser.add_argument("--image-size", type=int, default=None, help="input side (default 224, --quick 64)")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 5)
    size = args.image_size or (64 if args.quick else 224)

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-features-") as temporary:
        temporary = Path(temporary)
        overrides = [
            "model.options.weights=null",
            "input.augment={}",
            f"input.image_size=[{size},{size}]",
            f"train.batch_size={args.batch_size}",
            "export.enabled=false",
            "train.verbose=0",
        ]
        if args.synthetic:
            archive = common.write_synthetic_jpeg_archive(temporary / "images.tar.gz", count=96)
            overrides += [
                "dataset.name=folder",
                f"dataset.root={archive}",
                f"dataset.data_dir={temporary / 'data'}",
                "dataset.skip_placeholders=false",
            ]
        for cache in (False, True):
            label = "cached features" if cache else "full model each epoch"
            print(f"{label}: {epochs} epochs at {size}x{size} ...", flush=True)
            results[label] = run_variant(
                cache=cache,
                epochs=epochs,
                overrides=overrides,
                run_dir=temporary / f"run-{'cached' if cache else 'plain'}",
            )
    rows = [
        [label, epochs, r["features"], r["fit"], r["phase"], r["per_epoch"], r["wall"], f"{r['accuracy']:.4f}"]
        for label, r in results.items()
    ]
    plain, cached = results["full model each epoch"], results["cached features"]
    speedup = plain["phase"] / cached["phase"] if cached["phase"] else float("inf")
    table = common.markdown_table(HEADERS, rows)
    title = f"Feature caching: phase 1 of {EXPERIMENT} (frozen VGG16 base, {size}x{size}, batch {args.batch_size})"
    notes = (
        f"Phase speed-up (phase s, full / cached): **{speedup:.1f}x** over {epochs} epochs; "
        f"{plain['train_images']} training and {plain['validation_images']} validation images. The cached "
        f"variant pays one forward pass of the base over both splits ('features s'), then each epoch "
        f"trains the head only, so the gap grows with the epoch count. Base with random weights "
        f"(`weights: null`): the ImageNet file cannot be downloaded here, and it changes no cost. "
        f"No augmentation in either variant (caching requires none)."
    )
    common.finish(
        args,
        title=title,
        module=MODULE,
        argv=argv,
        table=table,
        notes=notes,
        info=info,
        printed_extra=f"phase speed-up: {speedup:.1f}x",
    )
    return {"speedup": speedup, "variants": results}


if __name__ == "__main__":
    main()
