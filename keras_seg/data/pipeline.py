"""`pipeline`: model-ready batches from an `(image, mask)` dataset.

Images stay float32 pixels in 0..255: the normalisation matching the backbone happens in
the model's first layer (`keras_seg.layers.Normalize`), so training, SavedModel and TFLite
all see the same pixels. Masks become int32 with 255 = ignore.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import tensorflow as tf

from keras_seg.data.augment import IMAGENET_MEAN
from keras_seg.data.augment import fit_and_pad
from keras_seg.data.augment import train_augment
from keras_seg.data.errors import tagged
from keras_seg.data.info import IGNORE_LABEL
from keras_seg.data.options import without_autotune


def pipeline(
    dataset: tf.data.Dataset,
    training: bool,
    crop_size: Sequence[int] | None = None,
    batch_size: int = 8,
    *,
    seed: int | None = None,
    num_classes: int | None = None,
    scale_range: Sequence[float] = (0.5, 2.0),
    flip: bool = True,
    jitter: bool | dict = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    vflip: bool = False,
    shuffle: bool | None = None,
    shuffle_buffer: int = 256,
    cache: bool | str = False,
    repeat: bool = False,
    drop_remainder: bool | None = None,
    threads: int | None = None,
) -> tf.data.Dataset:
    """Batches `(float32 [B, h, w, 3] in 0..255, int32 [B, h, w])` for training or evaluation.

    Training: random scale (`scale_range`), padding (image: `mean`, mask: 255) up to
    `crop_size`, random crop, horizontal (and with `vflip`, vertical) flip (identical on
    image and mask), photometric
    jitter (image only). Evaluation: no randomness; with `crop_size`, images larger than
    it are shrunk to fit (aspect kept) and all are padded to it; without, batches hold
    original sizes (with `batch_size > 1`, padded to the largest: mask 255, image grey).
    Masks are only ever resized with nearest neighbour.

    Args:
        dataset: `(uint8 [H, W, 3], uint8 [H, W])` elements, e.g. from `keras_seg.data.load`.
        training: augment and shuffle (True) or evaluate (False).
        crop_size: `(height, width)`; required for training.
        batch_size: samples per batch.
        seed: fixes shuffling and augmentation: the same seed gives the same batches.
        num_classes: when given, masks are checked to hold only `0..num_classes-1` and 255
            (`tf.errors.InvalidArgumentError` otherwise, which
            `keras_seg.data.data_error_from` turns into a one-line `DataError`).
        scale_range, flip, jitter, mean, vflip: augmentation settings (see
            `augment.train_augment`).
        shuffle: shuffle decoded samples in a buffer (default: `training`).
        shuffle_buffer: shuffle buffer size in samples (memory: decoded images).
        cache: cache decoded samples in memory (`True`) or in files with this path prefix,
            before shuffling and augmentation: files are read and decoded once, and every
            epoch still gets new random crops.
        repeat: repeat forever.
        drop_remainder: drop the last partial batch (default: `training`).
        threads: size of a private tf.data thread pool (default: TF's shared pool).

    Returns:
        A prefetched `tf.data.Dataset`.

    Example:
        >>> ds = pipeline(load("voc2012", "train", d), True, (512, 512), 8, seed=0)
    """
    if training and crop_size is None:
        raise ValueError("pipeline: training needs crop_size=(height, width)")
    if crop_size is not None and (len(crop_size) != 2 or min(crop_size) < 1):
        raise ValueError(f"pipeline: crop_size must be (height, width) > 0, got {crop_size!r}")
    if batch_size < 1:
        raise ValueError(f"pipeline: batch_size must be >= 1, got {batch_size!r}")
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"pipeline: scale_range must be 0 < low <= high, got {scale_range!r}")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder

    ds = dataset
    if cache:
        ds = ds.cache("" if cache is True else cache)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def train_map(index, element):
        image, mask = element
        sample_seed = tf.stack([tf.constant(seed, tf.int64), index])
        image, mask = train_augment(
            image, mask, crop_size, sample_seed, scale_range, flip, jitter, mean, vflip
        )
        return image, _check(mask, num_classes)

    def eval_map(image, mask):
        if crop_size is None:
            return tf.cast(image, tf.float32), _check(tf.cast(mask, tf.int32), num_classes)
        image, mask = fit_and_pad(image, mask, crop_size, mean)
        return image, _check(mask, num_classes)

    if training:
        ds = ds.enumerate().map(train_map, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(eval_map, num_parallel_calls=tf.data.AUTOTUNE)
    if not training and crop_size is None and batch_size > 1:
        grey = float(sum(mean) / len(mean))
        ds = ds.padded_batch(
            batch_size,
            padding_values=(tf.constant(grey), tf.constant(IGNORE_LABEL)),
            drop_remainder=drop_remainder,
        )
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    if threads:
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
    return without_autotune(ds.with_options(options))


def _check(mask: tf.Tensor, num_classes: int | None) -> tf.Tensor:
    """Assert mask values are class ids or 255 (a no-op without `num_classes`)."""
    if num_classes is None:
        return mask
    wrong = (mask < 0) | ((mask >= num_classes) & (mask != IGNORE_LABEL))
    message = tf.strings.join(
        [
            tagged("mask values "),
            tf.strings.format("{}", tf.unique(tf.boolean_mask(mask, wrong))[0], summarize=8),
            f" are outside the classes 0..{num_classes - 1} and {IGNORE_LABEL} (ignore)",
        ]
    )
    message = tf.where(tf.reduce_any(wrong), message, "")
    with tf.control_dependencies([tf.debugging.Assert(tf.equal(message, ""), [message])]):
        return tf.identity(mask)
