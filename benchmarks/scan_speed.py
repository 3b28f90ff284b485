"""The pre-training image scan and the start of training on a large folder (issue 24, part 2).

1. `image_files.scan_images` uncached on `--scan-files` ImageNet-like 500x375 JPEGs (quality 90, photo-like
   noise, ~88 KiB: `data_scale.write_photos`), default threads, three ways in one process, interleaved
   for `--rounds` rounds: `reduced` (the scan as shipped: JPEGs by a reduced-scale decode), `tensorflow`
   (the same scan with every JPEG decoded in full by TensorFlow, as before issue 24), and `cached` (the
   second scan of an unchanged folder). Files/s (wall) and CPU ms per file (process time: less sensitive
   to other work on a shared machine; 2 cores / CPU per file is the rate on an idle machine).
2. Time to the first training step on a `--folder-files` folder (default 100,000 tiny JPEGs: 48x64,
   quality 90, 10 classes), each in a fresh process whose clock starts after TensorFlow's start-up:
     ours      `python -m pipeline train` (the `tiny` model at 32x32, batch 256): the uncached scan of every
               file, the splits, the model, the tf.data pipeline (its memory cache fills before the first
               batch), the first step (the process ends there);
     ours, cached   the same again: the scan cache is warm;
     keras     `keras.utils.image_dataset_from_directory(image_size=(32, 32), batch_size=256)` + the same
               network (the registry's `tiny`), Adam, its first step; no file is checked first.

3. Verdicts on damaged copies of 150 of the 500x375 files (truncated, 16 bytes overwritten, 4 KiB zeroed),
   reduced scan vs full TensorFlow scan vs a markers-only check; and reduced vs full on the mirror's
   hymenoptera photos (verdicts, placeholder flags, colour counts), when the mirror is there.

    .venv/bin/python -m benchmarks.scan_speed [--scan-files 2000] [--folder-files 100000] [--rounds 2]
        [--work-dir DIR] [--quick] [--no-record]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, data_scale  # noqa: E402

MODULE = "benchmarks.scan_speed"
TINY_SIZE = (48, 64)
CLASSES = 10
GOAL_FILES_PER_S, GOAL_FIRST_STEP_S = 3000, 60


def write_tiny_folder(root: Path, count: int) -> Path:
    """root/cNN/fNNNNNN.jpg: `count` JPEGs of TINY_SIZE, 1,000 distinct photo-like images cycled over the
    classes (kept when already there: a --work-dir is reused)."""
    import io

    import numpy as np
    from PIL import Image

    if (root / "done").exists() and int((root / "done").read_text()) == count:
        return root
    encoded = []
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        rows, cols = np.meshgrid(np.linspace(0, 150, TINY_SIZE[0]), np.linspace(0, 90, TINY_SIZE[1]), indexing="ij")
        pixels = (rows + cols)[..., None] + rng.integers(0, 100, 3) + rng.normal(0, 18, (*TINY_SIZE, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    for label in range(CLASSES):
        (root / f"c{label:02d}").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (root / f"c{index % CLASSES:02d}" / f"f{index:06d}.jpg").write_bytes(encoded[index % len(encoded)])
    (root / "done").write_text(str(count))  # a dot-less file at the root: not in any class
    return root


# --------------------------------------------------------------------------------------------------
# Children: one measurement each, in a fresh process
# --------------------------------------------------------------------------------------------------


def _experiment(spec: dict) -> Path:
    """The experiment YAML of the `ours` children: the tiny model at 32x32 on the folder, nothing exported."""
    path = Path(spec["run_dir"]).with_suffix(".yaml")
    path.write_text(
        "dataset:\n"
        f"  name: folder\n  root: {json.dumps(spec['root'])}\n  data_dir: {json.dumps(spec['data_dir'])}\n"
        "input: {image_size: [32, 32], channels: 3}\n"
        "model: {name: tiny}\n"
        "train: {epochs: 1, batch_size: 256, callbacks: {tensorboard: {enabled: false}}}\n"
        "export: {enabled: false}\n"
        "evaluation: {report: false}\n"
    )
    return path


def _stop_at_first_step(started: float) -> None:
    """Every `fit` in this process gets a callback that prints the seconds since `started` at the end of
    the first training step and ends the process (nothing after it is measured). Through `keras.Model.fit`,
    so the driver's own callbacks are untouched."""
    import keras

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            print("RESULT " + json.dumps({"seconds": time.perf_counter() - started}), flush=True)
            os._exit(0)

    fit = keras.Model.fit

    def fit_with_first_step(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[FirstStep(), *(callbacks or [])], **kwargs)

    keras.Model.fit = fit_with_first_step


