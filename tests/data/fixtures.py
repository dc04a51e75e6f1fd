"""Writers of tiny data sets in the exact on-disk layouts of the real releases."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy import sparse
from scipy.io import savemat

from keras_seg.data.info import voc_palette

SIZE = (36, 52)  # (H, W) of every generated image


def blocks(rng: np.random.Generator, values, size=SIZE, block: int = 6) -> np.ndarray:
    """uint8 mask of `block`-pixel squares, each a random pick from `values`."""
    h, w = size
    grid = rng.choice(np.asarray(values), ((h + block - 1) // block, (w + block - 1) // block))
    return np.kron(grid, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)


def image_for(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """An RGB uint8 image of the mask's size."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*mask.shape, 3)).astype(np.uint8)


def write_jpeg(path, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1])


def write_png(path, array: np.ndarray) -> None:
    """Grey (2-D) or RGB PNG, written as is."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)


def write_palette_png(path, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """A "P" mode PNG whose pixel values are palette indices (how VOC stores masks)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(mask, mode="P")
    image.putpalette((voc_palette(256) if palette is None else palette).flatten().tolist())
    image.save(path)


def write_voc(root, splits: dict[str, list[str]], seed: int = 0) -> dict[str, np.ndarray]:
    """`VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation}`.

    Masks hold classes 0..20 with 255 object boundaries; `trainval` is written as in the
    release. Returns id -> mask.
    """
    splits = {"trainval": splits.get("train", []) + splits.get("val", []), **splits}
    rng = np.random.default_rng(seed)
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    masks = {}
    for ids in splits.values():
        for i in ids:
            if i in masks:
                continue
            mask = blocks(rng, range(21))
            mask[::6, :] = 255  # boundary lines
            masks[i] = mask
            write_jpeg(voc / "JPEGImages" / f"{i}.jpg", image_for(mask))
            write_palette_png(voc / "SegmentationClass" / f"{i}.png", mask)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return masks


def write_sbd(root, train: list[str], val: list[str], seed: int = 1) -> dict[str, np.ndarray]:
    """SBD `benchmark_RELEASE/dataset/{img, cls/*.mat, train.txt, val.txt}` (GTcls struct)."""
    rng = np.random.default_rng(seed)
    dataset = Path(root) / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True, exist_ok=True)
    masks = {}
    for i in dict.fromkeys(train + val):
        mask = blocks(rng, range(21))
        masks[i] = mask
        write_jpeg(dataset / "img" / f"{i}.jpg", image_for(mask))
        boundaries = np.empty((20, 1), object)  # a cell of sparse maps, as in SBD
        for c in range(20):
            boundaries[c, 0] = sparse.csc_matrix(mask.shape, dtype=bool)
        gtcls = {
            "Segmentation": mask,
            "Boundaries": boundaries,
            "CategoriesPresent": np.unique(mask[mask > 0]).astype(np.uint8),
        }
        savemat(dataset / "cls" / f"{i}.mat", {"GTcls": gtcls})
    (dataset / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (dataset / "val.txt").write_text("".join(f"{i}\n" for i in val))
    return masks


def write_cityscapes(root, split: str, cities: dict[str, int], seed: int = 0):
    """`leftImg8bit/{split}/{city}/*_leftImg8bit.png` + `gtFine/.../*_gtFine_labelIds.png`.

    Returns stem -> labelIds mask (raw ids 0..33).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for city, count in cities.items():
        for k in range(count):
            stem = f"{city}_{k:06d}_000019"
            ids = blocks(rng, range(34))
            out[stem] = ids
            write_png(
                Path(root, "leftImg8bit", split, city, f"{stem}_leftImg8bit.png"), image_for(ids)
            )
            write_png(Path(root, "gtFine", split, city, f"{stem}_gtFine_labelIds.png"), ids)
    return out


def write_camvid(root, split: str, count: int, with_list: bool = True, seed: int = 0):
    """SegNet tutorial `CamVid/{split}/*.png`, `{split}annot/*.png` (ids 0..11), `{split}.txt`."""
    rng = np.random.default_rng(seed)
    camvid = Path(root) / "CamVid"
    out, lines = {}, []
    for k in range(count):
        name = f"0001TP_{k:06d}.png"
        mask = blocks(rng, range(12))
        out[name] = mask
        write_png(camvid / split / name, image_for(mask))
        write_png(camvid / f"{split}annot" / name, mask)
        lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n")
    if with_list:
        (camvid / f"{split}.txt").write_text("".join(lines))
    return out


def write_ade20k(root, split: str, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`ADEChallengeData2016/images/{split}/*.jpg` + `annotations/{split}/*.png` (grey 0..150).

    `split` is the release's folder name ("training" or "validation"). Returns stem -> mask.
    """
    rng = np.random.default_rng(seed)
    ade = Path(root) / "ADEChallengeData2016"
    prefix = "ADE_train" if split == "training" else "ADE_val"
    out = {}
    for k in range(count):
        stem = f"{prefix}_{k + 1:08d}"
        mask = blocks(rng, range(151))
        mask[:6, -6:] = 0  # "other", which every mask of the release has somewhere
        out[stem] = mask
        write_jpeg(ade / "images" / split / f"{stem}.jpg", image_for(mask))
        write_png(ade / "annotations" / split / f"{stem}.png", mask)
    return out


def write_folder(
    root, masks: dict[str, np.ndarray], image_dir="images", mask_dir="masks", suffix=".png"
):
    """`image_dir/{stem}{suffix}` (RGB PNG or JPEG) and `mask_dir/{stem}.png` (grey class ids).

    Returns stem -> image path.
    """
    paths = {}
    for stem, mask in masks.items():
        paths[stem] = Path(root, image_dir, f"{stem}{suffix}")
        (write_png if suffix == ".png" else write_jpeg)(paths[stem], image_for(mask))
        write_png(Path(root, mask_dir, f"{stem}.png"), mask)
    return paths


def truncate(path, keep: float | int) -> None:
    """Cut a file to its first `keep` bytes (an int) or fraction of its bytes (a float)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


def tar_dir(folder, tar_path, arcname: str) -> str:
    """Pack `folder` into an uncompressed tar as `arcname/` (like the VOC release)."""
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname=arcname)
    return str(tar_path)


def zip_dir(folder, zip_path, arcname: str) -> str:
    """Pack `folder` into a zip as `arcname/...` (like the Cityscapes release)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                z.write(path, f"{arcname}/{path.relative_to(folder).as_posix()}")
        z.writestr("license.txt", "test")
    return str(zip_path)


def as_numpy(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(image, mask) for image, mask in dataset.as_numpy_iterator()]
