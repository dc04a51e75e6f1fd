"""Bad data: one `DataError` line naming the file and what was expected, or a counted skip."""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_seg.data as data
from tests.data import fixtures as fx

IDS = ["2007_000001", "2007_000002", "2007_000003"]
STEMS = ["img_000", "img_001", "img_002", "img_003"]


@pytest.fixture
def voc(tmp_path):
    masks = fx.write_voc(tmp_path, {"train": IDS, "val": IDS[:1]})
    return tmp_path, tmp_path / "VOCdevkit" / "VOC2012", masks


@pytest.fixture
def folder(tmp_path):
    """`images/*.jpg` + `masks/*.png` with classes 0..2; returns (root, images, masks)."""
    rng = np.random.default_rng(0)
    masks = {stem: fx.blocks(rng, range(3)) for stem in STEMS}
    images = fx.write_folder(tmp_path, masks, suffix=".jpg")
    return tmp_path, images, masks


def load_folder(root, **options):
    return data.load("folder", None, root, num_classes=3, **options)


def one_line(error) -> str:
    text = str(error)
    assert "\n" not in text and "assertion failed" not in text and "[[" not in text, text
    return text


def pipeline_error(dataset) -> str:
    """The one-line message of the error a dataset raises while it is read."""
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        fx.as_numpy(dataset)
    error = data.data_error_from(caught.value)
    assert isinstance(error, data.DataError), caught.value
    return one_line(error)


@pytest.mark.parametrize("keep", [0.5, -2, 300], ids=["half", "no_eoi", "in_header"])
def test_truncated_jpeg_is_reported_by_load(folder, keep):
    root, images, _ = folder
    bad = images["img_002"]
    fx.truncate(bad, keep if keep != -2 else len(bad.read_bytes()) - 2)
    with pytest.raises(data.DataError) as caught:
        load_folder(root)  # before any reading: the file check runs in `load`
    assert one_line(caught.value).startswith(f"folder: {bad}: truncated ")
    assert str(caught.value).endswith("expected a complete JPEG file)")


def test_truncated_foreign_and_empty_files(voc):
    root, voc_dir, _ = voc
    mask = voc_dir / "SegmentationClass" / f"{IDS[2]}.png"
    fx.truncate(mask, 0.6)
    with pytest.raises(data.DataError, match="truncated or corrupt PNG") as caught:
        data.load("voc2012", "train", root)
    assert one_line(caught.value) == (
        f"voc2012: {mask}: truncated or corrupt PNG (no IEND chunk; expected a complete PNG file)"
    )
    image = voc_dir / "JPEGImages" / f"{IDS[2]}.jpg"
    mask.write_bytes(image.read_bytes())  # a JPEG where a PNG mask belongs
    with pytest.raises(data.DataError) as caught:
        data.load("voc2012", "train", root)
    starts = "b'\\xff\\xd8\\xff\\xe0\\x00\\x10JF'"
    assert (
        one_line(caught.value) == f"voc2012: {mask}: not a PNG mask (the file starts with {starts})"
    )
    image.write_bytes(b"this is not a jpeg")
    with pytest.raises(data.DataError, match=f"{image}: not a JPEG, PNG, BMP, GIF or WebP image"):
        data.load("voc2012", "train", root)
    image.write_bytes(b"")
    with pytest.raises(data.DataError, match=f"{image}: empty file \\(expected a JPEG, PNG"):
        data.load("voc2012", "train", root)


def test_image_and_mask_sizes_differ(folder):
    root, images, masks = folder
    mask_path = root / "masks" / "img_003.png"
    fx.write_png(mask_path, masks["img_003"][:30])
    expected = (
        f"folder: {mask_path} is 52x30 but {images['img_003']} is 52x36 "
        "(image and mask must have the same size)"
    )
    with pytest.raises(data.DataError) as caught:
        load_folder(root)
    assert one_line(caught.value) == expected
    # Without the file check, the pipeline finds it and says the same.
    assert pipeline_error(load_folder(root, validate=False)) == expected