def run_child(spec: dict) -> None:
    import tensorflow as tf

    tf.io.decode_jpeg(tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)))  # TensorFlow's start-up, outside the clock
    experiment = _experiment(spec) if spec["kind"] == "ours" else None
    started = time.perf_counter()
    _stop_at_first_step(started)
    if spec["kind"] == "ours":  # the whole `train` command: scan, splits, model, fit
        from pipeline import cli

        cli.main(["train", str(experiment), "--run-dir", spec["run_dir"]])
    else:  # Keras' loader and the same network (the registry's `tiny`) behind a [0, 1] rescaling
        import keras

        from models import registry

        dataset = keras.utils.image_dataset_from_directory(spec["root"], image_size=(32, 32), batch_size=256, seed=0)
        network = registry.build_model("tiny", input_shape=(32, 32, 3), num_classes=CLASSES)
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255), network])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(dataset, epochs=1, verbose=0)
    raise SystemExit("the first step was never reached")


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the scan's worker processes)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


WAYS = ("tensorflow", "threads", "reduced")  # full decode in threads; reduced in threads; reduced in processes


def scan_rates(paths: list[Path], rounds: int, work: Path) -> dict:
    """{way: [(files/s, CPU ms per file), ...]} for each of WAYS and the cached re-scan, interleaved."""
    import tensorflow as tf

    from pipeline.data import image_files, reduced_jpeg, scan_worker

    tf.io.decode_jpeg(tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)))
    reduced, min_files = reduced_jpeg.decode, scan_worker.MIN_FILES
    rates: dict = {way: [] for way in (*WAYS, "cached")}
    for round_index in range(rounds):
        for way in WAYS if round_index % 2 == 0 else WAYS[::-1]:
            cache = work / f"scan_cache_{way}"
            shutil.rmtree(cache, ignore_errors=True)
            # The full TensorFlow decode and the threads-only rows run in this process (workers would not
            # see the patched decode); the shipped row uses the worker processes.
            reduced_jpeg.decode = (lambda data, thumbnail: None) if way == "tensorflow" else reduced
            scan_worker.MIN_FILES = min_files if way == "reduced" else len(paths) + 1
            try:
                wall, cpu = time.perf_counter(), _cpu_seconds()
                checks = image_files.scan_images(paths, cache_dir=cache)
                rates[way].append(
                    (len(paths) / (time.perf_counter() - wall), 1e3 * (_cpu_seconds() - cpu) / len(paths))
                )
            finally:
                reduced_jpeg.decode, scan_worker.MIN_FILES = reduced, min_files
            assert all(check.ok for check in checks)
            if way == "reduced":
                wall, cpu = time.perf_counter(), _cpu_seconds()
                image_files.scan_images(paths, cache_dir=cache)
                rates["cached"].append(
                    (len(paths) / (time.perf_counter() - wall), 1e3 * (_cpu_seconds() - cpu) / len(paths))
                )
    return rates


def decoder_floor(paths: list[Path]) -> float:
    """CPU ms per file of libjpeg alone at its smallest scale (Pillow `draft` to 1/8, from bytes in memory):
    the entropy decoding any check that reads every coefficient must do, with no check around it. Medians of
    3 passes, in this process."""
    import io

    from PIL import Image

    contents = [path.read_bytes() for path in paths[:400]]
    passes = []
    for _ in range(3):
        cpu = time.process_time()
        for data in contents:
            with Image.open(io.BytesIO(data)) as image:
                image.draft(image.mode, (1, 1))
                image.load()
        passes.append(1e3 * (time.process_time() - cpu) / len(contents))
    return common.median(passes)


def _scan(paths: list[Path], *, reduced: bool) -> list:
    """scan_images (uncached), with JPEGs by the reduced-scale decode or, `reduced` False, all by TensorFlow."""
    from pipeline.data import image_files, reduced_jpeg, scan_worker

    shipped, min_files = reduced_jpeg.decode, scan_worker.MIN_FILES
    if not reduced:
        reduced_jpeg.decode = lambda data, thumbnail: None
        scan_worker.MIN_FILES = len(paths) + 1  # in this process, where the patch applies
    try:
        return image_files.scan_images(paths)
    finally:
        reduced_jpeg.decode, scan_worker.MIN_FILES = shipped, min_files


