"""The VOC TFDS builder end to end, and reading TFDS data through `load("tfds:...")`."""

import numpy as np
import pytest
import tensorflow as tf

import keras_seg.data as data
from keras_seg.data.tfds_data import prepare
from tests.data import fixtures as fx


def test_voc_builder_from_the_tar_and_loading(tmp_path):
    src = tmp_path / "src"
    masks = fx.write_voc(src, {"train": ["2007_a", "2007_b"], "val": ["2008_c"]})
    fx.write_sbd(src, train=["2007_a", "2009_d"], val=["2008_c"])
    manual = tmp_path / "manual"
    manual.mkdir()
    fx.tar_dir(src / "VOCdevkit", manual / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    fx.tar_dir(src / "benchmark_RELEASE", manual / "sbd.tar", "benchmark_RELEASE")
    (manual / "benchmark_RELEASE").symlink_to(src / "benchmark_RELEASE")  # SBD extracted

    builder = prepare("voc2012_segmentation", tmp_path / "tfds", manual_dir=manual)
    splits = {k: v.num_examples for k, v in builder.info.splits.items()}
    assert splits == {"train": 2, "val": 1, "train_aug": 3}  # a, b, d (c is VOC val)

    out = fx.as_numpy(data.load("tfds:voc2012_segmentation", "train", tmp_path / "tfds"))
    direct = fx.as_numpy(data.load("voc2012", "train", manual))
    assert len(out) == 2
    by_mask = {m.tobytes(): i for i, m in enumerate(masks[k] for k in ("2007_a", "2007_b"))}
    for (image, mask), (ref_image, _) in zip(
        sorted(out, key=lambda s: by_mask[s[1].tobytes()]), direct, strict=True
    ):
        assert image.shape == (*fx.SIZE, 3) and mask.dtype == np.uint8
        np.testing.assert_array_equal(image, ref_image)  # the JPEG bytes are kept as is
    assert sorted(by_mask.values()) == [0, 1]

    two = data.load("tfds:voc2012_segmentation", "val", tmp_path / "tfds", num_classes=2,
                    label_map={0: 0, 15: 1}, unmapped="ignore")  # fmt: skip
    (_, mask), = fx.as_numpy(two)  # fmt: skip
    want = np.where(masks["2008_c"] == 0, 0, np.where(masks["2008_c"] == 15, 1, 255))
    np.testing.assert_array_equal(mask, want)
    strict = data.load("tfds:voc2012_segmentation", "val", tmp_path / "tfds", num_classes=2)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        fx.as_numpy(strict)
    assert str(data.data_error_from(caught.value)).startswith(
        "tfds:voc2012_segmentation split val example 2008_c.jpg: mask values ["
    )


def test_tfds_mappings_and_errors(tmp_path):
    pet = data.info("tfds:oxford_iiit_pet")
    assert pet.class_names == ("background", "pet") and pet.label_lut[[1, 2, 3]].tolist() == [
        1,
        0,
        255,
    ]
    city = data.info("tfds:cityscapes/semantic_segmentation")
    assert city.label_lut[[7, 26, 0]].tolist() == [0, 13, 255]
    with pytest.raises(ValueError, match="no built-in label mapping"):
        data.info("tfds:mnist")
    with pytest.raises(data.DataError, match="tfds:voc2012_segmentation is not prepared in"):
        data.load("tfds:voc2012_segmentation", "train", tmp_path)
