"""Data at any size (issue 13): peak memory and images/s of training on phone-size photos.

Every measurement runs in a fresh process, which reports its own peak RSS (VmHWM, `own_peak_rss_mib`).
The photos are generated: 4000x3000 JPEG quality 90 of smooth random content (a random 24x32
grid upscaled), two classes; `--quick` uses 1600x1200 and few files and records nothing.

1. The issue's case: `python -m pipeline train tiny` on a folder of N photos (default 120) at
   input.image_size [64, 64], 2 epochs, default settings (`input.cache: auto`); then 2N photos (the growth
   must stay within the extra photos' resized footprint), and N small 400x300 JPEGs for reference.
2. Input-pipeline images/s at 224x224, batches of 32, 2 epochs of the training split, same files, same run.
   With the random resized crop (input.crop.mode random_resized, scale 0.08-1, ratio 3/4-4/3) and a flip:
     A    our folder path, `Splits.dataset("train")`, input.cache auto;
     B    our TFRecord path (`data shard` output, records read by id), input.cache auto;
     C    `keras.utils.image_dataset_from_directory(image_size=the working size our crop keeps: shorter
          side 224 / sqrt(0.08) = 792)` + the same `pipeline.data.batch_augment.random_resized_crop` and a flip;
   at 1x, 2x, 4x the files (default 40, 80, 160: the scaling rows). At 2x also:
     A0   A with input.cache none (decode every epoch, nothing kept);
     B0   TFRecords streamed (interleaved shard reads, input.shuffle_buffer 64, nothing cached);
     As   A with input.crop.mode square (a random square, working size 224 on the shorter side);
     Cs   Keras at image_size (224, 299) (the same working size) + a random 224x224 crop and a flip.
   The machine may be shared: the variants run interleaved (order rotated each round) for `--rounds`
   rounds; medians of rounds and of per-round ratios (A, B, A0, B0 over C; As over Cs) are shown.
3. The pre-training image scan (`image_files.scan_images`): files/s uncached and cached on `--scan-files`
   ImageNet-like 500x375 JPEGs (photo-like noise, ~90 KiB), and what 1.28M files would take at those
   rates; and uncached on the 1x phone photos (full-size decodes).

    .venv/bin/python -m benchmarks.data_scale [--photos 120] [--scale-base 40] [--rounds 2]
        [--scan-files 2000] [--variants A,B,C,A0,B0,As,Cs] [--work-dir DIR] [--quick] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.data_scale"
SIZE, CROP_SCALE, CROP_RATIO = 224, (0.08, 1.0), (0.75, 1.3333)
SCALED, AT_2X = ("A", "B", "C"), ("A0", "B0", "As", "Cs")  # variants at every scale, and at 2x only
VARIANTS = SCALED + AT_2X
LABELS = {
    "A": "A folder (ours, cache auto)",
    "B": "B TFRecord by id (ours, cache auto)",
    "C": "C keras image_dataset_from_directory",
    "A0": "A0 folder (ours, cache none)",
    "B0": "B0 TFRecord streamed (ours, no cache)",
    "As": "As folder, square crop (ours, cache auto)",
    "Cs": "Cs keras, square crop",
}
BASELINE = {"A": "C", "B": "C", "A0": "C", "B0": "C", "As": "Cs"}  # ratio numerator -> denominator
IMAGENET_FILES = 1_281_167
GOAL_RSS_MIB, GOAL_RATIO = 1536, 1.5


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def write_photos(root: Path, count: int, *, size: tuple[int, int], seed: int = 0, noise: float = 0.0) -> Path:
    """root/{a,b}/pNNNN.jpg: `count` JPEGs (quality 90) of (height, width) `size`, alternating classes;
    files already there are kept (a --work-dir is reused). Smooth content: a random 24x32 grid, upscaled
    bicubically to a quarter of the size, then 4x by pixel repetition (cheap to make; JPEG codes it like
    a photo's smooth areas); `noise` adds Gaussian noise of that std (pixel units), for photo-like texture
    and file sizes."""
    import numpy as np
    from PIL import Image

    height, width = size
    for index in range(count):
        path = root / "ab"[index % 2] / f"p{index:04d}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        grid = np.random.default_rng([seed, index]).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        quarter = Image.fromarray(grid).resize((max(width // 4, 1), max(height // 4, 1)), Image.BICUBIC)
        image = quarter.resize((width, height), Image.NEAREST)
        if noise:
            grain = np.random.default_rng([seed, index, 1]).normal(0, noise, (height, width, 3))
            pixels = np.asarray(image, np.float32) + grain
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(path, "JPEG", quality=90)
    return root


def linked_subset(source: Path, target: Path, count: int) -> Path:
    """target/{a,b}/: hard links to the first `count` photos of `source` (same files, another folder)."""
    for index in range(count):
        relative = Path("ab"[index % 2]) / f"p{index:04d}.jpg"
        if not (target / relative).exists():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(source / relative, target / relative)
    return target


def disk_mib(root: Path) -> float:
    return sum(path.stat().st_size for path in root.rglob("*.jpg")) / 2**20


# --------------------------------------------------------------------------------------------------
# Fresh processes
# --------------------------------------------------------------------------------------------------


def own_peak_rss_mib() -> float:
    """This process's peak resident set size since it started, MiB: VmHWM in /proc/self/status.

    Not ru_maxrss (`common.peak_rss_mib`): Linux carries the spawning parent's peak RSS into a child's
    ru_maxrss across fork and exec (exec_mmap keeps the larger of the two), so every child of this
    benchmark, whose process holds TensorFlow and a scan, would report at least the parent's peak.
    Falls back to ru_maxrss where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return common.peak_rss_mib()


def run_process(command: list[str], log: Path) -> dict:
    """Runs a child to its end; returns its `RESULT {json}` line (with its own peak_rss_mib) and wall_s.
    Raises SystemExit with the log's tail on failure."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=common.PROJECT_ROOT).returncode
    text = log.read_text(errors="replace")
    results = [line[len("RESULT ") :] for line in text.splitlines() if line.startswith("RESULT ")]
    if code or not results:
        tail = "\n".join(text.splitlines()[-25:])
        raise SystemExit(f"{' '.join(command)} failed (exit {code}); {log}:\n{tail}")
    return dict(json.loads(results[-1]), wall_s=time.perf_counter() - started)


def child(spec: dict, work: Path, name: str) -> dict:
    return run_process([sys.executable, "-m", MODULE, "--child", json.dumps(spec)], work / "logs" / f"{name}.log")


def command(argv: list[str], work: Path, name: str) -> dict:
    """`python -m pipeline ARGV` in a child process that reports its peak RSS."""
    return child({"kind": "command", "argv": argv}, work, name)


def _config(spec: dict):
    """Our pipeline's config for a child: 224x224, random resized crop, flip, 2% test and validation."""
    from pipeline import config as config_lib

    variant = spec.get("variant", "A")
    return config_lib.from_dict(
        {
            "name": "data_scale",
            "seed": 0,
            "dataset": {
                "name": "tfrecord" if variant.startswith("B") else "folder",
                "root": spec["shards" if variant.startswith("B") else "root"],
                "data_dir": spec["data_dir"],
                "test_split": 0.02,
                "validation_split": 0.02,
            },
            "input": {
                "image_size": [SIZE, SIZE],
                "channels": 3,
                "crop": {"mode": "square"}
                if variant == "As"
                else {"mode": "random_resized", "scale": list(CROP_SCALE), "ratio": list(CROP_RATIO)},
                "augment": {"horizontal_flip": True},
                "cache": "none" if variant in ("A0", "B0") else "auto",
                "shuffle_buffer": 64 if variant == "B0" else None,
            },
            "model": {"name": "tiny"},
            "train": {"batch_size": spec["batch_size"]},
        }
    )


def _keras_dataset(spec: dict):
    """C (Cs): Keras' folder loader at the working size our random resized (square) crop keeps for these
    4:3 files, then that crop and a flip per image, batched."""
    import keras
    import tensorflow as tf

    from pipeline.data import batch_augment as augment
    from pipeline.data import decode

    factor = 1.0 if spec["variant"] == "Cs" else CROP_SCALE[0] ** -0.5
    height, width = (
        int(v)
        for v in decode.working_size(
            spec["file_height"], spec["file_width"], image_size=(SIZE, SIZE), crop="shorter_side", factor=factor
        )[:2]
    )
    dataset = keras.utils.image_dataset_from_directory(
        spec["root"], label_mode="categorical", batch_size=None, image_size=(height, width), shuffle=True, seed=0
    )
    seeds = tf.data.Dataset.random(seed=1, rerandomize_each_iteration=True).batch(2)

    def crop(element, seed):
        if spec["variant"] == "Cs":
            image = tf.image.stateless_random_crop(element[0], [SIZE, SIZE, 3], seed=seed)
        else:
            image = augment.random_resized_crop(element[0], size=SIZE, scale=CROP_SCALE, ratio=CROP_RATIO, seed=seed)
        return tf.image.stateless_random_flip_left_right(image, seed + 1), element[1]

    dataset = tf.data.Dataset.zip(dataset.take(spec["count"]), seeds)
    return dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE).batch(spec["batch_size"]).prefetch(tf.data.AUTOTUNE)


