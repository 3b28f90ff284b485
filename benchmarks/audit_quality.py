"""Quality of the data audit, measured on real data (issue 26).

Two parts (`--part duplicates|labels|all`):

duplicates: a tree `train/<class>/`, `test/<class>/` of the mirror's CIFAR-10 (`--images` per split, seeded
    subset) into which `--planted` test images are copied into train after one transformation each (JPEG
    recompression at quality 60-95, resize by 0.5-2x, crop of up to 10%, brightness change of up to 20%,
    or all four), as new files. Reports, per transformation, the recall of the planted pairs (test image
    and its copy in one near-duplicate group), the number of flagged pairs between untouched images (false
    positives, or duplicates already in CIFAR-10), a sweep of the pHash threshold, and the time per
    10,000 images of `data audit`'s fingerprinting and search.

labels: planted label noise on Fashion-MNIST (and `--cifar` CIFAR-10 if time allows): `--noise` of the
    training labels flipped at random (seeded) to another class; out-of-sample predicted probabilities from
    `--folds`-fold cross-validation of a small CNN trained `--epochs` epochs per fold; then precision and
    recall of the flipped images among the top N issues (N = number flipped) and AUROC of the score, for
    cleanlab's label-quality score (self-confidence, as `pipeline audit` ranks) and for the baseline
    (the model's confidence in the given label, the same number here: see the notes) and for cleanlab's
    `find_label_issues` set (confident learning: prune by noise rate).

    .venv/bin/python -m benchmarks.audit_quality --part duplicates --images 5000 --planted 200
    .venv/bin/python -m benchmarks.audit_quality --part labels --train-count 20000 --epochs 3 --folds 2
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common  # noqa: E402

TRANSFORMS = ("jpeg", "resize", "crop", "brightness", "all")


def transform(image, kind: str, rng: np.random.Generator):
    """A PIL image after one planted transformation (parameters drawn uniformly in the issue's ranges)."""
    from PIL import Image, ImageEnhance

    width, height = image.size
    if kind in ("resize", "all"):
        scale = rng.uniform(0.5, 2.0)
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BICUBIC)
    if kind in ("crop", "all"):
        width, height = image.size
        fraction = rng.uniform(0.02, 0.10)  # of each side, split at random between the two edges
        cut_w, cut_h = round(width * fraction), round(height * fraction)
        left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
        image = image.crop((left, top, width - (cut_w - left), height - (cut_h - top)))
    if kind in ("brightness", "all"):
        image = ImageEnhance.Brightness(image).enhance(rng.choice([-1, 1]) * rng.uniform(0.05, 0.20) + 1.0)
    buffer = io.BytesIO()
    quality = int(rng.integers(60, 96)) if kind in ("jpeg", "all") else 95
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def build_tree(source: Path, out: Path, *, images: int, planted: int, seed: int) -> list[tuple[str, str, str]]:
    """Copies `images` files per split (seeded) of CIFAR-10's tree into `out`, then the planted copies.
    Returns [(test path, planted train path, transformation)] relative to `out`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    chosen = {}
    for split in ("train", "test"):
        files = sorted((source / split).rglob("*.jpg"))
        chosen[split] = [files[i] for i in sorted(rng.choice(len(files), images, replace=False))]
        for path in chosen[split]:
            target = out / split / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    planted_rows = []
    for number, index in enumerate(rng.choice(images, planted, replace=False)):
        path = chosen["test"][index]
        kind = TRANSFORMS[number % len(TRANSFORMS)]
        data = transform(Image.open(path), kind, rng)
        target = out / "train" / path.parent.name / f"planted-{number:04d}-{kind}.jpg"
        target.write_bytes(data)
        planted_rows.append((f"test/{path.parent.name}/{path.name}", target.relative_to(out).as_posix(), kind))
    return planted_rows


def duplicates(args) -> None:
    from pipeline.data import fingerprints
    from pipeline.data.datasets import resolve_mirror

    mirror = resolve_mirror(None)
    with tempfile.TemporaryDirectory() as temporary:
        temporary = Path(temporary)
        import tarfile

        with tarfile.open(mirror / "cifar10-jpg.tar.gz") as archive:
            archive.extractall(temporary / "source", filter="data")
        tree = temporary / "tree"
        planted = build_tree(
            temporary / "source" / "cifar10", tree, images=args.images, planted=args.planted, seed=args.seed
        )
        files = sorted(p for p in tree.rglob("*.jpg"))
        names = [p.relative_to(tree).as_posix() for p in files]
        start = time.perf_counter()
        prints = fingerprints.fingerprint_files(files)
        hashed = time.perf_counter() - start
        start = time.perf_counter()
        pairs = fingerprints.near_pairs(prints.phash, prints.dhash, threshold=20, dhash_threshold=64)
        searched = time.perf_counter() - start
    position = {names[i]: n for n, i in enumerate(prints.index)}
    phash_d = {}
    for i, j, d in pairs:
        phash_d[(int(i), int(j))] = int(d)
    planted_pairs = {}
    for test, copy, kind in planted:
        a, b = sorted((position[test], position[copy]))
        planted_pairs[(a, b)] = kind
    dhash_of = lambda a, b: int(fingerprints.hamming(prints.dhash[a], prints.dhash[b]))  # noqa: E731
    phash_of = lambda a, b: int(fingerprints.hamming(prints.phash[a], prints.phash[b]))  # noqa: E731
    print("planted (kind, pHash, dHash):")
    for (a, b), kind in planted_pairs.items():
        print(kind, phash_of(a, b), dhash_of(a, b))
    planted_members = {x for pair in planted_pairs for x in pair}
    rows = []
    for threshold in range(6, 17, 2):
        for dthreshold in (12, 16, 64):
            chosen = [(a, b) for (a, b), d in phash_d.items() if d <= threshold and dhash_of(a, b) <= dthreshold]
            groups = fingerprints.group(len(prints.index), chosen)
            member = {x: g for g, items in enumerate(groups) for x in items}
            found = {kind: 0 for kind in TRANSFORMS}
            for (a, b), kind in planted_pairs.items():
                found[kind] += a in member and member.get(a) == member.get(b)
            false = sum(1 for a, b in chosen if (a, b) not in planted_pairs and not ({a, b} & planted_members))
            per_kind = [f"{found[k]}/{sum(1 for v in planted_pairs.values() if v == k)}" for k in TRANSFORMS]
            rows.append([threshold, dthreshold, *per_kind, f"{sum(found.values()) / len(planted_pairs):.3f}", false])
    table = common.markdown_table(["pHash <=", "dHash <="] + list(TRANSFORMS) + ["recall", "untouched pairs"], rows)
    print(table)
    total = len(files)
    print(f"{total} images: fingerprints {hashed:.1f} s, search {searched:.2f} s")
    per_10k = (hashed + searched) * 10000 / total
    notes = (
        f"{total} images ({args.images} train + {args.images} test of the mirror's CIFAR-10, seed {args.seed}, "
        f"plus {args.planted} planted copies of test images in train, {args.planted // len(TRANSFORMS)} per "
        f"transformation). Fingerprinting (decode as training does, pHash + dHash) {hashed:.1f} s, exact "
        f"pair search {searched:.2f} s: {per_10k:.1f} s per 10,000 images on this machine (2 cores shared "
        f"with other jobs). 'untouched pairs': pairs flagged between images that were not planted."
    )
    if args.record:
        common.record(
            "Data audit: planted near duplicates (CIFAR-10)",
            common.command_line("benchmarks.audit_quality", sys.argv[1:]),
            table,
            notes=notes,
        )


def small_cnn(num_classes: int, input_shape):
    """Conv32-pool-Conv64-pool-Dense128: ~90% on Fashion-MNIST after 3 epochs."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Rescaling(1 / 255),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )


