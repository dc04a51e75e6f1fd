"""Training and validation batches from the config's data section."""

from __future__ import annotations

import tensorflow as tf

from keras_seg.config import Config


def batches(
    cfg: Config,
    dataset: tf.data.Dataset,
    training: bool,
    num_classes: int | None = None,
    batch_size: int | None = None,
) -> tf.data.Dataset:
    """Training or validation batches via `keras_seg.data.pipeline`.

    Training: augmented `data.crop_size` crops of `train.batch_size`, repeated forever.
    Validation: every image at its original resolution (batches of `eval.batch_size` padded
    to the largest image with ignored pixels), so the per-epoch validation mIoU measures the
    same thing as `keras-seg evaluate` in "whole" mode. With `data.cache`, both keep their
    decoded images in memory after the first pass.
    """
    import keras_seg.data

    default_batch = cfg.train.batch_size if training else cfg.eval.batch_size
    ds = keras_seg.data.pipeline(
        dataset,
        training=training,
        crop_size=tuple(cfg.data.crop_size) if training else None,
        batch_size=batch_size or default_batch,
        seed=cfg.train.seed,
        num_classes=num_classes,
        repeat=training,
        cache=cfg.data.cache,
        **(cfg.data.augment if training else {}),
    )
    options = tf.data.Options()
    # Generated and file data alike: shard by element across workers (never by file).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)