def test_files_that_decode_are_accepted(folder):
    root, images, masks = folder
    path = images["img_001"]
    path.write_bytes(path.read_bytes() + bytes(3000))  # padding after the JPEG's end marker
    out = fx.as_numpy(load_folder(root))
    assert len(out) == 4 and out[1][0].shape == (*fx.SIZE, 3)


def test_mask_values_outside_the_classes(folder):
    root, _, masks = folder
    mask = masks["img_002"].copy()
    mask[3:5, 3:6] = 7
    mask_path = root / "masks" / "img_002.png"
    fx.write_png(mask_path, mask)
    dataset = load_folder(root)  # headers are fine: the pipeline finds the values
    assert pipeline_error(dataset) == (
        f"folder: {mask_path}: 6 pixels hold values that are not classes of folder (e.g. 7); "
        "expected raw values 0..2, 255"
    )


def test_corrupt_files_found_by_the_pipeline(folder, tmp_path_factory):
    root, images, _ = folder
    bad = images["img_003"]  # the last sample: found by the end-of-pass sentinel
    fx.truncate(bad, 0.5)
    assert pipeline_error(load_folder(root, validate=False)) == (
        f"folder: {bad} or its mask {root}/masks/img_003.png: could not be decoded (corrupt "
        "data; expected a JPEG, PNG, BMP, GIF or WebP image and a PNG mask)"
    )
    # An archive is not checked up front by default; its members are named.
    tar = fx.tar_dir(root, tmp_path_factory.mktemp("tar") / "set.tar", ".")
    assert pipeline_error(data.load("folder", None, tar, num_classes=3)).startswith(
        f"folder: {tar}::images/img_003.jpg or its mask {tar}::masks/img_003.png: could not"
    )
    with pytest.raises(data.DataError, match=f"{tar}::images/img_003.jpg: truncated"):
        data.load("folder", None, tar, num_classes=3, validate=True)


def test_corrupt_member_of_a_zip_is_named(tmp_path):
    fx.write_cityscapes(tmp_path / "x", "train", {"ulm": 2})
    bad = tmp_path / "x" / "leftImg8bit" / "train" / "ulm" / "ulm_000001_000019_leftImg8bit.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    fx.zip_dir(
        tmp_path / "x" / "leftImg8bit", tmp_path / "leftImg8bit_trainvaltest.zip", "leftImg8bit"
    )
    fx.zip_dir(tmp_path / "x" / "gtFine", tmp_path / "gtFine_trainvaltest.zip", "gtFine")
    member = "leftImg8bit_trainvaltest.zip::leftImg8bit/train/ulm/ulm_000001_000019_leftImg8bit"
    assert f"{member}.png or its mask" in pipeline_error(data.load("cityscapes", "train", tmp_path))


def test_missing_split_file_missing_mask_and_empty_folders(voc, tmp_path_factory):
    root, voc_dir, _ = voc
    split_file = voc_dir / "ImageSets" / "Segmentation" / "trainval.txt"
    os.remove(split_file)
    with pytest.raises(data.DataError) as caught:
        data.load("voc2012", "trainval", root)
    assert one_line(caught.value) == (
        f"voc2012: split file {split_file} does not exist "
        "(expected the list of the split's samples, one per line)"
    )
    missing = voc_dir / "SegmentationClass" / f"{IDS[1]}.png"
    os.remove(missing)
    with pytest.raises(data.DataError) as caught:
        data.load("voc2012", "train", root)
    assert one_line(caught.value) == (
        f"voc2012: {missing} does not exist (expected a .jpg and a .png for each id in train.txt)"
    )
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(data.DataError, match=rf"found none of .*JPEGImages.* in {empty}"):
        data.load("voc2012", "train", empty)
    (empty / "images").mkdir()
    with pytest.raises(data.DataError, match=rf"no images in {empty}/images \(expected files"):
        data.load("folder", None, empty, num_classes=2)
    with pytest.raises(data.DataError, match=rf"no split 'val' \(expected the folder {empty}/val"):
        data.load("folder", "val", empty, num_classes=2)
    (empty / "val.txt").write_text("\n")
    with pytest.raises(data.DataError, match=r"val\.txt lists no samples"):
        data.load("folder", "val", empty, num_classes=2)
    with pytest.raises(data.DataError, match="does_not_exist: no such directory"):
        data.load("camvid", "train", empty / "does_not_exist")