def damaged_verdicts(paths: list[Path], work: Path, count: int = 150) -> str:
    """What each check flags among damaged copies of the first `count` files: cut anywhere in the scan data,
    16 bytes of it overwritten, a 4 KiB block of it zeroed; and what a header-and-end-marker check (no
    decode) would flag."""
    import random

    rng = random.Random(0)
    folder = work / "damaged"
    shutil.rmtree(folder, ignore_errors=True)
    kinds = ("intact", "truncated", "16 bytes overwritten", "4 KiB zeroed")
    for index, path in enumerate(paths[:count]):
        data = path.read_bytes()
        scan = data.find(b"\xff\xda")
        overwritten = bytearray(data)
        for _ in range(16):
            overwritten[rng.randrange(scan + 20, len(data) - 2)] = rng.randrange(256)
        zeroed = bytearray(data)
        at = rng.randrange(scan + 20, len(data) - 4100)
        zeroed[at : at + 4096] = bytes(4096)
        variants = (data, data[: rng.randrange(scan + 4, len(data) - 2)], bytes(overwritten), bytes(zeroed))
        for kind, content in zip(kinds, variants):
            (folder / kind.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
            (folder / kind.replace(" ", "_") / f"f{index:04d}.jpg").write_bytes(content)
    rows = []
    for kind in kinds:
        files = sorted((folder / kind.replace(" ", "_")).glob("*.jpg"))
        reduced, full = _scan(files, reduced=True), _scan(files, reduced=False)
        structural = sum(
            data.rfind(b"\xff\xd9") < max(data.find(b"\xff\xda"), 0) for data in (f.read_bytes() for f in files)
        )
        rows.append(
            [
                kind,
                len(files),
                sum(not c.ok for c in full),
                sum(not c.ok for c in reduced),
                sum(a.ok != b.ok for a, b in zip(full, reduced)),
                structural,
            ]
        )
    return common.markdown_table(
        ["copies", "files", "bad: full TF decode", "bad: reduced scan", "verdicts differing", "bad: markers only"], rows
    )


def mirror_agreement(work: Path) -> str:
    """Reduced vs full scan on the mirror's hymenoptera photos (398 files, one placeholder GIF)."""
    import tarfile

    import numpy as np

    from pipeline.data import datasets, image_files

    mirror = datasets.resolve_mirror()
    archive = mirror / "hymenoptera.tar.gz" if mirror else None
    if archive is None or not archive.exists():
        return "Hymenoptera comparison: not run (no dataset mirror)."
    folder = work / "hymenoptera"
    if not folder.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    files = image_files.find_files(folder)
    reduced, full = _scan(files, reduced=True), _scan(files, reduced=False)

    def verdict(check):
        return check.reason, bool(check.warning and "placeholder" in check.warning), check.height, check.width

    same = sum(verdict(a) == verdict(b) for a, b in zip(reduced, full))
    pairs = [(a.colours, b.colours) for a, b in zip(reduced, full) if a.format == "jpeg" and a.ok and b.colours]
    ratios = np.array([a / b for a, b in pairs])
    return (
        f"Hymenoptera (mirror, {len(files)} files): {same} of {len(files)} with the same verdict, placeholder flag "
        f"and size from the reduced scan as from the full TensorFlow one; JPEG colour counts (64x64 thumbnail) "
        f"reduced / full: median {np.median(ratios):.3f}, range {ratios.min():.3f}-{ratios.max():.3f}; fewest "
        f"colours of a JPEG photo {min(a for a, _ in pairs)} reduced, {min(b for _, b in pairs)} full "
        f"(placeholder threshold 64)."
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--scan-files", type=int, default=2000, help="500x375 JPEGs the scan is timed on")
    parser.add_argument("--folder-files", type=int, default=100_000, help="tiny JPEGs of the first-step folder")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the scan measurements")
    parser.add_argument("--work-dir", type=Path, help="where files are generated (kept; default: temporary)")
    parser.add_argument(
        "--part", choices=["all", "scan", "first-step"], default="all", help="the scan tables, the first step, or both"
    )
    parser.add_argument("--child", help="internal: one measurement, as JSON")
    args = parser.parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return
    if args.quick:
        args.scan_files, args.folder_files, args.rounds = 100, 2000, 1
    info = common.machine()
    started = time.perf_counter()
    temporary = None if args.work_dir else tempfile.mkdtemp(prefix="scan_speed-")
    work = Path(args.work_dir or temporary).resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    try:
        sections = []
        if args.part in ("all", "scan"):
            photos = data_scale.write_photos(work / "scan_files", args.scan_files, size=(375, 500), seed=2, noise=12.0)
            paths = sorted(photos.rglob("*.jpg"))[: args.scan_files]
            kib = sum(path.stat().st_size for path in paths) / len(paths) / 1024
            rates = scan_rates(paths, args.rounds, work)
            scan_rows = []
            for way, label in (
                ("tensorflow", "every JPEG decoded in full by TensorFlow, threads (before issue 24)"),
                ("threads", "reduced-scale JPEG decode, threads (round 2)"),
                ("reduced", "reduced-scale JPEG decode, a worker process a core (shipped)"),
                ("cached", "second scan, cache warm"),
            ):
                rate = common.median([r for r, _ in rates[way]])
                cpu = common.median([c for _, c in rates[way]])
                scan_rows.append(
                    [label, common.fmt(rate, 0), common.fmt(cpu, 2), common.fmt(2e3 / cpu, 0), common.fmt(1_281_167 / rate / 60, 1)]
                )  # fmt: skip
            floor = decoder_floor(paths)
            scan_rows.append(
                ["libjpeg's decode alone at 1/8 scale, no check (the floor)", "", common.fmt(floor, 2), common.fmt(2e3 / floor, 0), ""]
            )  # fmt: skip
            scan_table = common.markdown_table(
                ["scan", "files/s", "CPU ms/file", "2 idle cores, files/s", "1.28M files (min)"], scan_rows
            )
            print(f"{len(paths)} JPEGs 500x375, {kib:.0f} KiB each:\n\n{scan_table}", flush=True)
            damage_table = damaged_verdicts(paths, work)
            agreement = mirror_agreement(work)
            print(f"\n{damage_table}\n\n{agreement}", flush=True)

            sections.append(
                f"Uncached scan of {len(paths)} 500x375 JPEGs ({kib:.0f} KiB each, quality 90, photo-like noise), "
                f"default threads, medians of {args.rounds} interleaved rounds (goal >= {GOAL_FILES_PER_S} "
                f"files/s):\n\n{scan_table}"
            )
        if args.part in ("all", "first-step"):
            folder_start = time.perf_counter()
            folder = write_tiny_folder(work / "tiny_folder", args.folder_files)
            made = time.perf_counter() - folder_start
            tiny_kib = os.path.getsize(folder / "c00" / "f000000.jpg") / 1024
            data_dir = work / "data"
            shutil.rmtree(data_dir, ignore_errors=True)
            spec = {"root": str(folder), "data_dir": str(data_dir)}
            first = {}
            for name, kind in (("keras", "keras"), ("ours", "ours"), ("ours, cached", "ours")):
                run_dir = work / "run"
                shutil.rmtree(run_dir, ignore_errors=True)
                child = dict(spec, kind=kind, run_dir=str(run_dir))
                command = [sys.executable, "-m", MODULE, "--child", json.dumps(child)]
                first[name] = data_scale.run_process(command, work / "logs" / f"first_{name.replace(', ', '_')}.log")
            rows = [
                [name, common.fmt(result["seconds"], 1), common.fmt(result["seconds"] / first["keras"]["seconds"], 2)]
                for name, result in first.items()
            ]
            first_table = common.markdown_table(["loader", "seconds to the first step", "/ keras"], rows)
            print(f"\n{args.folder_files} JPEGs {TINY_SIZE[1]}x{TINY_SIZE[0]}:\n\n{first_table}", flush=True)
            sections.append(
                f"First training step on {args.folder_files:,} JPEGs of {TINY_SIZE[1]}x{TINY_SIZE[0]} ({tiny_kib:.1f} "
                f"KiB each, {CLASSES} classes; made in {made:.0f} s), fresh processes, clock after TensorFlow's "
                f"start-up (goal <= {GOAL_FIRST_STEP_S} s):\n\n{first_table}"
            )
        if args.part in ("all", "scan"):
            sections.append(
                "Verdicts on damaged copies of the first 150 of those 500x375 JPEGs (damage inside the scan data; "
                "`markers only`: no end-of-image marker after the scan, as a check without decoding would see):"
                f"\n\n{damage_table}\n\n{agreement}"
            )
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    loads = (info["load_average"] or [0.0])[0], os.getloadavg()[0]
    table = "\n\n".join(sections)
    notes = (
        f"1-minute load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end on {info['nproc']} CPUs: "
        f"the machine is shared with other jobs, so files/s (wall) understate what it does alone; CPU ms per file "
        f"is the steadier figure. Whole benchmark {time.perf_counter() - started:.0f} s."
    )
    common.finish(
        args,
        title="Pre-training scan and first step on a large folder (issue 24)",
        module=MODULE,
        argv=argv,
        table=table,
        notes=notes,
        info=info,
    )


if __name__ == "__main__":
    main()
