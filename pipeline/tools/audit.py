"""`python -m pipeline data audit ROOT_OR_EXPERIMENT [--out DIR] [--write-lists DIR]`: before training,
duplicates (exact and near), leakage across splits, duplicates filed under different classes, and odd
images (very small, very dark, nearly uniform), with a report a person reads in a minute.

ROOT: class folders, or split folders (train/ val/ test/) of class folders, or loose images. An
experiment (name or YAML): its splits exactly as training carves them (`Splits`), so "leakage" means what
the run would see. Decoding and hashing: `pipeline.data.fingerprints`; the sheets: `contact_sheet`.
Outputs (atomic): audit.json (stable keys), audit.md, duplicates.png, conflicts.png, leakage.png.
Never moves or deletes a user's file: `--write-lists` writes list files without the leaked and
conflicting images, for the `file_list` dataset.
"""

from __future__ import annotations

import collections
import itertools
import os
from pathlib import Path

from pipeline.core import fileio
from pipeline.core.fileio import atomic_write_json, atomic_write_text
from pipeline.data import image_files
from pipeline.tools import common

HELP = "duplicates, leakage across splits, class conflicts and odd images (before training)"
SMALL_SIDE = 32  # pixels: a shorter side below this is "very small" (with an experiment: half its input size)
DARK = 20.0  # mean grey level (0..255) below which an image is "very dark"
UNIFORM = 4.0  # standard deviation of the grey levels below which an image is "nearly uniform"
SHEET_ROWS = 24  # groups drawn per contact sheet (the JSON lists them all)
SPLIT_ORDER = ("train", "validation", "test", None)


def add_arguments(parser) -> None:
    """Adds TARGET, --set, --out, --write-lists and --threshold to the `data audit` sub-parser."""
    parser.add_argument("target", metavar="ROOT_OR_EXPERIMENT", help="an image folder, or an experiment name/YAML")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for an experiment, as in `train`",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="report folder (default ROOT/../<rootname>-audit, or runs/<experiment>/data-audit)",
    )
    parser.add_argument(
        "--write-lists",
        type=Path,
        metavar="DIR",
        help="write train/val/test list files without leaked and conflicting images",
    )
    parser.add_argument(
        "--threshold",
        type=int,
        metavar="BITS",
        help="pHash bits of 64 for a near duplicate (default pipeline.data.fingerprints.NEAR_THRESHOLD)",
    )


def load_splits(config):
    """The experiment's splits as training carves them: the one call of the `Splits` constructor here."""
    from pipeline.data.splits import Splits

    return Splits.from_config(config, log=lambda message: None)


def _items_of_folder(root: Path) -> tuple[list[dict], list[str] | None]:
    """[{name, path, split, label}] of a folder (split folders, class folders or loose files), class names."""
    splits = common.split_folders(root)
    items, classes = [], set()
    for split, folder in splits.items() if splits else [(None, root)]:
        files, labels, class_names = image_files.list_class_folders(folder)
        if not class_names:
            files = [p for p in image_files.find_files(folder) if p.name not in common.LIST_FILES]
            labels, class_names = [None] * len(files), []
        classes.update(class_names)
        items += [
            {
                "name": common.relative(path, root),
                "path": path,
                "split": split,
                "class": class_names[label] if label is not None else None,
            }
            for path, label in zip(files, labels)
        ]
    return items, (sorted(classes) or None)


def _items_of_experiment(config) -> tuple[list[dict], list[str], object]:
    """Items ({name, path or array, split, class}) of an experiment's three splits, class names, the splits."""
    from pipeline.data import readers  # TensorFlow: only when the audit runs

    splits = load_splits(config)
    if isinstance(splits.reader, readers.RecordReader):
        raise common.DataError(
            f"dataset {config.dataset.name!r}: TFRecord shards are not audited; audit the "
            f"folder they were written from (`data audit ROOT`)"
        )
    items = []
    for split in ("train", "validation", "test"):
        sources, labels = getattr(splits, split)
        for position, (source, label) in enumerate(zip(sources, labels)):
            item = {"split": split, "class": splits.class_names[int(label)]}
            if isinstance(splits.reader, readers.ArrayReader):
                item.update(name=f"{split}[{position}]", array=source)
            else:
                item.update(name=str(source), path=Path(source))
            items.append(item)
    return items, splits.class_names, splits


