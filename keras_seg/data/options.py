"""tf.data options every keras_seg dataset carries."""

from __future__ import annotations

import tensorflow as tf


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's autotuner switched off.

    Why not TensorFlow's default: in TensorFlow 2.21 (seen with 2.21.0), deleting an iterator
    can block until the autotuner's model thread wakes from its sleep, which doubles up to
    60 s. The ISBI training pipeline's iterator took 41.9 s to delete after 100 s of use
    (gdb: `~RootDataset::Iterator` waiting on `Model::OptimizeLoop`); Keras' `fit` deletes
    its training iterator on return, so `keras-seg train` sat idle for up to 44 s after its
    last epoch (issue 13). Without the autotuner, `AUTOTUNE` parallelism is the number of
    cores and `prefetch(AUTOTUNE)` grows its buffer on demand; the ISBI training pipeline
    delivered as many batches per second either way (42,038 against 40,582 in 100 s), and
    `keras-seg benchmark pipeline` checks every zoo config's pipeline against its training.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
