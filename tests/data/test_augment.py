"""pipeline/data/batch_augment.py: the random resized crop, its eval centre crop, and the Keras batch layers run
seeded, in parallel, repeatably inside tf.data."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import batch_augment as augment

NUM_CLASSES = 4


def _coordinates(height, width):
    """float32 [H, W, 3]: channel 0 the row index, channel 1 the column index, channel 2 zero."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.float32)


def _class_batches(batches=6, batch_size=16, size=16, seed=0):
    """Images of constant value 40 * (class + 1), so a pixel tells which example it came from."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, NUM_CLASSES, size=(batches, batch_size))
    images = np.broadcast_to(
        (40.0 * (classes + 1))[..., None, None, None], (batches, batch_size, size, size, 3)
    ).astype(np.float32)
    return images, np.eye(NUM_CLASSES, dtype=np.float32)[classes]


def _run(augmenter, images, labels, *, seed, deterministic=True):
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = augment.map_batch_augment(dataset, augmenter, seed=seed, deterministic=deterministic)
    return [(x.numpy(), y.numpy()) for x, y in dataset]


# -- random resized crop ------------------------------------------------------------------------


def test_random_resized_crop_takes_the_requested_area_and_repeats_with_its_seed():
    image = tf.constant(_coordinates(64, 64))
    crops = [
        augment.random_resized_crop(
            image, size=16, scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=tf.constant([3, s])
        ).numpy()
        for s in range(4)
    ]
    for crop in crops:
        assert crop.shape == (16, 16, 3) and crop.dtype == np.float32
        # A quarter of the area at ratio 1 is a 32 x 32 window: rows and columns span ~31 source pixels.
        assert 28 <= np.ptp(crop[..., 0]) <= 32 and 28 <= np.ptp(crop[..., 1]) <= 32
    assert len({(c[0, 0, 0], c[0, 0, 1]) for c in crops}) > 1  # different seeds, different places
    traced = tf.function(lambda x, s: augment.random_resized_crop(x, size=16, seed=s)).get_concrete_function(
        tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)
    )
    assert traced.output_shapes.as_list() == [16, 16, 3]  # static shape kept in a graph (tf.data)
    again = augment.random_resized_crop(
        image, size=16, scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=tf.constant([3, 0])
    ).numpy()
    np.testing.assert_array_equal(again, crops[0])


def test_random_resized_crop_refuses_a_scale_outside_zero_one():
    with pytest.raises(ValueError, match=r"scale must satisfy 0.0 < min <= max <= 1.0. Received: scale=\(0.5, 1.5\)"):
        augment.random_resized_crop(tf.zeros([8, 8, 3]), size=4, scale=(0.5, 1.5), seed=tf.constant([0, 0]))


def test_center_crop_keeps_the_central_seven_eighths():
    image = _coordinates(40, 40)
    out = augment.center_crop_for_random_resized(tf.constant(image), size=35).numpy()
    np.testing.assert_allclose(out, image[2:37, 2:37], atol=1e-4)  # 0.875 x 40 = 35, offset (40 - 35) // 2
    batch = augment.center_crop_for_random_resized(tf.constant(np.stack([image, image])), size=(35, 35))
    np.testing.assert_allclose(batch.numpy()[1], out, atol=1e-4)


# -- batch layers -------------------------------------------------------------------------------


def test_nothing_on_builds_nothing_and_bad_values_are_refused():
    assert augment.build_batch_augment() is None
    assert augment.map_batch_augment(tf.data.Dataset.range(3), None, seed=0).cardinality() == 3
    with pytest.raises(ValueError, match=r"cut_mix must be 0 \(off\) to 1.0. Received: cut_mix=2.0"):
        augment.build_batch_augment(cut_mix=2.0)
    with pytest.raises(
        ValueError,
        match=r"color_jitter takes brightness, contrast, saturation and hue. "
        r"Received: \['gamma'\]",
    ):
        augment.build_batch_augment(color_jitter={"gamma": 0.1})


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_all_layers_repeat_exactly_with_the_same_seed_in_a_parallel_map():
    """Two pipelines with the same seed give the same batches (a layer's own generator state, advanced by
    the first, plays no part); every batch differs from its input; images stay in [0, 255]."""
    augmenter = augment.build_batch_augment(
        rand_augment={"num_ops": 2, "factor": 0.5},
        color_jitter={"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05},
        random_erasing=0.25,
        mix_up=0.2,
        cut_mix=1.0,
    )
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, size=(3, 8, 8, 8, 3)).astype(np.float32)
    labels = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, size=(3, 8))]
    first = _run(augmenter, images, labels, seed=7)
    second = _run(augmenter, images, labels, seed=7)
    for (x1, y1), (x2, y2), x0 in zip(first, second, images):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        assert not np.array_equal(x1, x0)
        assert x1.dtype == np.float32 and x1.min() >= 0 and x1.max() <= 255
        np.testing.assert_allclose(y1.sum(axis=1), 1.0, atol=1e-5)


def test_rand_augment_picks_new_operations_every_batch_and_per_image():
    """keras-team/keras#21169: RandAugment drew its operations once per trace before Keras 3.11, so a
    tf.data pipeline applied the same two operations to every batch. Here the indices are read inside our
    own parallel map, batch after batch."""
    augmenter = augment.build_batch_augment(rand_augment={"num_ops": 2, "factor": 0.5})
    layer = augmenter.image_layers[0]

    def choices(images, seed):
        with augmenter.stream.using(seed):
            return layer.get_random_transformation(images, training=True)["layer_idxes"]

    images = tf.zeros([10, 8, 16, 16, 3])
    seeds = tf.data.Dataset.random(seed=3).batch(2)
    dataset = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(images), seeds)
    picked = [c.numpy().reshape(2, 8) for c in dataset.map(choices, num_parallel_calls=tf.data.AUTOTUNE)]
    per_batch = {tuple(p[:, 0]) for p in picked}
    assert len(per_batch) > 3, per_batch  # ops re-drawn per batch
    assert all(len({tuple(p[:, i]) for i in range(8)}) > 1 for p in picked)  # and per image

    # The same in the images: identical input batches come out different, batch to batch.
    same = np.full((4, 8, 16, 16, 3), 100.0, np.float32) + np.arange(16)[None, None, :, None, None]
    outputs = _run(augmenter, same, np.zeros((4, 8, NUM_CLASSES), np.float32), seed=1)
    assert not np.array_equal(outputs[0][0], outputs[1][0])


def _jitter(color_jitter, images):
    ((out, _),) = _run(
        augment.build_batch_augment(color_jitter=color_jitter),
        images[None],
        np.zeros((1, len(images), NUM_CLASSES), np.float32),
        seed=3,
    )
    return out


def test_color_jitter_amplitudes_go_both_ways_as_documented():
    """Keras' single-float factors would give contrast only in [1, 1.2] and a saturation multiplier in
    [-0.17, 0.25]; ours are torchvision's two-sided amplitudes."""
    rng = np.random.default_rng(0)
    base = np.array([150.0, 100.0, 80.0], np.float32)
    images = np.broadcast_to(base + rng.uniform(-20, 20, size=(16, 16, 1)).astype(np.float32), (128, 16, 16, 3))
    hsv = tf.image.rgb_to_hsv(images / 255.0).numpy()

    def spread(x):  # deviation from each channel's mean, which contrast scales
        return (x - x.mean(axis=(1, 2), keepdims=True)).std(axis=(1, 2, 3))

    contrast = spread(_jitter({"contrast": 0.2}, images)) / spread(images)
    assert 0.79 < contrast.min() < 0.9 and 1.1 < contrast.max() < 1.21, (contrast.min(), contrast.max())
    saturation = tf.image.rgb_to_hsv(_jitter({"saturation": 0.2}, images) / 255.0).numpy()[..., 1].mean(axis=(1, 2))
    saturation /= hsv[..., 1].mean(axis=(1, 2))
    assert 0.79 < saturation.min() < 0.9 and 1.1 < saturation.max() < 1.21, (saturation.min(), saturation.max())
    hue = tf.image.rgb_to_hsv(_jitter({"hue": 0.05}, images) / 255.0).numpy()[..., 0]
    shift = (((hue - hsv[..., 0]) + 0.5) % 1.0 - 0.5).mean(axis=(1, 2))  # around the colour circle
    assert -0.051 < shift.min() < -0.03 and 0.03 < shift.max() < 0.051, (shift.min(), shift.max())
    brightness = _jitter({"brightness": 0.2}, images).mean(axis=(1, 2, 3)) - images.mean(axis=(1, 2, 3))
    assert -51.1 < brightness.min() < -35 and 35 < brightness.max() < 51.1, (brightness.min(), brightness.max())
    assert augment.build_batch_augment(color_jitter={"hue": 0, "saturation": None}) is None
    with pytest.raises(ValueError, match=r"color_jitter.hue must be 0 \(off\) to 0.5. Received: color_jitter.hue=0.6"):
        augment.build_batch_augment(color_jitter={"hue": 0.6})


