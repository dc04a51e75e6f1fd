"""Bad input gives an error naming the file and what was expected, or a counted skip."""

import os
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_seg.data as data
from tests.data import fixtures as fx

IDS = ["2007_000001", "2007_000002", "2007_000003"]


@pytest.fixture
def voc(tmp_path):
    masks = fx.write_voc(tmp_path, {"train": IDS, "val": IDS[:1]})
    return tmp_path, tmp_path / "VOCdevkit" / "VOC2012", masks


def _raises(dataset, *fragments):
    pattern = ".*".join(re.escape(str(f)) for f in fragments)
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        fx.as_numpy(dataset)


def test_corrupt_and_truncated_images_are_named(voc):
    root, voc_dir, _ = voc
    bad = voc_dir / "JPEGImages" / f"{IDS[1]}.jpg"
    bad.write_bytes(b"this is not a jpeg")
    _raises(data.load("voc2012", "train", root), bad, "corrupt, truncated or not an image")
    good = voc_dir / "JPEGImages" / f"{IDS[0]}.jpg"
    bad.write_bytes(good.read_bytes()[:200])  # truncated JPEG
    _raises(data.load("voc2012", "train", root), bad, "expected a JPEG/PNG/BMP/GIF file")


def test_corrupt_last_sample_and_corrupt_mask(voc):
    root, voc_dir, _ = voc
    last_mask = voc_dir / "SegmentationClass" / f"{IDS[2]}.png"
    last_mask.write_bytes(last_mask.read_bytes()[:60])
    _raises(data.load("voc2012", "train", root), last_mask, "expected a PNG file")


def test_image_and_mask_sizes_differ(voc):
    root, voc_dir, masks = voc
    mask_path = voc_dir / "SegmentationClass" / f"{IDS[0]}.png"
    fx.write_palette_png(mask_path, masks[IDS[0]][:30])
    _raises(
        data.load("voc2012", "train", root),
        mask_path, "mask size 30x52 differs from the image size 36x52", f"{IDS[0]}.jpg",
    )  # fmt: skip


def test_mask_values_outside_the_classes(voc):
    root, voc_dir, masks = voc
    mask = masks[IDS[2]].copy()
    mask[3:5, 3:6] = 22
    mask_path = voc_dir / "SegmentationClass" / f"{IDS[2]}.png"
    fx.write_palette_png(mask_path, mask)
    _raises(
        data.load("voc2012", "train", root),
        mask_path, "6 mask pixels hold values that are not classes of voc2012 (e.g. 22)",
        "allowed raw values: 0..20, 255",
    )  # fmt: skip


def test_missing_split_file_missing_mask_and_empty_folders(voc, tmp_path_factory):
    root, voc_dir, _ = voc
    with pytest.raises(FileNotFoundError, match=r"split file .*Segmentation/trainval\.txt"):
        os.remove(voc_dir / "ImageSets" / "Segmentation" / "trainval.txt")
        data.load("voc2012", "trainval", root)
    os.remove(voc_dir / "SegmentationClass" / f"{IDS[1]}.png")
    with pytest.raises(FileNotFoundError, match=rf"SegmentationClass/{IDS[1]}\.png does not exist"):
        data.load("voc2012", "train", root)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match=rf"found none of .*JPEGImages.* in {empty}"):
        data.load("voc2012", "train", empty)
    (empty / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"no images .* in {empty}/images"):
        data.load("folder", None, empty, num_classes=2)
    (empty / "val.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"val\.txt lists no samples"):
        data.load("folder", "val", empty, num_classes=2)
    with pytest.raises(FileNotFoundError, match="does_not_exist: no such directory"):
        data.load("camvid", "train", empty / "does_not_exist")


def test_skip_drops_bad_samples_and_counts_them(voc):
    root, voc_dir, masks = voc
    (voc_dir / "JPEGImages" / f"{IDS[0]}.jpg").write_bytes(b"garbage")
    mask = masks[IDS[1]].copy()
    mask[0, 0] = 99
    fx.write_palette_png(voc_dir / "SegmentationClass" / f"{IDS[1]}.png", mask)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fx.as_numpy(data.load("voc2012", "train", root, on_error="skip"))
    assert len(out) == 1
    np.testing.assert_array_equal(out[0][1], masks[IDS[2]])
    text = "\n".join(str(w.message) for w in caught)
    assert f"{IDS[0]}.jpg: corrupt" in text and "(1 skipped so far)" in text
    assert f"{IDS[1]}.png: 1 mask pixels" in text and "(2 skipped so far)" in text


def test_skip_counts_missing_files_before_reading(voc):
    root, voc_dir, _ = voc
    os.remove(voc_dir / "JPEGImages" / f"{IDS[1]}.jpg")
    with pytest.warns(UserWarning, match=rf"skipped 1 samples whose file is missing.*{IDS[1]}"):
        ds = data.load("voc2012", "train", root, on_error="skip")
    assert len(fx.as_numpy(ds)) == 2


def test_corrupt_member_of_an_archive_is_named(tmp_path):
    fx.write_cityscapes(tmp_path / "x", "train", {"ulm": 2})
    bad = tmp_path / "x" / "leftImg8bit" / "train" / "ulm" / "ulm_000001_000019_leftImg8bit.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    fx.zip_dir(
        tmp_path / "x" / "leftImg8bit", tmp_path / "leftImg8bit_trainvaltest.zip", "leftImg8bit"
    )
    fx.zip_dir(tmp_path / "x" / "gtFine", tmp_path / "gtFine_trainvaltest.zip", "gtFine")
    _raises(
        data.load("cityscapes", "train", tmp_path),
        "leftImg8bit_trainvaltest.zip::leftImg8bit/train/ulm/ulm_000001_000019_leftImg8bit.png",
    )


def test_options_are_checked():
    with pytest.raises(ValueError, match="on_error must be one of"):
        data.load("voc2012", "train", "/nowhere", on_error="ignore")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        data.load("voc2012", "test", "/nowhere")
    with pytest.raises(ValueError, match="give num_classes, a classes file"):
        data.load("folder", None, "/nowhere")
