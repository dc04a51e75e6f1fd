"""Readers on generated data in the official layouts (directories and archives)."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_seg.data as data
from keras_seg.data.decode import decode_label_png
from keras_seg.data.decode import encode_label_png
from keras_seg.data.readers import train_aug_ids
from tests.data import fixtures as fx


def test_info_tables():
    voc = data.info("voc2012")
    assert (voc.num_classes, voc.class_names[15], voc.ignore_label) == (21, "person", 255)
    assert voc.palette.dtype == np.uint8 and voc.palette.shape == (21, 3)
    assert voc.palette[1].tolist() == [128, 0, 0]  # aeroplane in the devkit colour map
    city = data.info("cityscapes")
    assert city.num_classes == 19 and city.class_names[13] == "car"
    assert data.info("camvid").class_names[0] == "sky"
    with pytest.raises(ValueError, match="Unknown data set 'nope'.*voc2012"):
        data.info("nope")


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_palette_png_gives_indices_not_colours(bits):
    # A palette with duplicate colours: decoding colours could not recover the indices.
    rng = np.random.default_rng(bits)
    n = 2**bits
    index = rng.integers(0, n, (9, 13)).astype(np.uint8)
    palette = np.zeros((256, 3), np.uint8)
    buf = io.BytesIO()
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.flatten().tolist())
    image.save(buf, format="PNG", bits=bits, transparency=0)
    np.testing.assert_array_equal(decode_label_png(tf.constant(buf.getvalue())).numpy(), index)


def test_encode_label_png_round_trip():
    mask = np.random.default_rng(0).integers(0, 21, (7, 11)).astype(np.uint8)
    mask[0] = 255
    png = encode_label_png(mask)
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P" and image.getpalette()[3:6] == [128, 0, 0]
        np.testing.assert_array_equal(np.array(image), mask)
    np.testing.assert_array_equal(decode_label_png(tf.constant(png)).numpy(), mask)


def test_grey_and_16bit_png_masks():
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10)
    wide = grey.astype(np.uint16) * 300
    for array in (grey, wide):
        png = tf.io.encode_png(array[..., None])
        np.testing.assert_array_equal(decode_label_png(png).numpy(), array)


def test_voc2012_palette_indices_and_boundary(tmp_path):
    masks = fx.write_voc(tmp_path, {"train": ["2007_000032", "2007_000039"], "val": ["2008_1"]})
    out = fx.as_numpy(data.load("voc2012", "train", tmp_path))
    assert len(out) == 2
    for (image, mask), stem in zip(out, ["2007_000032", "2007_000039"], strict=True):
        assert image.dtype == np.uint8 and image.shape == (*fx.SIZE, 3)
        assert mask.dtype == np.uint8 and mask.shape == fx.SIZE
        np.testing.assert_array_equal(mask, masks[stem])
        assert (mask[::6] == 255).all() and mask.max() == 255  # boundaries stay ignore
    assert len(fx.as_numpy(data.load("voc2012", "trainval", tmp_path / "VOCdevkit"))) == 3


def test_voc2012_from_the_official_tar(tmp_path):
    masks = fx.write_voc(tmp_path / "x", {"train": ["a"], "val": ["b", "c"]})
    fx.tar_dir(tmp_path / "x" / "VOCdevkit", tmp_path / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    out = fx.as_numpy(data.load("voc2012", "val", tmp_path))  # folder holding the tar
    assert [m.tolist() for _, m in out] == [masks["b"].tolist(), masks["c"].tolist()]
    tar = tmp_path / "VOCtrainval_11-May-2012.tar"
    runs = [fx.as_numpy(data.load("voc2012", "trainval", tar, shuffle_files=True, seed=1))
            for _ in range(2)]  # fmt: skip
    orders = [[m.tobytes() for _, m in run] for run in runs]
    assert orders[0] == orders[1]  # the same seed gives the same order
    assert sorted(orders[0]) == sorted(m.tobytes() for m in masks.values())


def test_train_aug_arithmetic():
    ids = train_aug_ids(
        voc_train=["v1", "v2", "s1"], voc_val=["s2", "v3"], sbd_train=["s1", "s2", "s3"],
        sbd_val=["s4", "v2"],
    )  # fmt: skip
    assert ids == ["s1", "s3", "s4", "v1", "v2"]  # union of train sets minus VOC val


def test_voc2012_aug_mixes_voc_masks_and_sbd_mat(tmp_path):
    voc = fx.write_voc(tmp_path, {"train": ["t1", "t2"], "val": ["v1"]})
    sbd = fx.write_sbd(tmp_path, train=["t1", "s1", "v1"], val=["s2"])
    out = fx.as_numpy(data.load("voc2012_aug", "train_aug", tmp_path))
    # sorted ids s1, s2, t1, t2 (v1 is VOC val); t1 takes its VOC mask, s* their .mat.
    expected = [sbd["s1"], sbd["s2"], voc["t1"], voc["t2"]]
    assert len(out) == 4
    for (_, mask), want in zip(out, expected, strict=True):
        np.testing.assert_array_equal(mask, want)
    assert len(fx.as_numpy(data.load("voc2012_aug", "val", tmp_path))) == 1
    with pytest.raises(ValueError, match="unknown split 'train'.*train_aug, val"):
        data.load("voc2012_aug", "train", tmp_path)


def test_cityscapes_train_ids_from_zips(tmp_path):
    raw = fx.write_cityscapes(tmp_path / "x", "val", {"frankfurt": 1, "lindau": 2})
    stem = "frankfurt_000000_000019"
    ids = raw[stem]
    ids[:2, :3] = [[7, 26, 0], [33, 34, 24]]  # road, car, unlabeled / bicycle, >33, person
    fx.write_png(
        tmp_path / "x" / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png", ids
    )
    fx.zip_dir(
        tmp_path / "x" / "leftImg8bit", tmp_path / "leftImg8bit_trainvaltest.zip", "leftImg8bit"
    )
    fx.zip_dir(tmp_path / "x" / "gtFine", tmp_path / "gtFine_trainvaltest.zip", "gtFine")
    for where in (tmp_path / "x", tmp_path):  # extracted, and the official zips
        out = fx.as_numpy(data.load("cityscapes", "val", where))
        assert len(out) == 3
        mask = out[0][1]  # frankfurt sorts first
        assert mask[:2, :3].tolist() == [[0, 13, 255], [18, 255, 11]]
        lut = data.info("cityscapes").label_lut
        np.testing.assert_array_equal(mask, lut[ids])


def test_camvid_void_is_ignore(tmp_path):
    raw = fx.write_camvid(tmp_path, "test", 2)
    fx.write_camvid(tmp_path, "val", 1, with_list=False)
    out = fx.as_numpy(data.load("camvid", "test", tmp_path))
    for (_, mask), want in zip(out, raw.values(), strict=True):
        np.testing.assert_array_equal(mask, np.where(want == 11, 255, want))
        assert 255 in mask and 11 not in mask
    assert len(fx.as_numpy(data.load("camvid", "val", tmp_path / "CamVid"))) == 1


def test_ade20k_shifts_labels_and_ignores_other(tmp_path):
    raw = fx.write_ade20k(tmp_path / "x", "training", 3)
    fx.write_ade20k(tmp_path / "x", "validation", 2, seed=1)
    stem = "ADE_train_00000001"
    mask = raw[stem]
    mask[:2, :3] = [[0, 1, 150], [2, 0, 75]]  # other, wall, flag / building, other, 75
    fx.write_png(
        tmp_path / "x" / "ADEChallengeData2016" / "annotations" / "training" / f"{stem}.png", mask
    )
    fx.zip_dir(
        tmp_path / "x" / "ADEChallengeData2016",
        tmp_path / "ADEChallengeData2016.zip",
        "ADEChallengeData2016",
    )
    for where in (tmp_path / "x", tmp_path / "x" / "ADEChallengeData2016", tmp_path):
        out = fx.as_numpy(data.load("ade20k", "train", where))
        assert len(out) == 3
        assert out[0][1][:2, :3].tolist() == [[255, 0, 149], [1, 255, 74]]
        for (image, got), want in zip(out, raw.values(), strict=True):
            np.testing.assert_array_equal(got, np.where(want == 0, 255, want - 1))
            assert image.shape == (*fx.SIZE, 3)
    assert len(fx.as_numpy(data.load("ade20k", "validation", tmp_path / "x"))) == 2
    meta = data.info("ade20k")
    assert meta.num_classes == 150 and meta.class_names[:3] == ("wall", "building", "sky")
    assert meta.class_names[-1] == "flag" and meta.palette.shape == (150, 3)
    assert meta.label_lut[0] == 255 and meta.label_lut[151] == -1  # 151..254 are errors


def test_ade20k_missing_folder_is_named(tmp_path):
    fx.write_ade20k(tmp_path, "training", 1)
    ade = tmp_path / "ADEChallengeData2016"
    with pytest.raises(data.DataError, match=rf"ade20k: folder {ade}/images/validation does not"):
        data.load("ade20k", "val", tmp_path)
    (ade / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    (ade / "annotations" / "training").rmdir()
    with pytest.raises(
        data.DataError, match=rf"folder {ade}/annotations/training does not exist.*\.png masks"
    ):
        data.load("ade20k", "train", tmp_path)
    with pytest.raises(
        data.DataError, match=r"ade20k: found none of \[ADEChallengeData2016/images"
    ):
        data.load("ade20k", "train", ade / "images")
    with pytest.raises(ValueError, match="ade20k: unknown split 'test'; allowed: train, val"):
        data.load("ade20k", "test", tmp_path)


def test_ade20k_label_above_150_is_a_data_error(tmp_path):
    raw = fx.write_ade20k(tmp_path, "validation", 2)
    mask = raw["ADE_val_00000002"]
    mask[:2, :2] = 200
    path = tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000002.png"
    fx.write_png(path, mask)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        fx.as_numpy(data.load("ade20k", "val", tmp_path))
    assert str(data.data_error_from(caught.value)).startswith(
        f"ade20k: {path}: 4 pixels hold values that are not classes of ade20k (e.g. 200); "
        "expected raw values 0..150, 255"
    )


def test_folder_isbi_style_label_map_and_grey_images(tmp_path):
    rng = np.random.default_rng(0)
    masks = {str(k): fx.blocks(rng, [0, 255]) for k in range(3)}
    for stem, mask in masks.items():  # ISBI 2012: grey image/N.png, label/N.png 0/255
        fx.write_png(tmp_path / "image" / f"{stem}.png", mask[..., None].repeat(3, 2)[..., 0])
        fx.write_png(tmp_path / "label" / f"{stem}.png", mask)
    ds = data.load("folder", None, tmp_path, image_dir="image", mask_dir="label",
                   label_map={0: 0, 255: 1})  # fmt: skip
    out = fx.as_numpy(ds)
    assert len(out) == 3
    for (image, mask), want in zip(out, masks.values(), strict=True):
        assert image.shape == (*fx.SIZE, 3)
        np.testing.assert_array_equal(mask, (want == 255).astype(np.uint8))
    info = data.info("folder", label_map={0: 0, 255: 1})
    assert info.num_classes == 2


def test_folder_classes_file_palette_masks_and_splits(tmp_path):
    rng = np.random.default_rng(1)
    masks = {f"s{k}": fx.blocks(rng, [0, 1, 2, 255]) for k in range(4)}
    fx.write_folder(tmp_path, {k: masks[k] for k in ("s0", "s1")})
    for stem in ("s2", "s3"):  # palette masks with a non-VOC palette
        fx.write_png(tmp_path / "images" / f"{stem}.png", fx.image_for(masks[stem]))
        fx.write_palette_png(
            tmp_path / "masks" / f"{stem}.png", masks[stem], np.full((256, 3), 7, np.uint8)
        )
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\n")
    (tmp_path / "val.txt").write_text("s3\ns1\n")
    info = data.info("folder", tmp_path)
    assert info.class_names == ("sky", "road", "car") and info.palette.shape == (3, 3)
    out = fx.as_numpy(data.load("folder", "all", tmp_path))
    assert len(out) == 4
    for (_, mask), stem in zip(out, sorted(masks), strict=True):
        np.testing.assert_array_equal(mask, masks[stem])
    val = fx.as_numpy(data.load("folder", "val", tmp_path))
    np.testing.assert_array_equal(val[0][1], masks["s3"])
    ignored = data.load("folder", "val", tmp_path, label_map={0: 0, 1: 1}, unmapped="ignore")
    np.testing.assert_array_equal(
        fx.as_numpy(ignored)[0][1], np.where(masks["s3"] == 2, 255, masks["s3"])
    )
    with pytest.raises(ValueError, match="classes.txt names 3 classes, num_classes=2"):
        data.load("folder", "all", tmp_path, num_classes=2)


def test_synthetic_is_a_data_set_like_the_others():
    assert "synthetic" in data.names()
    meta = data.info("synthetic")
    assert meta.class_names == data.synthetic.CLASS_NAMES and meta.splits == ("train", "val")
    np.testing.assert_array_equal(meta.palette, data.synthetic.PALETTE)
    (x_train, y_train), (x_val, y_val) = data.synthetic.splits(3, 2, 32, seed=5)
    for split, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
        out = fx.as_numpy(data.load("synthetic", split, num_train=3, num_val=2, size=32, seed=5))
        np.testing.assert_array_equal(np.stack([image for image, _ in out]), x)
        np.testing.assert_array_equal(np.stack([mask for _, mask in out]), y)
        assert out[0][0].dtype == np.uint8 and out[0][1].dtype == np.uint8
    shuffled = data.load("synthetic", "val", num_val=2, size=32, seed=5, shuffle_files=True)
    shuffled = fx.as_numpy(shuffled)
    assert sorted(m.tobytes() for _, m in shuffled) == sorted(m.tobytes() for m in y_val)
    with pytest.raises(
        ValueError,
        match=r"synthetic: unknown option\(s\) 'colour'; allowed: "
        r"num_train, num_val, size \(and on_error, shuffle_files, seed, validate\)",
    ):
        data.load("synthetic", "train", colour="red")
    with pytest.raises(ValueError, match="synthetic: unknown split 'test'; allowed: train, val"):
        data.load("synthetic", "test")


# Valid `load` options of each data set (besides on_error, shuffle_files, seed, validate).
LOAD_OPTIONS = {
    "voc2012": {},
    "voc2012_aug": {"sbd_dir": "/sbd"},
    "cityscapes": {},
    "camvid": {},
    "ade20k": {},
    "folder": {"image_dir": "image", "mask_dir": "label", "num_classes": 2,
               "label_map": {0: 0, 255: 1}},
    "synthetic": {"num_train": 8, "num_val": 4, "size": 32},
    "tfds:oxford_iiit_pet": {"image_key": "image", "mask_key": "segmentation_mask",
                             "download": False, "manual_dir": "/dl"},
}  # fmt: skip


@pytest.mark.parametrize("name", LOAD_OPTIONS)
def test_info_accepts_the_options_of_load(name):
    assert set(LOAD_OPTIONS[name]) <= set(data.option_names(name))
    common = {"on_error": "skip", "shuffle_files": True, "seed": 1, "validate": False}
    meta = data.info(name, "/nowhere", **common, **LOAD_OPTIONS[name])
    if name == "folder":
        assert meta.num_classes == 2 and meta.label_lut[255] == 1
    else:
        assert meta.class_names == data.info(name).class_names
    with pytest.raises(ValueError, match=rf"{name}: unknown option\(s\) 'colour'; allowed: "):
        data.info(name, colour="red")