def test_missing_mask_in_a_folder(folder):
    root, _, _ = folder
    os.remove(root / "masks" / "img_001.png")
    with pytest.raises(data.DataError) as caught:
        load_folder(root)
    assert one_line(caught.value) == (
        f"folder: {root}/masks/img_001.png does not exist "
        "(expected an image and a masks/ PNG of each stem)"
    )


def test_skip_drops_bad_samples_and_counts_them(folder):
    root, images, masks = folder
    fx.truncate(images["img_000"], 0.5)  # found by the file check
    os.remove(root / "masks" / "img_001.png")  # found when listing
    mask = masks["img_002"].copy()
    mask[0, 0] = 99  # found by the pipeline
    fx.write_png(root / "masks" / "img_002.png", mask)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fx.as_numpy(load_folder(root, on_error="skip"))
    assert len(out) == 1
    np.testing.assert_array_equal(out[0][1], masks["img_003"])
    text = "\n".join(str(w.message) for w in caught)
    assert "skipped 1 samples whose file is missing" in text and "img_001.png" in text
    assert "skipped 1 samples whose files failed the check" in text
    assert f"{images['img_000']}: truncated or corrupt JPEG" in text
    assert "img_002.png: 1 pixels hold values" in text and "(1 skipped so far)" in text


def test_skip_in_the_pipeline_names_each_file(voc):
    root, voc_dir, masks = voc
    (voc_dir / "JPEGImages" / f"{IDS[0]}.jpg").write_bytes(b"garbage")
    mask = masks[IDS[1]].copy()
    mask[0, 0] = 99
    fx.write_palette_png(voc_dir / "SegmentationClass" / f"{IDS[1]}.png", mask)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fx.as_numpy(data.load("voc2012", "train", root, on_error="skip", validate=False))
    assert len(out) == 1
    text = "\n".join(str(w.message) for w in caught)
    assert f"{IDS[0]}.jpg: not a JPEG, PNG" in text and "(1 skipped so far)" in text
    assert f"{IDS[1]}.png: 1 pixels hold values" in text and "(2 skipped so far)" in text


def test_data_error_from():
    plain = data.DataError("folder: a.png is bad")
    assert data.data_error_from(plain) is plain
    try:
        try:
            raise plain
        except data.DataError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert data.data_error_from(wrapped) is plain
    assert data.data_error_from(ValueError("x")) is None
    assert data.data_error_from(tf.errors.InvalidArgumentError(None, None, "x [[y]]")) is None
    tagged = data.errors.tagged("m.png: 3 pixels [7 9] bad")
    error = tf.errors.InvalidArgumentError(
        None, None, f"Graph execution error:\n\nassertion failed: [{tagged}]\n\t [[{{node A}}]]"
    )
    assert str(data.data_error_from(error)) == "m.png: 3 pixels [7 9] bad"


def test_options_are_checked():
    with pytest.raises(ValueError, match="on_error must be one of"):
        data.load("voc2012", "train", "/nowhere", on_error="ignore")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        data.load("voc2012", "test", "/nowhere")
    with pytest.raises(ValueError, match="give num_classes, a classes file"):
        data.load("folder", None, "/nowhere")
    with pytest.raises(
        ValueError, match="folder: unknown option.*'mask_folder'.*allowed: image_dir"
    ):
        data.load("folder", None, "/nowhere", mask_folder="labels")
