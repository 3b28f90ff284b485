"""Data at any size (issue 13), on a few photos far larger than the training resolution (1200x900 JPEGs):
what training caches and shuffles has the working size, not the file's; `input.cache: auto` picks memory
or streaming at the budget's edges and says why; TFRecord shards and the folder give identical batches
for a seed, and so do `cache: none` and `memory`.

The working sizes below are derived by hand from the rule in `decode.working_size` (not by calling it),
for image_size (40, 64) = (height, width):
- crop none: both sides >= (40, 64), the binding side exact. Landscape 900x1200 (h x w): 64/1200 > 40/900,
  so width 64, height 900 * 64 / 1200 = 48. Portrait 1200x900: 64/900 binds: width 64, height 85.3 -> 85.
- crop shorter_side: shorter side = max(40, 64) = 64; the longer 1200 * 64 / 900 = 85.3 -> 85.
- crop square, margin 30: the square's side 900 - 60 = 840 -> 64, scale 64/840; the margin 30 -> 2.3 -> 2;
  shorter side 64 + 2 * 2 = 68; longer 1200 * 68 / 900 = 90.7 -> 91.
- crop random_resized, scale (0.25, 1): a crop may cover sqrt(0.25) = 1/2 of a side and be enlarged to 64,
  so the shorter side keeps 64 * 2 = 128; the longer 1200 * 128 / 900 = 170.7 -> 171.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import config as config_lib
from pipeline.cli import main
from pipeline.data import splits as splits_lib
from pipeline.data.transform import EvalTransform

IMAGE_SIZE = (40, 64)
MARGIN = 30
LANDSCAPE, PORTRAIT = (900, 1200), (1200, 900)  # (height, width) of the files
PER_CLASS = 5
WORKING = {  # (crop, file size) -> working (height, width); see the module docstring
    ("none", LANDSCAPE): (48, 64),
    ("none", PORTRAIT): (85, 64),
    ("shorter_side", LANDSCAPE): (64, 85),
    ("shorter_side", PORTRAIT): (85, 64),
    ("square", LANDSCAPE): (68, 91),
    ("square", PORTRAIT): (91, 68),
    ("random_resized", LANDSCAPE): (128, 171),
    ("random_resized", PORTRAIT): (171, 128),
}
CROP_MODES = ["none", "square", "shorter_side", "random_resized"]
CROP_OPTIONS = {"none": {}, "shorter_side": {}, "square": {"margin": MARGIN}, "random_resized": {"scale": [0.25, 1.0]}}

pytestmark = pytest.mark.filterwarnings("ignore:Your input ran out of data")


def smooth_photo(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [height, width, 3]: smooth random content (a 6x8 random grid, upscaled bicubically)."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    """ROOT/{cat,dog}/pNN.jpg (1200x900 and 900x1200, JPEG q90), its shards, and a data dir for scan caches."""
    base = tmp_path_factory.mktemp("photos")
    root, sizes = base / "photos", {}
    for label, name in enumerate(("cat", "dog")):
        for number in range(PER_CLASS):
            size = LANDSCAPE if number % 2 == 0 else PORTRAIT
            path = root / name / f"p{number}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smooth_photo(*size, seed=10 * label + number)).save(path, "JPEG", quality=90)
            sizes[str(path)] = size
    shards = base / "shards"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["data", "shard", str(root), "--out", str(shards), "--shards", "2", "--workers", "2"]) == 0
    return {"root": root, "shards": shards, "sizes": sizes, "data_dir": base / "data"}


def make_config(photos: dict, *, source: str = "folder", crop: str = "square", seed: int = 3, **input_options):
    """A `tiny` config on the photos: 2 test, 2 validation and 6 training images, batches of 4."""
    data = {
        "name": "data_scale_test",
        "seed": seed,
        "dataset": {
            "name": source,
            "root": str(photos["shards" if source == "tfrecord" else "root"]),
            "data_dir": str(photos["data_dir"]),
            "test_split": 0.2,
            "validation_split": 0.25,
        },
        "input": {
            "image_size": list(IMAGE_SIZE),
            "channels": 3,
            "crop": {"mode": crop, **CROP_OPTIONS[crop]},
            "augment": {"horizontal_flip": True, "width_shift": 0.1},
            **input_options,
        },
        "model": {"name": "tiny"},
        "train": {"epochs": 1, "batch_size": 4, "verbose": 0},
    }
    return config_lib.from_dict(data)


def epochs(dataset, count: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` passes over a dataset: per pass (images, one-hot labels), batches concatenated."""
    passes = []
    for _ in range(count):
        batches = list(dataset.as_numpy_iterator())
        passes.append((np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])))
    return passes