def audit(target, *, overrides=(), out=None, write_lists=None, threshold=None, progress=True) -> dict:
    """Runs the audit of a folder or an experiment and writes its report.

    Args:
        target: a folder (Path or str that exists) or an experiment name / YAML path.
        overrides: `--set` overrides (experiments only).
        out: report folder (default ROOT/../<rootname>-audit, or runs/<experiment>/data-audit).
        write_lists: folder for list files without leaked and conflicting images, or None.
        threshold: pHash bits for a near duplicate (default fingerprints.NEAR_THRESHOLD).
    Returns:
        The audit.json content.
    Raises:
        DataError (exit 2, nothing written): no images, an unknown experiment, arguments that do not apply.
    """
    import numpy as np

    from pipeline import config as config_lib
    from pipeline.data import fingerprints, near_duplicates, readers  # TensorFlow: only when the audit runs

    threshold = fingerprints.NEAR_THRESHOLD if threshold is None else int(threshold)
    if not 0 <= threshold <= 32:
        raise common.DataError(f"--threshold must be 0..32 bits of 64; received {threshold}")
    small_side, folder = SMALL_SIDE, Path(target)
    if folder.is_dir() or os.sep in str(target) and not str(target).endswith((".yaml", ".yml")):
        folder = common.existing_folder(folder)
        if overrides:
            raise common.DataError("--set applies to an experiment, not to a folder")
        items, class_names = _items_of_folder(folder)
        out = Path(out) if out else common.sibling(folder, "-audit")
        name = str(folder)
    else:
        config = config_lib.load_config(str(target), list(overrides))
        items, class_names, splits = _items_of_experiment(config)
        if config.input.image_size:
            small_side = max(1, min(config.input.image_size) // 2)
        out = Path(out) if out else config_lib.PROJECT_ROOT / "runs" / Path(str(target)).stem / "data-audit"
        name = f"experiment {target}"
        if write_lists is not None and isinstance(splits.reader, readers.ArrayReader):
            raise common.DataError(
                f"--write-lists: dataset {config.dataset.name!r} is held in memory, not as files; "
                f"list files can only name image files"
            )
    if not items:
        raise common.DataError(f"{target}: no image files found")
    if write_lists is not None and Path(write_lists).exists() and not Path(write_lists).is_dir():
        raise common.DataError(f"--write-lists {write_lists}: not a folder")
    with image_files.progress_bar(len(items), "fingerprinting images", enabled=progress) as bar:
        if "array" in items[0]:
            prints = fingerprints.fingerprint_arrays(np.stack([item["array"] for item in items]), progress=bar)
        else:
            prints = fingerprints.fingerprint_files([item["path"] for item in items], progress=bar)
    if len(prints.index) == 0:
        raise common.DataError(f"{target}: none of the {len(items)} files decodes as an image")
    kept = [items[i] for i in prints.index]
    exact = fingerprints.exact_pairs(prints.exact, prints.height, prints.width)
    near, correlation, search = near_duplicates.find(prints, threshold=threshold)
    exact_groups = fingerprints.group(len(kept), exact)
    all_groups = fingerprints.group(len(kept), np.concatenate([exact, near[:, :2]]) if len(near) else exact)
    exact_sets = {frozenset(g) for g in exact_groups}
    near_groups = [g for g in all_groups if frozenset(g) not in exact_sets]
    report = _report(
        kept,
        prints,
        items,
        exact_groups,
        near_groups,
        all_groups,
        class_names,
        near=near,
        correlation=correlation,
        search=search,
        small_side=small_side,
        threshold=threshold,
        name=name,
    )
    report["out"] = str(out)
    _write(out, report, kept)
    if write_lists is not None:
        report["lists"] = _write_lists(Path(write_lists), kept, class_names, report)
        atomic_write_json(out / "audit.json", report)
    return report


def _describe_group(group, kept, prints, kind, lowest) -> dict:
    """A group as audit.json lists it: kind (exact/near), size, members (path, split, class), the largest
    pHash distance of a member to the first, and the lowest verified correlation of its near pairs (`lowest`)."""
    from pipeline.data import fingerprints

    members = [{"path": kept[i]["name"], "split": kept[i]["split"], "class": kept[i]["class"]} for i in group]
    distance = fingerprints.hamming(prints.phash[group[0]], prints.phash[list(group)])
    described = {"kind": kind, "size": len(group), "members": members, "max_phash_distance": int(distance.max())}
    return described | {"min_correlation": round(lowest, 4) if lowest is not None else None}


def _report(
    kept, prints, items, exact_groups, near_groups, all_groups, class_names, *, near, correlation, search, **rest
) -> dict:
    """The audit.json content (see docs_audit.md for every key)."""
    import numpy as np

    from pipeline.data import fingerprints, near_duplicates

    small_side, threshold, name = rest["small_side"], rest["threshold"], rest["name"]
    split_count = collections.Counter(item["split"] for item in kept)
    exact_sets = {frozenset(g) for g in exact_groups}
    member_of = {i: n for n, group in enumerate(all_groups) for i in group}
    lowest = {}
    for (i, _, _), r in zip(near.tolist(), correlation.tolist()):
        lowest[member_of[i]] = min(r, lowest.get(member_of[i], 1.0))
    described_groups = [
        _describe_group(g, kept, prints, "exact" if frozenset(g) in exact_sets else "near", lowest.get(n))
        for n, g in enumerate(all_groups)
    ]
    # Leakage and conflicts are read from direct pairs, not from whole groups: a group is a connected
    # component, and on small low-texture images (CIFAR-10's skies) chains join pictures that are not
    # duplicates of each other. Every pair inside an exact group is direct (identical pixels).
    direct = [tuple(pair) for pair in near[:, :2].tolist()]
    for group in exact_groups:
        direct += list(itertools.combinations(group, 2)) if len(group) <= 200 else [(group[0], i) for i in group[1:]]
    leak_ids, conflict_ids, leaked, train_copies, conflicting = set(), set(), set(), set(), set()
    for i, j in direct:
        a, b = kept[i], kept[j]
        if {a["split"], b["split"]} & {"validation", "test"} and "train" in (a["split"], b["split"]):
            leak_ids.add(member_of[i])
            leaked.update(k for k in (i, j) if kept[k]["split"] in ("validation", "test"))
            train_copies.update(k for k in (i, j) if kept[k]["split"] == "train")
        if a["class"] is not None and b["class"] is not None and a["class"] != b["class"]:
            conflict_ids.add(member_of[i])
            conflicting.update((i, j))
    leaks = [described_groups[n] for n in sorted(leak_ids)]
    conflicts = [described_groups[n] for n in sorted(conflict_ids)]
    leaked_by_split = collections.Counter(kept[i]["split"] for i in leaked)
    per_class = {}
    for class_name in sorted({item["class"] for item in kept}, key=lambda c: (c is None, c or "")):
        rows = [n for n, item in enumerate(kept) if item["class"] == class_name]
        heights, widths = prints.height[rows], prints.width[rows]
        aspect = widths / heights
        per_class[class_name or "(no class)"] = {
            "count": len(rows),
            "height": [int(heights.min()), int(np.median(heights)), int(heights.max())],
            "width": [int(widths.min()), int(np.median(widths)), int(widths.max())],
            "aspect_ratio": [
                round(float(aspect.min()), 3),
                round(float(np.median(aspect)), 3),
                round(float(aspect.max()), 3),
            ],
            "very_small": [kept[n]["name"] for n in rows if min(prints.height[n], prints.width[n]) < small_side],
            "very_dark": [kept[n]["name"] for n in rows if prints.brightness[n] < DARK],
            "nearly_uniform": [kept[n]["name"] for n in rows if prints.contrast[n] < UNIFORM],
        }
    splits = {split or "all": split_count[split] for split in SPLIT_ORDER if split_count[split]}
    warnings, lowest = [], search["min_correlation"]
    in_groups = sum(len(g) for g in near_groups)
    if lowest > near_duplicates.VERIFY_LADDER[0]:  # Fashion-MNIST: garments of one outline (RESULTS.md)
        warnings.append(
            f"near duplicates verified at a correlation >= {lowest}, not {near_duplicates.VERIFY_LADDER[0]}: "
            f"below, over {near_duplicates.LOOK_ALIKE_SHARE:.0%} of the images had a match (look-alikes); "
            f"copies changed more than that are missed"
        )
    if in_groups > max(near_duplicates.LOOK_ALIKE_SHARE * len(kept), near_duplicates.LOOK_ALIKE_MIN):
        warnings.append(
            f"{in_groups} of {len(kept)} images ({100 * in_groups / len(kept):.0f}%) fall in near-duplicate groups: "
            f"many pictures are alike even in detail, so the near-duplicate, leakage and conflict figures may "
            f"count look-alikes, not copies; look at the sheets (the exact duplicates are reliable)"
        )
    return {
        "source": name,
        "warnings": warnings,
        "images": len(kept),
        "undecodable": [items[i]["name"] for i, _ in prints.failed],
        "splits": splits,
        "classes": class_names,
        "method": {
            "exact": "farmhash64 of the decoded pixels (pipeline.data.decode, as training decodes)",
            "near": f"candidates: pHash distance <= {threshold} and dHash <= {fingerprints.DHASH_THRESHOLD} bits "
            f"of 64 (imagehash) for images of one size, pHash <= {near_duplicates.RESIZED_PHASH} and dHash <= "
            f"{near_duplicates.RESIZED_DHASH} (whole or centre crop) for different sizes, exact all-pairs search; "
            f"kept when the detail correlation of the grey thumbnails (crops tried for different sizes) is "
            f">= {lowest}",
            "near_candidates": search["candidates"],
            "near_min_correlation": lowest,
            "near_verified": len(near),
            "very_small_side": small_side,
            "very_dark_mean": DARK,
            "nearly_uniform_std": UNIFORM,
        },
        "exact_duplicate_groups": len(exact_groups),
        "near_duplicate_groups": len(near_groups),
        "images_in_duplicate_groups": sum(len(g) for g in all_groups),
        "leakage": {
            "groups": len(leaks),
            "images": {split: leaked_by_split[split] for split in ("validation", "test")},
            "share": {
                split: round(leaked_by_split[split] / splits[split], 4)
                for split in ("validation", "test")
                if splits.get(split)
            },
        },
        "conflicts": {"groups": len(conflicts), "images": len(conflicting)},
        "per_class": per_class,
        "groups": described_groups,
        "leak_groups": leaks,
        "leaked_images": sorted(kept[i]["name"] for i in leaked),
        "train_copies_of_leaked": sorted(kept[i]["name"] for i in train_copies),
        "conflicting_images": sorted(kept[i]["name"] for i in conflicting),
        "conflict_groups": conflicts,
    }


def _load(item):
    """uint8 [H, W, C] of an item as training decodes it, or None when it no longer decodes."""
    if "array" in item:
        return item["array"]
    import tensorflow as tf

    from pipeline.data import decode

    try:
        return decode.decode_image(tf.io.read_file(str(item["path"])), channels=3).numpy()
    except (OSError, tf.errors.OpError):
        return None


def _sheet(path, described: list[dict], kept, title) -> None:
    """One row per described group (audit.json's form): each member's image, path, split and class; the
    first caption also says exact or near (and the largest pHash distance)."""
    from pipeline.data import contact_sheet

    index = {item["name"]: n for n, item in enumerate(kept)}
    rows = []
    for group in described[:SHEET_ROWS]:
        cells = []
        for position, member in enumerate(group["members"][: contact_sheet.MAX_COLUMNS]):
            caption = f"{member['path']}\n{member['split'] or ''} {member['class'] or ''}".rstrip()
            if position == 0:
                kind = "exact" if group["kind"] == "exact" else f"near, r >= {group['min_correlation']:.2f}"
                caption = f"[{kind}] {caption}"
            cells.append((_load(kept[index[member["path"]]]), caption))
        rows.append(cells)
    if len(described) > SHEET_ROWS:
        title += f" (first {SHEET_ROWS} of {len(described)} groups; audit.json lists all)"
    contact_sheet.write_sheet(path, rows, title=title)


def _write(out: Path, report: dict, kept) -> None:
    """audit.json, audit.md and the contact sheets into `out` (created), each atomically."""
    sheets = [
        ("duplicates.png", report["groups"], "Duplicate groups (one row each): exact and near"),
        ("leakage.png", report["leak_groups"], "Duplicates across splits (train vs validation/test): leakage"),
        ("conflicts.png", report["conflict_groups"], "Duplicates filed under different classes: conflicts"),
    ]
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "audit.json", report)
        atomic_write_text(out / "audit.md", _markdown(report))
        for name, described, title in sheets:
            if described:
                _sheet(out / name, described, kept, title)
            elif (out / name).exists():
                (out / name).unlink()  # a sheet of an earlier audit would show what this one did not find
    except OSError as error:
        raise common.DataError(f"cannot write to {out} ({fileio.os_reason(error)}); choose another --out") from None