def test_mix_up_labels_weigh_classes_as_the_pixels_do():
    images, labels = _class_batches()
    for batch_images, batch_labels in _run(augment.build_batch_augment(mix_up=0.4), images, labels, seed=2):
        # constant images: pixel = sum_k y_k * 40 (k + 1) exactly when labels and pixels mix alike.
        expected = batch_labels @ (40.0 * np.arange(1, NUM_CLASSES + 1))
        np.testing.assert_allclose(batch_images.mean(axis=(1, 2, 3)), expected, rtol=1e-4)


def test_cut_mix_labels_are_the_pasted_area_fraction():
    images, labels = _class_batches()
    mixed_any = False
    for batch_images, batch_labels in _run(augment.build_batch_augment(cut_mix=1.0), images, labels, seed=2):
        values = 40.0 * np.arange(1, NUM_CLASSES + 1)
        fractions = np.stack([(batch_images[..., 0] == v).mean(axis=(1, 2)) for v in values], axis=1)
        np.testing.assert_allclose(fractions, batch_labels, atol=1e-5)
        mixed_any |= bool((batch_labels.max(axis=1) < 1).any())
    assert mixed_any


def test_mix_up_and_cut_mix_together_take_turns_per_batch():
    images, labels = _class_batches(batches=12)
    kinds = set()
    for batch_images, _ in _run(augment.build_batch_augment(mix_up=1.0, cut_mix=1.0), images, labels, seed=4):
        pure = np.isin(batch_images, 40.0 * np.arange(1, NUM_CLASSES + 1)).all()
        kinds.add("cut_mix" if pure else "mix_up")  # CutMix pastes pixels; MixUp blends them
    assert kinds == {"cut_mix", "mix_up"}


