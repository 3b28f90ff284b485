"""Quality of the data audit, measured on real data (issue 26).

Three parts (`--part duplicates|fashion|labels|all`):

duplicates: a tree `train/<class>/`, `test/<class>/` of the mirror's CIFAR-10 (`--images` per split, seeded
    subset) into which `--planted` test images are copied into train after one transformation each (JPEG
    recompression at quality 60-95, resize by 0.5-2x, crop of up to 10%, brightness change of up to 20%,
    or all four), as new files. Reports, per transformation, the recall of the planted pairs (test image
    and its copy in one near-duplicate group), the number of flagged pairs between untouched images (false
    positives, or duplicates already in CIFAR-10), a sweep of the same-size pHash threshold and of the
    verification's correlation threshold (`pipeline.data.near_duplicates`), and the time per 10,000 images
    of `data audit`'s fingerprinting, search and verification.

fashion: Fashion-MNIST (`--fashion-count` images, seeded): the share of images in near-duplicate groups
    before and after the verification, by its threshold (the hashes alone group 85% of the 70,000).

labels: planted label noise on Fashion-MNIST or CIFAR-10 (`--dataset`): `--noise` of the
    training labels flipped at random (seeded) to another class; out-of-sample predicted probabilities from
    `--folds`-fold cross-validation of a small CNN trained `--epochs` epochs per fold; then precision and
    recall of the flipped images among the top N issues (N = number flipped) and AUROC of the score, for
    cleanlab's label-quality score (self-confidence, as `pipeline audit` ranks) and for the baseline
    (the model's confidence in the given label, the same number here: see the notes) and for cleanlab's
    `find_label_issues` set (confident learning: prune by noise rate).

    .venv/bin/python -m benchmarks.audit_quality --part duplicates --images 5000 --planted 200
    .venv/bin/python -m benchmarks.audit_quality --part fashion --fashion-count 20000
    .venv/bin/python -m benchmarks.audit_quality --part labels --train-count 20000 --epochs 3 --folds 2
    .venv/bin/python -m benchmarks.audit_quality --part labels --dataset cifar10 --train-count 20000 --epochs 8
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


def _cifar_tree(args, temporary: Path) -> Path:
    """The CIFAR-10 JPEG tree: `--source`, or extracted from the mirror into `temporary`."""
    if args.source:
        return Path(args.source)
    import tarfile

    from pipeline.data.datasets import resolve_mirror

    with tarfile.open(resolve_mirror(None) / "cifar10-jpg.tar.gz") as archive:
        archive.extractall(temporary / "source", filter="data")
    return temporary / "source" / "cifar10"


SWEEP_PHASH = (6, 10, 14)  # same-size pHash thresholds of the sweep
SWEEP_CORRELATION = (
    None,
    0.5,
    0.7,
    0.8,
    0.9,
    0.93,
    0.96,
)  # verification thresholds (None: the hash candidates as they are)


def duplicates(args) -> None:
    from pipeline.data import fingerprints, near_duplicates

    with tempfile.TemporaryDirectory() as temporary:
        temporary = Path(temporary)
        tree = temporary / "tree"
        planted = build_tree(
            _cifar_tree(args, temporary), tree, images=args.images, planted=args.planted, seed=args.seed
        )
        files = sorted(p for p in tree.rglob("*.jpg"))
        names = [p.relative_to(tree).as_posix() for p in files]
        start = time.perf_counter()
        prints = fingerprints.fingerprint_files(files)
        hashed = time.perf_counter() - start
    start = time.perf_counter()
    default = near_duplicates.find(prints)  # timed as `data audit` runs it
    searched = time.perf_counter() - start
    proposed = near_duplicates.candidates(prints, threshold=max(SWEEP_PHASH))
    correlation = near_duplicates.verify(prints.grey, prints.height, prints.width, proposed)
    same = (prints.height[proposed[:, 0]] == prints.height[proposed[:, 1]]) & (
        prints.width[proposed[:, 0]] == prints.width[proposed[:, 1]]
    )
    position = {names[i]: n for n, i in enumerate(prints.index)}
    planted_pairs = {tuple(sorted((position[test], position[copy]))): kind for test, copy, kind in planted}
    planted_members = {x for pair in planted_pairs for x in pair}
    score_of = {(int(i), int(j)): float(r) for (i, j, _), r in zip(proposed, correlation)}
    print(f"planted pairs below r {default[2]['min_correlation']} (kind, pHash, dHash, r or '-': not a candidate):")
    for (a, b), kind in planted_pairs.items():
        if score_of.get((a, b), -1.0) < default[2]["min_correlation"]:
            bits = [int(fingerprints.hamming(h[a], h[b])) for h in (prints.phash, prints.dhash)]
            print(kind, *bits, f"{score_of[(a, b)]:.3f}" if (a, b) in score_of else "-")
    rows = []
    for threshold in SWEEP_PHASH:
        for lowest in SWEEP_CORRELATION:
            keep = np.where(same, proposed[:, 2] <= threshold, True) & (correlation >= (lowest or -2.0))
            chosen = [(int(a), int(b)) for a, b, _ in proposed[keep]]
            groups = fingerprints.group(len(prints.index), chosen)
            member = {x: g for g, items in enumerate(groups) for x in items}
            found = {kind: 0 for kind in TRANSFORMS}
            for (a, b), kind in planted_pairs.items():
                found[kind] += a in member and member.get(a) == member.get(b)
            false = sum(1 for a, b in chosen if (a, b) not in planted_pairs and not ({a, b} & planted_members))
            per_kind = [f"{found[k]}/{sum(1 for v in planted_pairs.values() if v == k)}" for k in TRANSFORMS]
            recall = f"{sum(found.values()) / len(planted_pairs):.3f}"
            rows.append([threshold, "hashes only" if lowest is None else f"{lowest:.2f}", *per_kind, recall, false])
    headers = ["pHash <= (same size)", "r >="] + list(TRANSFORMS) + ["recall", "untouched pairs"]
    table = common.markdown_table(headers, rows)
    print(table)
    total = len(files)
    print(f"{total} images: fingerprints {hashed:.1f} s, search and verification {searched:.2f} s")
    per_10k = (hashed + searched) * 10000 / total
    notes = (
        f"{total} images ({args.images} train + {args.images} test of the mirror's CIFAR-10, seed {args.seed}, "
        f"plus {args.planted} planted copies of test images in train, {args.planted // len(TRANSFORMS)} per "
        f"transformation). Candidates: pHash <= the row's threshold and dHash <= "
        f"{fingerprints.DHASH_THRESHOLD} for images of one size; pHash <= {near_duplicates.RESIZED_PHASH} and "
        f"dHash <= {near_duplicates.RESIZED_DHASH} (whole or centre crop) for different sizes; 'r >=': the "
        f"verification's detail correlation ('hashes only': none). Fingerprinting (decode as training does, "
        f"four hashes, grey thumbnail) {hashed:.1f} s, candidate search and verification at the defaults "
        f"({default[2]['candidates']} candidates, {len(default[0])} kept at r >= {default[2]['min_correlation']}) {searched:.2f} s: {per_10k:.1f} s per 10,000 images "
        f"on this machine (2 cores shared with other jobs). 'untouched pairs': pairs flagged between images "
        f"that were not planted."
    )
    if args.record:
        common.record(
            "Data audit round 2: planted near duplicates with verification (CIFAR-10)",
            common.command_line("benchmarks.audit_quality", sys.argv[1:]),
            table,
            notes=notes,
        )


def fashion(args) -> None:
    """Fashion-MNIST (a seeded subset of train + test): how many images the default candidates and each
    verification threshold put in near-duplicate groups, and of which class."""
    from pipeline.data import datasets, fingerprints, near_duplicates

    data = datasets.fashion_mnist(data_dir=tempfile.mkdtemp(), mirror_dir=None)
    images = np.concatenate([data.train_images, data.test_images])
    labels = np.concatenate([data.train_labels, data.test_labels])
    chosen = np.sort(np.random.default_rng(args.seed).choice(len(images), min(args.fashion_count, len(images)), False))
    prints = fingerprints.fingerprint_arrays(images[chosen])
    proposed = near_duplicates.candidates(prints)
    correlation = near_duplicates.verify(prints.grey, prints.height, prints.width, proposed)
    rows = []
    for lowest in (None, 0.7, 0.8, 0.85, 0.9, 0.93, 0.96):
        kept = proposed[correlation >= (lowest or -2.0)]
        groups = fingerprints.group(len(chosen), kept)
        grouped = [x for g in groups for x in g]
        classes = np.bincount(labels[chosen][grouped], minlength=10) if grouped else np.zeros(10, int)
        top = int(classes.argmax())
        rows.append(
            [
                "hashes only" if lowest is None else f"{lowest:.2f}",
                len(kept),
                len(grouped),
                f"{len(grouped) / len(chosen):.3f}",
                max((len(g) for g in groups), default=0),
                f"{data.class_names[top]} {classes[top] / max(len(grouped), 1):.0%}",
            ]
        )
    headers = ["r >=", "pairs", "images in groups", "share", "largest group", "most common class in groups"]
    table = common.markdown_table(headers, rows)
    print(table)
    notes = (
        f"{len(chosen)} of the mirror's 70,000 Fashion-MNIST images (train + test, seed {args.seed}); candidates "
        f"at the defaults ({len(proposed)} pairs), then the verification's detail correlation 'r >='."
    )
    if args.record:
        common.record(
            "Data audit round 2: near duplicates on Fashion-MNIST by verification threshold",
            common.command_line("benchmarks.audit_quality", sys.argv[1:]),
            table,
            notes=notes,
        )


def small_cnn(num_classes: int, input_shape):
    """Conv32-pool-Conv64-pool-Dense128: ~88% on Fashion-MNIST after 3 epochs on 10,000 images."""
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

    if args.dataset == "cifar10":  # decoded once into DATA_DIR/cifar10/cifar10.npz (the mirror's JPEGs)
        data = datasets.cifar10(data_dir=args.data_dir, mirror_dir=None)
    else:
        data = datasets.fashion_mnist(data_dir=tempfile.mkdtemp(), mirror_dir=None)
    title = {"cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST"}[args.dataset]
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(data.train_labels), args.train_count, replace=False))
    images, clean = data.train_images[chosen], np.asarray(data.train_labels[chosen], np.int64)
    rows, accuracies = [], []
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
        accuracies.append(f"{noise:.0%}: {accuracy:.3f} ({seconds:.0f} s)")
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
        f"{title} from the mirror, {args.train_count} training images (seeded subset), labels flipped "
        f"to a uniformly drawn other class; {args.folds}-fold cross-validated probabilities of a small CNN "
        f"(Conv32-Conv64-Dense128, Adam, {args.epochs} epochs per fold). Out-of-sample accuracy against the "
        f"clean labels (and the time of the folds) per noise level: {'; '.join(accuracies)}. cleanlab's "
        f"self_confidence is by definition the baseline's number (the probability of the given label): its "
        f"rows coincide. For the find_label_issues set, precision and recall are of the whole set, not at N."
    )
    if args.record:
        common.record(
            f"Data audit: planted label noise ({title})",
            common.command_line("benchmarks.audit_quality", sys.argv[1:]),
            table,
            notes=notes,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["duplicates", "fashion", "labels", "all"], default="all")
    parser.add_argument("--source", help="an extracted CIFAR-10 JPEG tree (default: extract the mirror's)")
    parser.add_argument("--fashion-count", type=int, default=20000, help="Fashion-MNIST images (fashion)")
    parser.add_argument("--images", type=int, default=5000, help="CIFAR-10 images per split (duplicates)")
    parser.add_argument("--planted", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", choices=["fashion_mnist", "cifar10"], default="fashion_mnist", help="(labels)")
    parser.add_argument("--data-dir", default="data", help="where CIFAR-10's decoded cache is (labels, cifar10)")
    parser.add_argument("--train-count", type=int, default=20000, help="training images (labels)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.part in ("duplicates", "all"):
        duplicates(args)
    if args.part in ("fashion", "all"):
        fashion(args)
    if args.part in ("labels", "all"):
        labels(args)


if __name__ == "__main__":
    main()
