"""Data for training and evaluation, from the config's data section.

Real data sets come from `keras_seg.data` (`load`, `info`, `pipeline`). The built-in
"synthetic" set (`keras_seg.data.synthetic`) is generated here, so the demo and the tests
need no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from keras_seg.config import Config
from keras_seg.data.info import voc_palette

SYNTHETIC_DEFAULTS = {"num_train": 512, "num_val": 128, "size": 96, "seed": 0}


@dataclass(frozen=True)
class ClassInfo:
    """What a data set's labels mean."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray  # uint8 [num_classes, 3]
    ignore_label: int = 255


def _synthetic_options(cfg: Config) -> dict:
    unknown = sorted(set(cfg.data.options) - set(SYNTHETIC_DEFAULTS))
    if unknown:
        raise ValueError(
            f"data.options {unknown} unknown for the synthetic data set; "
            f"allowed: {', '.join(SYNTHETIC_DEFAULTS)}"
        )
    return {**SYNTHETIC_DEFAULTS, **cfg.data.options}


# Options of `keras_seg.data.load("folder", ...)` that `keras_seg.data.info` also takes.
FOLDER_INFO_OPTIONS = ("num_classes", "classes_file", "label_map", "unmapped")


def class_info(cfg: Config, data_dir: str | None = None) -> ClassInfo:
    """Class count, names and palette of the config's data set (model.num_classes wins)."""
    if cfg.data.name == "synthetic":
        from keras_seg.data import synthetic

        names, palette = tuple(synthetic.CLASS_NAMES), synthetic.PALETTE
    else:
        import keras_seg.data

        options = dict(cfg.data.options)
        if cfg.data.name == "folder":
            options = {k: v for k, v in options.items() if k in FOLDER_INFO_OPTIONS}
        elif not cfg.data.name.startswith("tfds:"):
            options = {}
        info = keras_seg.data.info(cfg.data.name, data_dir or cfg.data.data_dir, **options)
        names, palette = tuple(info.class_names), info.palette
    num_classes = cfg.model.num_classes or len(names)
    names = tuple(names[:num_classes]) + tuple(f"class_{i}" for i in range(len(names), num_classes))
    if palette is None or len(palette) < num_classes:
        palette = voc_palette(num_classes)
    return ClassInfo(cfg.data.name, num_classes, names, np.asarray(palette, np.uint8)[:num_classes])


def load_split(cfg: Config, split: str, data_dir: str | None = None) -> tf.data.Dataset:
    """Unbatched `(image uint8 [H, W, 3], mask uint8 [H, W])` pairs at original resolution."""
    if cfg.data.name == "synthetic":
        from keras_seg.data import synthetic

        o = _synthetic_options(cfg)
        if split not in ("train", "val"):
            raise ValueError(f"synthetic data has splits 'train' and 'val', got {split!r}")
        (xt, yt), (xv, yv) = synthetic.splits(o["num_train"], o["num_val"], o["size"], o["seed"])
        x, y = (xt, yt) if split == "train" else (xv, yv)
        return tf.data.Dataset.from_tensor_slices((x, y))
    import keras_seg.data

    data_dir = data_dir or cfg.data.data_dir
    return keras_seg.data.load(cfg.data.name, split, data_dir, **cfg.data.options)


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
    same thing as `keras-seg evaluate` in "whole" mode.
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
        **(cfg.data.augment if training else {}),
    )
    options = tf.data.Options()
    # Generated and file data alike: shard by element across workers (never by file).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)