def run_child(spec: dict) -> dict:
    """One measurement in this (fresh) process; see the module docstring. Clocks start after TensorFlow's
    start-up (import and first op, ~5 s), which is not what they measure."""
    if spec["kind"] == "command":  # as `python -m pipeline ARGV` (TensorFlow not imported before it)
        from pipeline import cli

        code = cli.main(spec["argv"])
        if code:
            raise SystemExit(code)
        return {}
    import tensorflow as tf

    tf.io.decode_jpeg(tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)))
    if spec["kind"] == "scan":
        from pipeline.data import image_files

        paths = image_files.find_files(spec["root"])
        started = time.perf_counter()
        checks = image_files.scan_images(paths, cache_dir=spec["cache_dir"])
        return {"files": len(paths), "seconds": time.perf_counter() - started, "bad": sum(not c.ok for c in checks)}
    from pipeline.data import splits as splits_lib

    started = time.perf_counter()
    if spec["variant"].startswith("C"):
        dataset = _keras_dataset(spec)
    else:
        config = _config(spec)
        splits = splits_lib.Splits.from_config(config, log=lambda message: None)
        dataset = splits.dataset("train", training=True)
    setup = time.perf_counter() - started
    seconds, images = [], []
    for _ in range(spec["epochs"]):
        started, count = time.perf_counter(), 0
        for batch in dataset:
            count += int(batch[0].shape[0])
        seconds.append(time.perf_counter() - started)
        images.append(count)
    return {"seconds": seconds, "images": images, "setup_seconds": setup}