def _sheet_name(groups, name: str) -> str:
    return f" ({name}.png)" if groups else ""


def _markdown(report: dict) -> str:
    leak, conflicts = report["leakage"], report["conflicts"]
    lines = [
        f"# Data audit: {report['source']}",
        "",
        f"- {report['images']} images ({', '.join(f'{k} {v}' for k, v in report['splits'].items())}), "
        f"{len(report['undecodable'])} undecodable.",
        f"- Duplicates: {report['exact_duplicate_groups']} exact groups, {report['near_duplicate_groups']} near "
        f"groups, {report['images_in_duplicate_groups']} images in them{_sheet_name(report['groups'], 'duplicates')}.",
        f"- Leakage (the same picture in train and in validation/test): {leak['groups']} groups; "
        + (
            ", ".join(
                f"{split} {leak['images'][split]} images ({100 * share:.2f}% of it)"
                for split, share in leak["share"].items()
            )
            or "no validation or test split here"
        )
        + _sheet_name(report["leak_groups"], "leakage")
        + ".",
        f"- Conflicts (the same picture under different classes): {conflicts['groups']} groups, "
        f"{conflicts['images']} images{_sheet_name(report['conflict_groups'], 'conflicts')}.",
        *(f"- **Warning**: {warning}." for warning in report["warnings"]),
        "",
        "| class | images | height min/median/max | width min/median/max | aspect min/median/max | very small "
        "| very dark | nearly uniform |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for name, row in report["per_class"].items():
        lines.append(
            f"| {name} | {row['count']} | {'/'.join(map(str, row['height']))} | "
            f"{'/'.join(map(str, row['width']))} | {'/'.join(map(str, row['aspect_ratio']))} | "
            f"{len(row['very_small'])} | {len(row['very_dark'])} | {len(row['nearly_uniform'])} |"
        )
    method = report["method"]
    lines += [
        "",
        f"Exact: {method['exact']}. Near: {method['near']}. Very small: shorter side < "
        f"{method['very_small_side']} px; very dark: mean grey < {method['very_dark_mean']}; nearly "
        f"uniform: grey standard deviation < {method['nearly_uniform_std']}. Paths of every flagged image "
        f"are in audit.json.",
        "",
    ]
    return "\n".join(lines)


def _write_lists(folder: Path, kept, class_names, report) -> dict:
    """train/val/test list files (and classes.txt) without conflicting images and without the train copies
    of leaked ones; validation and test stay as they were, so results remain comparable."""
    if not class_names:
        raise common.DataError("--write-lists: the images are not in class folders; there are no labels to list")
    paths = [str(item["path"]) for item in kept]
    root = Path(os.path.commonpath(paths)) if len(paths) > 1 else Path(paths[0]).parent
    root = root if root.is_dir() else root.parent
    dropped = set(report["conflicting_images"]) | set(report["train_copies_of_leaked"])
    files, written = {}, {}
    names = {"train": "train.txt", "validation": "val.txt", "test": "test.txt", None: "train.txt"}
    for split in SPLIT_ORDER:
        chosen = [item for item in kept if item["split"] == split and item["name"] not in dropped]
        if not any(item["split"] == split for item in kept):
            continue
        lines = [common.LABELS_HEADER] + [
            f"{Path(item['path']).relative_to(root).as_posix()} {class_names.index(item['class'])}\n" for item in chosen
        ]
        files[folder / names[split]] = "".join(lines)
        written[names[split]] = len(chosen)
    files[folder / "classes.txt"] = "\n".join(class_names) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    common.write_lists(files)
    keys = {"train.txt": "train", "val.txt": "validation", "test.txt": "test"}
    settings = ["dataset.name=file_list", f"dataset.root={root}", f"dataset.classes={folder / 'classes.txt'}"]
    settings += [f"dataset.lists.{keys[name]}={folder / name}" for name in written]
    return {
        "folder": str(folder),
        "root": str(root),
        "counts": written,
        "dropped": sorted(dropped),
        "train_with": " ".join(f"--set {setting}" for setting in settings),
    }


def run(args) -> int:
    """`data audit`: prints the summary lines of audit.md and where the report is; exit code 0."""
    report = audit(
        args.target, overrides=args.overrides, out=args.out, write_lists=args.write_lists, threshold=args.threshold
    )
    summary = _markdown(report).split("\n\n")[1]  # the bullet lines, warnings included
    print(summary)
    out = args.out or ("ROOT/../<rootname>-audit" if Path(args.target).is_dir() else "runs/<experiment>/data-audit")
    print(f"report: {Path(report.get('out', out))}/audit.md, audit.json and the contact sheets")
    if "lists" in report:
        lists = report["lists"]
        print(
            f"lists without {len(lists['dropped'])} leaked/conflicting images in {lists['folder']}; train on them "
            f"with: {lists['train_with']}"
        )
    return 0