def cross_validated_probabilities(images, labels, *, folds: int, epochs: int, seed: int) -> np.ndarray:
    """Out-of-sample probabilities [N, C]: fold k's model never saw fold k (stratified folds, as `audit --folds`)."""
    import keras

    from pipeline.audit.folds import assign_folds

    num_classes = int(labels.max()) + 1
    fold_of = assign_folds(labels, folds, seed)
    probabilities = np.zeros((len(labels), num_classes), np.float32)
    for k in range(folds):
        keras.utils.set_random_seed(seed + k)
        model = small_cnn(num_classes, images.shape[1:])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(images[fold_of != k], labels[fold_of != k], epochs=epochs, batch_size=128, verbose=0)
        probabilities[fold_of == k] = model.predict(images[fold_of == k], batch_size=512, verbose=0)
    return probabilities


def ranking_metrics(flipped: np.ndarray, score: np.ndarray) -> tuple[float, float, float]:
    """(precision at N, recall at N, AUROC) of ranking by `score` ascending (low = likely error), N = flipped."""
    from sklearn.metrics import roc_auc_score

    count = int(flipped.sum())
    top = np.argsort(score, kind="stable")[:count]
    hits = int(flipped[top].sum())
    return hits / count, hits / count, float(roc_auc_score(flipped, -score))