def prepare(spec: dict) -> dict:
    """The pre-training check of a scale's photos, uncached, in this process (TensorFlow is already up):
    times it, fills the scan cache the variants' processes then read, and returns the split sizes and the
    working-size bytes `input.cache: auto` weighs (random resized and square crops)."""
    from pipeline.data import splits as splits_lib
    from pipeline.data.transform import EvalTransform

    started = time.perf_counter()
    config = _config(spec)
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    seconds = time.perf_counter() - started
    sizes = [splits.image_sizes[str(path)] for path in splits.train[0]]
    return {
        "train": len(splits.train[1]),
        "check_seconds": seconds,
        "files": sum(len(getattr(splits, name)[1]) for name in ("train", "validation", "test")),
        "working_mib": {
            crop: splits_lib.estimate_working_bytes(
                sizes, splits.sized(EvalTransform.from_input_section(_config(dict(spec, variant=variant)).input))
            )
            / 2**20
            for crop, variant in (("random_resized", "A"), ("square", "As"))
        },
    }


# --------------------------------------------------------------------------------------------------
# The three parts
# --------------------------------------------------------------------------------------------------


def issue_case(args, work: Path, photos: Path) -> tuple[str, str]:
    """`python -m pipeline train tiny` at 64x64 on N and 2N photos, and N small ones: peak RSS."""
    from pipeline.data import splits as splits_lib
    from pipeline.data.transform import EvalTransform

    small = write_photos(work / "small", args.photos, size=(300, 400), seed=1)
    cases = [
        (
            f"{args.photos} photos {args.photo_size[1]}x{args.photo_size[0]}",
            linked_subset(photos, work / f"phone_{args.photos}", args.photos),
            args.photos,
        ),
        (
            f"{2 * args.photos} photos {args.photo_size[1]}x{args.photo_size[0]}",
            linked_subset(photos, work / f"phone_{2 * args.photos}", 2 * args.photos),
            2 * args.photos,
        ),
        (f"{args.photos} small JPEGs 400x300", small, args.photos),
    ]
    rows, rss = [], {}
    for name, root, count in cases:
        run_dir, data_dir = work / "runs" / root.name, work / "data_train" / root.name
        for stale in (run_dir, data_dir):  # a reused --work-dir: the run and its scan start afresh
            shutil.rmtree(stale, ignore_errors=True)
        overrides = [
            "dataset.name=folder",
            f"dataset.root={root}",
            "input.image_size=[64,64]",
            "train.epochs=2",
            f"dataset.data_dir={data_dir}",
        ]
        result = command(
            ["train", "tiny", "--run-dir", str(run_dir)] + [p for o in overrides for p in ("--set", o)],
            work,
            f"train_{root.name}",
        )
        log = (work / "logs" / f"train_{root.name}.log").read_text(errors="replace")
        chosen = next((line.strip() for line in log.splitlines() if "input.cache auto:" in line), "n/a")
        rss[root.name] = result["peak_rss_mib"]
        rows.append(
            [
                name,
                count,
                common.fmt(disk_mib(root), 0),
                common.fmt(result["peak_rss_mib"], 0),
                "yes" if result["peak_rss_mib"] <= GOAL_RSS_MIB else "no",
                common.fmt(result["wall_s"], 0),
                chosen.split(" (")[0].replace("input.cache auto: ", ""),
            ]
        )
    # What the extra photos add at the training resolution: their working-size images (64 x 85 x 3 for
    # 4:3 photos, crop none), a float32 64x64x3 evaluation copy each, and their float32 64x64x3 place in
    # the training batch (tiny's batch_size 256 holds the whole split). Every photo is counted in every
    # role: an upper bound. The model's activations for the larger batch are not counted.
    extra = args.photos
    working = splits_lib.estimate_working_bytes(
        [tuple(args.photo_size)] * extra, EvalTransform(image_size=(64, 64), channels=3)
    )
    footprint = (working + 2 * 4 * 64 * 64 * 3 * extra) / 2**20
    growth = rss[f"phone_{2 * args.photos}"] - rss[f"phone_{args.photos}"]
    table = common.markdown_table(
        [
            "folder",
            "files",
            "MiB on disk",
            "peak RSS MiB",
            f"<= {GOAL_RSS_MIB} MiB",
            "wall s",
            "input.cache auto chose",
        ],
        rows,
    )
    note = (
        f"RSS growth from {args.photos} to {2 * args.photos} photos: {growth:+.0f} MiB; the extra photos' "
        f"resized footprint (each at 64x85x3 uint8 working size, plus 64x64x3 float32 in evaluation and "
        f"in the one training batch, an upper bound): {footprint:.1f} MiB; growth within it: "
        f"{'yes' if growth <= footprint else 'no'}."
    )
    return table, note


