"""TFDS: a VOC 2012 segmentation builder, and reading prepared TFDS data sets.

Prepare VOC once into TFDS record shards, then train from them:

    keras_seg.data.tfds_data.prepare("voc2012_segmentation", "/data/tfds", manual_dir="/dl")
    ds = keras_seg.data.load("tfds:voc2012_segmentation", "train", "/data/tfds")

`manual_dir` holds `VOCtrainval_11-May-2012.tar` or the extracted `VOCdevkit/`, and
optionally SBD `benchmark_RELEASE/` (adds the `train_aug` split). The shards keep the
original JPEG bytes (no re-encoding) and store the class ids as a 1-channel PNG.

`load("tfds:<name>", ...)` also reads other TFDS data sets with an image and a mask
feature. Built-in mappings (`TFDS_DATA`):

- `voc2012_segmentation`: ids as stored (0..20, 255 = boundary).
- `cityscapes` (e.g. `cityscapes/semantic_segmentation`): labelIds -> the 19 train ids,
  all other ids -> 255, as for the `cityscapes` reader.
- `oxford_iiit_pet`: trimap 1 (pet) -> 1, 2 (background) -> 0, 3 (border) -> 255;
  classes ("background", "pet").

Any other data set needs `image_key`, `mask_key` and `num_classes` (and `label_map` when
the raw mask values are not the class ids).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from keras_seg.data.decode import allowed_text
from keras_seg.data.decode import checked_dataset
from keras_seg.data.errors import DataError
from keras_seg.data.errors import tagged
from keras_seg.data.info import IGNORE_LABEL
from keras_seg.data.info import INVALID
from keras_seg.data.info import DatasetInfo
from keras_seg.data.info import make_lut
from keras_seg.data.info import static_info
from keras_seg.data.info import voc_palette
from keras_seg.data.options import without_autotune
from keras_seg.data.readers import voc2012
from keras_seg.data.readers import voc2012_aug

_PET = DatasetInfo(
    "tfds:oxford_iiit_pet",
    2,
    ("background", "pet"),
    np.array([[0, 0, 0], [255, 128, 0]], np.uint8),
    splits=("train", "test"),
    label_lut=make_lut({1: 1, 2: 0, 3: IGNORE_LABEL}),
    description="Oxford-IIIT Pet trimaps: 1 pet -> 1, 2 background -> 0, 3 border -> 255.",
)
# TFDS name (before any "/config" or ":version") -> (image feature, mask feature, info).
TFDS_DATA: dict[str, tuple[str, str, DatasetInfo]] = {
    "voc2012_segmentation": (
        "image",
        "segmentation_mask",
        dataclasses.replace(
            static_info("voc2012"),
            name="tfds:voc2012_segmentation",
            splits=("train", "val", "train_aug"),
        ),
    ),
    "cityscapes": (
        "image_left",
        "segmentation_label",
        dataclasses.replace(static_info("cityscapes"), name="tfds:cityscapes"),
    ),
    "oxford_iiit_pet": ("image", "segmentation_mask", _PET),
}


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 semantic segmentation (and SBD `train_aug`) from the official files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: train, val (+ train_aug with SBD)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put `VOCtrainval_11-May-2012.tar` (or the extracted `VOCdevkit/`) into manual_dir.
    For the `train_aug` split also put SBD's extracted `benchmark_RELEASE/` there.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS finds a builder's files through importlib resources, which needs the
        # `importlib_resources` backport that etils does not pull in; the module's own
        # path is what it would find.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="PASCAL VOC 2012 segmentation; masks hold class ids, 255 = ignore.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "segmentation_mask": tfds.features.Image(
                        shape=(None, None, 1), encoding_format="png"
                    ),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "segmentation_mask"),
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        )

    def _split_generators(self, dl_manager):
        manual = os.fspath(dl_manager.manual_dir)
        splits = {s: voc2012(manual, s, "raise") for s in ("train", "val")}
        try:
            splits["train_aug"] = voc2012_aug(manual, "train_aug", "raise")
        except DataError:  # no SBD in manual_dir: VOC splits only
            pass
        return {name: self._generate_examples(samples) for name, samples in splits.items()}

    def _generate_examples(self, samples):
        # Decoding through the checked reader validates every sample (sizes, mask values)
        # and gives the mask ids; the image keeps its original JPEG bytes.
        lut = static_info("voc2012").label_lut
        decoded = checked_dataset(samples, lut, "voc2012_segmentation").as_numpy_iterator()
        for (image_store, image, _, _), (_, mask) in zip(samples, decoded, strict=True):
            key = os.path.splitext(os.path.basename(image))[0]
            yield (
                key,
                {
                    "image": image_store.read(image),
                    "segmentation_mask": mask[..., None],
                    "file_name": os.path.basename(image),
                },
            )


def prepare(
    name: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> tfds.core.DatasetBuilder:
    """Build the TFDS record shards of `name` under `data_dir` (TFDS's default when None),
    reading manually downloaded files from `manual_dir`."""
    builder = tfds.builder(name, data_dir=data_dir and os.fspath(data_dir))
    config = tfds.download.DownloadConfig(manual_dir=manual_dir and os.fspath(manual_dir))
    builder.download_and_prepare(download_config=config)
    return builder


def tfds_info(
    name: str,
    num_classes: int | None = None,
    label_map: dict[int, int] | None = None,
    unmapped: str = "error",
    class_names: tuple[str, ...] | None = None,
) -> DatasetInfo:
    """`DatasetInfo` of a TFDS data set: a built-in mapping, or one made from the options."""
    base = name.split("/")[0].split(":")[0]
    if base in TFDS_DATA and num_classes is None and label_map is None:
        return TFDS_DATA[base][2]
    if num_classes is None:
        raise ValueError(
            f"tfds:{name} has no built-in label mapping (known: {', '.join(TFDS_DATA)}); "
            "give num_classes (and label_map if mask values are not class ids)"
        )
    unmapped_value = {"error": INVALID, "ignore": IGNORE_LABEL}[unmapped]
    return DatasetInfo(
        name=f"tfds:{name}",
        num_classes=num_classes,
        class_names=tuple(class_names or (f"class_{i}" for i in range(num_classes))),
        palette=voc_palette(num_classes),
        label_lut=make_lut(label_map or range(num_classes), unmapped=unmapped_value),
    )


def load_tfds(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    shuffle_files: bool = False,
    seed: int | None = None,
    image_key: str | None = None,
    mask_key: str | None = None,
    download: bool = False,
    manual_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
    **info_options: Any,
) -> tf.data.Dataset:
    """`(uint8 [H, W, 3], uint8 [H, W])` from a prepared TFDS data set (see module doc).

    Mask values are mapped through the data set's table; a value outside it raises
    `tf.errors.InvalidArgumentError` naming the data set, split and example, which
    `keras_seg.data.data_error_from` turns into a one-line `DataError` (`on_error="skip"`
    drops such examples with a warning instead).

    Raises:
        DataError: the data set is not prepared in `data_dir`.
    """
    base = name.split("/")[0].split(":")[0]
    meta = tfds_info(name, **info_options)
    default_image, default_mask = TFDS_DATA.get(base, (None, None, None))[:2]
    image_key, mask_key = image_key or default_image, mask_key or default_mask
    if not image_key or not mask_key:
        raise ValueError(f"tfds:{name}: give image_key and mask_key (feature names)")
    if download:
        prepare(name, data_dir, manual_dir)
    builder = tfds.builder(name, data_dir=data_dir and os.fspath(data_dir))
    if not builder.is_prepared():
        raise DataError(
            f"tfds:{name} is not prepared in {builder.data_dir}; run "
            f"keras_seg.data.tfds_data.prepare({name!r}, data_dir, manual_dir) "
            "or pass download=True"
        )
    for key in (image_key, mask_key):
        if key not in builder.info.features:
            raise ValueError(
                f"tfds:{name} has no feature {key!r}; features: {list(builder.info.features)}"
            )
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    lut = tf.constant(meta.label_lut, tf.int32)
    id_key = next((k for k in ("file_name", "image_id") if k in builder.info.features), None)

    def convert(index, example):
        image = example[image_key]
        if image.shape[-1] == 1:  # channels are fixed by the feature spec
            image = tf.image.grayscale_to_rgb(image)
        raw = tf.cast(example[mask_key][..., 0], tf.int32)
        mask = tf.gather(lut, tf.minimum(raw, 255))
        which = example[id_key] if id_key else tf.strings.as_string(index)
        ok = tf.reduce_all(mask >= 0) & tf.reduce_all(tf.shape(image)[:2] == tf.shape(mask))
        message = tf.strings.join(
            [
                tagged(f"tfds:{name} split {split} example "),
                which,
                ": mask values ",
                tf.strings.format("{}", tf.unique(tf.boolean_mask(raw, mask < 0))[0][:8]),
                f" are not classes (allowed raw values: {allowed_text(meta.label_lut)}), "
                "or the image and mask sizes differ",
            ]
        )
        if on_error == "raise":
            with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
                mask = tf.identity(mask)
        else:
            with tf.control_dependencies(
                [
                    tf.cond(
                        ok, tf.no_op, lambda: tf.print("WARNING keras_seg.data: skipped", message)
                    )
                ]
            ):
                ok = tf.identity(ok)
        return ok, image[..., :3], tf.cast(mask, tf.uint8)

    ds = ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda ok, image, mask: ok).map(lambda ok, image, mask: (image, mask))
    return without_autotune(ds)