def assert_same_passes(got, want):
    assert len(got) == len(want)
    for (images, labels), (want_images, want_labels) in zip(got, want):
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(images, want_images)


@pytest.fixture
def recorded(monkeypatch) -> dict:
    """The datasets that `cache` and `shuffle` are called on while a pipeline is built."""
    calls = {"cache": [], "shuffle": []}
    for method in calls:
        original = getattr(tf.data.Dataset, method)

        def wrapper(self, *args, _original=original, _method=method, **kwargs):
            calls[_method].append(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(tf.data.Dataset, method, wrapper)
    return calls


# --------------------------------------------------------------------------------------------------
# What is cached and shuffled
# --------------------------------------------------------------------------------------------------


# Two crop modes in make test, the others in make test-slow (2-3 s each on a 2-core VM).
@pytest.mark.parametrize(
    "crop", [c if c in ("none", "square") else pytest.param(c, marks=pytest.mark.slow) for c in CROP_MODES]
)
def test_training_caches_and_shuffles_working_size_images(photos, recorded, crop):
    config = make_config(photos, crop=crop, cache="memory")
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    dataset = splits.dataset("train", training=True)
    # the names shuffled for the streamed first epoch, then the cached images for the later ones
    assert len(recorded["cache"]) == 1 and len(recorded["shuffle"]) == 2
    assert recorded["shuffle"][0].element_spec[0].dtype == tf.string
    cached = list(recorded["cache"][0].as_numpy_iterator())
    shuffled = list(recorded["shuffle"][1].as_numpy_iterator())
    train_paths = [str(path) for path in splits.train[0]]
    assert len(cached) == len(train_paths) == 6
    # the files come in shuffled order: each image's size against the sizes of the training files
    expected = sorted((*WORKING[crop, photos["sizes"][path]], 3) for path in train_paths)
    assert sorted(image.shape for image, _, _ in cached) == expected, crop
    for image, margin, _label in cached:
        assert image.dtype == np.uint8 and margin == (2 if crop == "square" else 0)
        assert image.nbytes < 1200 * 900 * 3 / 40  # 0.3-2% of the file's decoded size
    # What is shuffled is what was cached (the same small images), not the files decoded anew.
    assert sorted(image.shape for image, _, _ in shuffled) == sorted(image.shape for image, _, _ in cached)
    images, labels = next(iter(dataset))
    assert images.shape == (4, *IMAGE_SIZE, 3) and labels.shape == (4, 2)


@pytest.mark.parametrize("source", ["folder", pytest.param("tfrecord", marks=pytest.mark.slow)])
def test_streaming_shuffles_names_or_ids_and_caches_nothing(photos, recorded, source):
    config = make_config(photos, source=source, cache="none")
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    images, _ = next(iter(splits.dataset("train", training=True)))
    assert images.shape == (4, *IMAGE_SIZE, 3)
    assert recorded["cache"] == [] and len(recorded["shuffle"]) == 1
    item_spec, label_spec = recorded["shuffle"][0].element_spec
    # file names (folder) or record ids (shards): a few bytes per image in the shuffle buffer
    assert item_spec.shape == [] and item_spec.dtype == (tf.string if source == "folder" else tf.int64)
    assert label_spec.dtype == tf.int64


# --------------------------------------------------------------------------------------------------
# input.cache: auto
# --------------------------------------------------------------------------------------------------


def needed_bytes(photos: dict, splits, crop: str) -> int:
    """What `auto` must compare with the budget: the training split at its working size (estimated by
    `estimate_working_bytes` from the files' sizes as written) plus the evaluation splits as float32 at
    the model's input size."""
    transform = splits.sized(EvalTransform.from_input_section(make_config(photos, crop=crop).input))
    sizes = [
        photos["sizes"][str(path)]
        for path in splits_lib.Splits.from_config(make_config(photos, crop=crop), log=lambda message: None).train[0]
    ]
    evaluated = len(splits.validation[1]) + len(splits.test[1])
    return splits_lib.estimate_working_bytes(sizes, transform) + 4 * IMAGE_SIZE[0] * IMAGE_SIZE[1] * 3 * evaluated


@pytest.mark.parametrize("source", ["folder", "tfrecord"])
@pytest.mark.parametrize("crop", ["none", "square", "random_resized"])
def test_auto_picks_memory_at_the_budget_and_streams_one_byte_over(photos, monkeypatch, source, crop):
    budgets_asked = []
    messages = []
    for over in (0, 1):
        config = make_config(photos, source=source, crop=crop, cache="auto", cache_budget_mb=7)
        splits = splits_lib.Splits.from_config(config, log=messages.append)
        needed = needed_bytes(photos, splits, crop)

        def budget(budget_mb, _limit=needed - over):
            budgets_asked.append(budget_mb)
            return _limit

        monkeypatch.setattr(splits_lib, "cache_budget_bytes", budget)
        mode = splits.cache_mode()
        assert mode == ("memory" if over == 0 else "none"), (source, crop, needed, over)
        assert splits.cache_mode() == mode  # resolved once
        chosen = [message for message in messages if message.startswith("input.cache auto:")]
        assert len(chosen) == 1 + over  # logged once per Splits
        assert chosen[-1].startswith(f"input.cache auto: {mode} (") and "budget" in chosen[-1]
    assert budgets_asked == [7, 7]  # input.cache_budget_mb reaches the budget


@pytest.mark.slow  # 5-12 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_estimate_bounds_the_cached_bytes(photos, recorded):
    """`estimate_working_bytes` (what `auto` weighs) is at least what is cached, and close to it."""
    for crop in CROP_MODES:
        recorded["cache"].clear()
        config = make_config(photos, crop=crop, cache="memory")
        splits = splits_lib.Splits.from_config(config, log=lambda message: None)
        splits.dataset("train", training=True)
        cached = sum(image.nbytes for image, _, _ in recorded["cache"][0].as_numpy_iterator())
        sizes = [photos["sizes"][str(path)] for path in splits.train[0]]
        estimate = splits_lib.estimate_working_bytes(sizes, splits.transform())
        assert cached <= estimate <= 1.1 * cached, (crop, cached, estimate)


def test_cache_budget_bytes():
    assert splits_lib.cache_budget_bytes(3) == 3 * 2**20
    assert splits_lib.cache_budget_bytes(None) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


# --------------------------------------------------------------------------------------------------
# Same batches from shards and folder, and with or without the cache
# --------------------------------------------------------------------------------------------------


def all_batches(photos: dict, *, source: str, evaluation: bool = True, **options) -> dict:
    """Two training epochs and (with `evaluation`) one pass over validation and test."""
    config = make_config(photos, source=source, **options)
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    batches = {"train": epochs(splits.dataset("train", training=True))}
    if evaluation:
        batches.update(validation=epochs(splits.dataset("validation"), 1), test=epochs(splits.dataset("test"), 1))
    return batches


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_shards_and_folder_give_identical_batches(photos):
    folder = all_batches(photos, source="folder")
    shards = all_batches(photos, source="tfrecord")
    assert [len(images) for images, _ in folder["train"]] == [6, 6]
    assert not np.array_equal(folder["train"][0][0], folder["train"][1][0])  # reshuffled, re-cropped
    for split in ("train", "validation", "test"):
        assert_same_passes(shards[split], folder[split])


@pytest.mark.parametrize("source", ["folder", "tfrecord"])
def test_cache_none_and_memory_give_the_same_first_epoch_and_every_image_each_epoch(photos, source):
    """The memory cache's first epoch streams the shuffled names through the decoder (no wait for every file
    before the first step): the same batches as `cache: none`; the second epoch, from the cache, holds
    every image once, in a new order."""
    options = {"source": source, "crop": "shorter_side", "evaluation": False}
    streamed, cached = (all_batches(photos, cache=cache, **options)["train"] for cache in ("none", "memory"))
    assert_same_passes(cached[:1], streamed[:1])
    (first_images, first_labels), (images, labels) = cached
    assert sorted(labels.argmax(1).tolist()) == sorted(first_labels.argmax(1).tolist())
    assert not np.array_equal(images, first_images)  # reshuffled (and re-cropped)


# --------------------------------------------------------------------------------------------------
# The image scan
# --------------------------------------------------------------------------------------------------


def test_scan_counts_distinct_colours_exactly(tmp_path):
    """The placeholder check counts distinct RGB triples of a 64x64 thumbnail (packed into integers
    for speed): the same count as unique rows."""
    from pipeline.data import image_files

    flat = np.zeros((64, 64, 3), np.uint8)
    for index, colour in enumerate([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (1, 2, 3)]):
        flat[index * 12 : (index + 1) * 12] = colour
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    noisy[:, :32] = noisy[:, 32:]  # repeated colours too
    for name, pixels in (("flat", flat), ("noisy", noisy)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    flat_check, noisy_check = image_files.scan_images([tmp_path / "flat.png", tmp_path / "noisy.png"])
    assert flat_check.colours == 5 and "placeholder" in flat_check.warning
    assert noisy_check.colours == len(np.unique(noisy.reshape(-1, 3), axis=0)) and noisy_check.warning is None