def throughput(args, work: Path, photos: Path) -> tuple[str, str, dict]:
    """Variants x scales x rounds, interleaved; returns (table, ratio table, what `prepare` measured)."""
    scales = [("1x", args.scale_base), ("2x", 2 * args.scale_base), ("4x", 4 * args.scale_base)]
    if args.quick:
        scales = scales[1:2]
    raw, prepared, rows, ratio_rows = {}, {}, [], []
    common_spec = {
        "batch_size": args.batch_size,
        "epochs": 2,
        "file_height": args.photo_size[0],
        "file_width": args.photo_size[1],
    }
    for scale, count in scales:
        variants = [v for v in args.variants if v in SCALED or scale == "2x"]
        root = linked_subset(photos, work / f"scale_{count}", count)
        shards = work / f"shards_{count}"
        spec = dict(common_spec, root=str(root), shards=str(shards), data_dir=str(work / f"data_{count}"))
        shutil.rmtree(spec["data_dir"], ignore_errors=True)  # `prepare` times the scan uncached
        prepared[scale] = prepare(spec)
        if any(v.startswith("B") for v in variants):
            shutil.rmtree(shards, ignore_errors=True)
            prepared[scale]["shard"] = command(
                ["data", "shard", str(root), "--out", str(shards)], work, f"shard_{count}"
            )
        spec["count"] = prepared[scale]["train"]
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                result = child(dict(spec, kind="pipeline", variant=variant), work, f"{variant}_{count}_{round_index}")
                raw.setdefault((scale, variant), []).append(result)
                print(
                    f"  {scale} {variant} round {round_index + 1}: {sum(result['images'])} images in "
                    f"{sum(result['seconds']):.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
        for variant in variants:
            results = raw[scale, variant]
            speeds = [[r["images"][e] / r["seconds"][e] for r in results] for e in (0, 1)]
            cached = (
                prepared[scale]["working_mib"]["square" if variant == "As" else "random_resized"]
                if variant in ("A", "B", "As")
                else None
            )
            rows.append(
                [
                    scale,
                    results[0]["images"][0],
                    LABELS[variant],
                    common.fmt(common.median([r["setup_seconds"] for r in results]), 1),
                    common.fmt(common.median(speeds[0]), 1),
                    common.fmt(common.median(speeds[1]), 1),
                    common.fmt(common.median([sum(r["seconds"]) for r in results]), 1),
                    common.fmt(common.median([r["peak_rss_mib"] for r in results]), 0),
                    "-" if cached is None else common.fmt(cached, 0),
                ]
            )
        for variant in variants:
            baseline = BASELINE.get(variant)
            if baseline not in variants:
                continue
            pairs = list(zip(raw[scale, variant], raw[scale, baseline]))
            ratios = [
                [m["images"][e] / m["seconds"][e] / (t["images"][e] / t["seconds"][e]) for m, t in pairs]
                for e in (0, 1)
            ]
            both = [sum(t["seconds"]) / sum(m["seconds"]) for m, t in pairs]
            first = common.median(ratios[0])
            ratio_rows.append(
                [
                    scale,
                    f"{variant}/{baseline}",
                    common.fmt(first, 2),
                    common.fmt(common.median(ratios[1]), 2),
                    common.fmt(common.median(both), 2),
                    "yes" if first >= GOAL_RATIO else "no",
                ]
            )
    table = common.markdown_table(
        [
            "scale",
            "train images",
            "variant",
            "setup s",
            "epoch 1 images/s",
            "epoch 2 images/s",
            "2 epochs s",
            "peak RSS MiB",
            "cached MiB",
        ],
        rows,
    )
    ratios = common.markdown_table(
        ["scale", "ratio", "epoch 1", "epoch 2", "2 epochs", f"epoch 1 >= {GOAL_RATIO}"], ratio_rows
    )
    return table, ratios, prepared


def scan(args, work: Path, photos: Path) -> str:
    """scan_images files/s on ImageNet-like files, uncached then cached, with the 1.28M estimate, and on
    phone photos (`photos`), uncached: full-size decodes, what the training runs' peak RSS holds."""
    small = write_photos(work / "scan_files", args.scan_files, size=(375, 500), seed=2, noise=12.0)
    folders = [
        ("small", small, "JPEGs 500x375", ("uncached", "cached")),
        ("photos", photos, f"photos {args.photo_size[1]}x{args.photo_size[0]}", ("uncached",)),
    ]
    rows = []
    for name, folder, label, states in folders:
        cache = work / f"scan_cache_{name}"
        shutil.rmtree(cache, ignore_errors=True)
        for state in states:
            result = child({"kind": "scan", "root": str(folder), "cache_dir": str(cache)}, work, f"scan_{name}_{state}")
            rate = result["files"] / result["seconds"]
            rows.append(
                [
                    f"{result['files']} {label}, {disk_mib(folder) * 1024 / result['files']:.0f} KiB each",
                    state,
                    common.fmt(rate, 1),
                    common.fmt(IMAGENET_FILES / rate / 60, 1),
                    common.fmt(result["peak_rss_mib"], 0),
                ]
            )
    return common.markdown_table(["files", "scan", "files/s", "1.28M files would take (min)", "peak RSS MiB"], rows)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(batch_size=32)
    parser.add_argument("--photos", type=int, default=120, help="photos of the issue's training case (then 2x)")
    parser.add_argument("--scale-base", type=int, default=40, help="files of the 1x throughput row (2x, 4x follow)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the throughput variants")
    parser.add_argument("--scan-files", type=int, default=2000, help="ImageNet-like files the scan is timed on")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="throughput variants (A, B, C, A0, B0, As, Cs)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="where files are generated (kept and reused; default: a temporary folder, removed)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_child(json.loads(args.child))
        print("RESULT " + json.dumps(dict(result, peak_rss_mib=own_peak_rss_mib())), flush=True)
        return
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.photo_size = (3000, 4000)
    if args.quick:
        # one scale (2x) with every variant, smaller photos, few files
        args.photo_size, args.photos, args.scale_base, args.rounds, args.scan_files = (1200, 1600), 6, 4, 1, 40
    info = common.machine()
    started = time.perf_counter()
    temporary = None if args.work_dir else tempfile.mkdtemp(prefix="data_scale-")
    work = Path(args.work_dir or temporary).resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    try:
        most = max(2 * args.photos, 4 * args.scale_base)
        photos = write_photos(work / "photos", most, size=args.photo_size)
        print(
            f"{most} photos {args.photo_size[1]}x{args.photo_size[0]} in {work / 'photos'}: "
            f"{disk_mib(photos):.0f} MiB ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        train_table, train_note = issue_case(args, work, photos)
        print(f"\n{train_table}\n\n{train_note}", flush=True)
        speed_table, ratio_table, prepared = throughput(args, work, photos)
        print(f"\n{speed_table}\n\n{ratio_table}", flush=True)
        scan_table = scan(args, work, linked_subset(photos, work / f"scale_{args.scale_base}", args.scale_base))
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    shards = [
        f"{scale}: {result['shard']['wall_s']:.0f} s, peak RSS {result['shard']['peak_rss_mib']:.0f} MiB"
        for scale, result in prepared.items()
        if "shard" in result
    ]
    checks = [
        f"{scale}: {result['files']} files in {result['check_seconds']:.1f} s" for scale, result in prepared.items()
    ]
    loads = (info["load_average"] or [0.0])[0], (os.getloadavg() if hasattr(os, "getloadavg") else [0.0])[0]
    busy = "was busy with other work" if max(loads) > 1.0 else "was nearly idle"
    notes = (
        f"Every figure is one fresh process (peak RSS: its VmHWM). The machine {busy} while this ran "
        f"(1-minute load average {loads[0]:.1f} at start, {loads[1]:.1f} at the end, {info['nproc']} CPUs): "
        f"the throughput variants ran interleaved ({args.rounds} rounds, order rotated each round); compare "
        f"ratios more than absolute rates. Throughput is the input pipeline alone (no model), over "
        f"the training split (96% of the files); `setup s`: building it (our Splits, cached scan, tracing). "
        f"Pre-training check of the photos per scale (uncached, in the benchmark's process): "
        f"{'; '.join(checks)}. `data shard` per scale (check + write): {'; '.join(shards) or 'not run'}. "
        f"Whole benchmark: {time.perf_counter() - started:.0f} s."
    )
    table = "\n\n".join(
        [
            f"Training `tiny` at 64x64, 2 epochs (`python -m pipeline train`):\n\n{train_table}\n\n{train_note}",
            f"Input pipeline at {SIZE}x{SIZE}, random resized crop + flip, batch "
            f"{args.batch_size} (medians of {args.rounds} rounds):\n\n{speed_table}",
            f"Ours / Keras (median of per-round ratios; goal >= {GOAL_RATIO}):\n\n{ratio_table}",
            f"Image scan (`image_files.scan_images`, default threads):\n\n{scan_table}",
        ]
    )
    common.finish(
        args,
        title="Data at any size: phone photos, memory and throughput (issue 13)",
        module=MODULE,
        argv=argv,
        table=table,
        notes=notes,
        info=info,
    )


if __name__ == "__main__":
    main()