def test_random_erasing_probability_is_per_image():
    images = np.full((1, 64, 16, 16, 3), 128.0, np.float32)
    labels = np.zeros((1, 64, NUM_CLASSES), np.float32)
    ((always, _),) = _run(augment.build_batch_augment(random_erasing=1.0), images, labels, seed=0)
    assert (np.abs(always - 128).max(axis=(1, 2, 3)) > 0).all()
    ((quarter, _),) = _run(augment.build_batch_augment(random_erasing=0.25), images, labels, seed=0)
    erased = int((np.abs(quarter - 128).max(axis=(1, 2, 3)) > 0).sum())
    assert 5 <= erased <= 30, erased  # 16 expected of 64


def test_random_erasing_fill_value_cutout_style():
    images = np.full((1, 32, 16, 16, 3), 128.0, np.float32)
    labels = np.zeros((1, 32, NUM_CLASSES), np.float32)
    augmenter = augment.build_batch_augment(random_erasing=1.0, random_erasing_fill=[10, 20, 30])
    ((erased, _),) = _run(augmenter, images, labels, seed=0)
    changed = np.abs(erased - 128).max(axis=-1) > 0  # [batch, H, W]
    assert changed.any(axis=(1, 2)).all()  # every image has its rectangle
    np.testing.assert_array_equal(erased[changed], np.broadcast_to([10.0, 20.0, 30.0], (int(changed.sum()), 3)))
    ((grey, _),) = _run(
        augment.build_batch_augment(random_erasing=1.0, random_erasing_fill=[0]), images, labels, seed=0
    )
    assert set(np.unique(grey)) == {0.0, 128.0}
    for bad in ([300], [1, 2], ["mean"], [True]):
        with pytest.raises(ValueError, match=r"random_erasing_fill must be a pixel value in \[0, 255\] or \[R, G, B\]"):
            augment.build_batch_augment(random_erasing=0.5, random_erasing_fill=bad)


def test_random_erasing_fill_reaches_the_layer_through_the_input_pipeline():
    from pipeline.data import input_pipeline

    images = np.full((2, 8, 16, 16, 3), 128.0, np.float32)
    labels = np.zeros((2, 8, NUM_CLASSES), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    augment_config = {"horizontal_flip": True, "random_erasing": 1.0, "random_erasing_fill": [7, 7, 7]}
    dataset = input_pipeline._augment(dataset, augment_config, seed=0, deterministic=True)
    dataset = input_pipeline._batch_augment(dataset, augment_config, seed=0, deterministic=True)
    values = np.unique(np.concatenate([x.numpy().ravel() for x, _ in dataset]))
    assert values.tolist() == [7.0, 128.0]


def test_layers_compute_in_float32_under_a_mixed_precision_policy():
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        augmenter = augment.build_batch_augment(color_jitter={"hue": 0.05, "saturation": 0.2}, mix_up=0.2)
    finally:
        keras.config.set_dtype_policy(previous)
    images, labels = _class_batches(batches=1)
    ((out, mixed),) = _run(augmenter, images, labels, seed=0)
    assert out.dtype == np.float32 and mixed.dtype == np.float32
    assert all(layer.compute_dtype == "float32" for layer in augmenter.image_layers + augmenter.mixers)


def test_random_erasing_fill_of_the_wrong_length_stops_at_the_config(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "train",
            "tiny",
            "--print-config",
            "--set",
            "input.augment.random_erasing_fill=[1, 2]",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "input.augment.random_erasing_fill: expected [v] or [R, G, B]" in result.stdout + result.stderr