def labels(args) -> None:
    from cleanlab import filter as cleanlab_filter
    from cleanlab import rank

    from pipeline.data import datasets

    data = datasets.fashion_mnist(data_dir=tempfile.mkdtemp(), mirror_dir=None)
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(data.train_labels), args.train_count, replace=False))
    images, clean = data.train_images[chosen], np.asarray(data.train_labels[chosen], np.int64)
    rows = []
    for noise in args.noise:
        rng = np.random.default_rng(args.seed + int(noise * 1000))
        given = clean.copy()
        flip = rng.choice(len(given), int(round(noise * len(given))), replace=False)
        given[flip] = (given[flip] + rng.integers(1, 10, len(flip))) % 10  # another class, uniformly
        flipped = given != clean
        start = time.perf_counter()
        probabilities = cross_validated_probabilities(
            images, given, folds=args.folds, epochs=args.epochs, seed=args.seed
        )
        seconds = time.perf_counter() - start
        accuracy = float((probabilities.argmax(1) == clean).mean())
        baseline = probabilities[np.arange(len(given)), given]  # confidence in the given label
        methods = {"baseline: confidence in the given label": baseline}
        for method in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
            methods[f"cleanlab {method}"] = rank.get_label_quality_scores(given, probabilities, method=method)
        for name, score in methods.items():
            precision, recall, auroc = ranking_metrics(flipped, score)
            rows.append([f"{noise:.0%}", int(flipped.sum()), name, f"{precision:.3f}", f"{recall:.3f}", f"{auroc:.4f}"])
        issue = cleanlab_filter.find_label_issues(given, probabilities, filter_by="prune_by_noise_rate")
        hits = int((issue & flipped).sum())
        rows.append(
            [
                f"{noise:.0%}",
                int(flipped.sum()),
                f"cleanlab find_label_issues set ({int(issue.sum())} flagged)",
                f"{hits / max(issue.sum(), 1):.3f}",
                f"{hits / flipped.sum():.3f}",
                "-",
            ]
        )
        print(f"noise {noise:.0%}: out-of-sample accuracy vs clean labels {accuracy:.4f}, {seconds:.0f} s")
        for row in rows[-5:]:
            print(row)
    table = common.markdown_table(["noise", "flipped (N)", "ranking", "precision@N", "recall@N", "AUROC"], rows)
    print(table)
    notes = (
        f"Fashion-MNIST from the mirror, {args.train_count} training images (seeded subset), labels flipped "
        f"to a uniformly drawn other class; {args.folds}-fold cross-validated probabilities of a small CNN "
        f"(Conv32-Conv64-Dense128, Adam, {args.epochs} epochs per fold). cleanlab's self_confidence is by "
        f"definition the baseline's number (the probability of the given label): its rows coincide. For the "
        f"find_label_issues set, precision and recall are of the whole set, not at N."
    )
    if args.record:
        common.record(
            "Data audit: planted label noise (Fashion-MNIST)",
            common.command_line("benchmarks.audit_quality", sys.argv[1:]),
            table,
            notes=notes,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["duplicates", "labels", "all"], default="all")
    parser.add_argument("--images", type=int, default=5000, help="CIFAR-10 images per split (duplicates)")
    parser.add_argument("--planted", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="also sweep the dHash threshold up to 64")
    parser.add_argument("--train-count", type=int, default=20000, help="Fashion-MNIST training images (labels)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.part in ("duplicates", "all"):
        duplicates(args)
    if args.part in ("labels", "all"):
        labels(args)


if __name__ == "__main__":
    main()
