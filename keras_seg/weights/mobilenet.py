"""Key maps of torchvision's and timm's MobileNetV2 onto `mobilenet_v2_torchvision`.

torchvision (and segmentation_models.pytorch's encoder, a torchvision MobileNetV2 under
`encoder.`) keeps the network as one flat `features` sequence: `features.0` the stem
(`.0` conv, `.1` BN), `features.{1..17}` the inverted residual blocks (`.conv.{n}`: the
conv-BN-ReLU6 modules `{n}.0` / `{n}.1`, then the projection conv and its BN), `features.18` the
final 1x1 conv to 1280 channels. timm's `mobilenetv2_100` is the same network (symmetric
padding, BatchNorm eps 1e-5, ReLU6) with other names: `conv_stem` / `bn1`, blocks grouped by
row of the block table (`blocks.{row}.{i}`: `conv_pw` / `bn1` expansion, `conv_dw` / `bn2`
depthwise, `conv_pwl` / `bn3` projection; the first block, without expansion, has `conv_dw` /
`bn1`, `conv_pw` / `bn2`), `conv_head` / `bn2`. The maps are built from the Keras backbone's
layer names (keras.applications' names), so they follow `alpha` and `last_conv`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import keras

from keras_seg.weights.assign import KeyMap
from keras_seg.weights.assign import weighted_layers

BACKBONE = "mobilenet_v2_torchvision"
# Blocks per row of MobileNetV2's block table: timm's `blocks.{row}` groups them so.
TIMM_ROWS = (1, 2, 3, 4, 3, 3, 1)
BLOCK_COUNT = sum(TIMM_ROWS)  # inverted residual blocks, torchvision features[1..17]
# The final 1x1 conv of an ImageNet classifier, unused when the backbone stops before it
# (last_conv=False): torchvision features[18], timm conv_head / bn2.
HEAD_PREFIXES = (f"features.{BLOCK_COUNT + 1}.", "conv_head.", "bn2.")

_BLOCK = re.compile(r"(expanded_conv|block_(\d+))_(expand|depthwise|project)(_BN)?$")
# Keras layer -> module, outside the blocks.
_TORCHVISION_ENDS = {
    "Conv1": "features.0.0",
    "bn_Conv1": "features.0.1",
    "Conv_1": f"features.{BLOCK_COUNT + 1}.0",
    "Conv_1_bn": f"features.{BLOCK_COUNT + 1}.1",
}
_TIMM_ENDS = {"Conv1": "conv_stem", "bn_Conv1": "bn1", "Conv_1": "conv_head", "Conv_1_bn": "bn2"}
# Block part -> (conv, BN) modules in a block with expansion, and in the first block (t = 1).
_TORCHVISION_PARTS = {
    "expand": ("conv.0.0", "conv.0.1"),
    "depthwise": ("conv.1.0", "conv.1.1"),
    "project": ("conv.2", "conv.3"),
}
_TORCHVISION_FIRST = {"depthwise": ("conv.0.0", "conv.0.1"), "project": ("conv.1", "conv.2")}
_TIMM_PARTS = {
    "expand": ("conv_pw", "bn1"),
    "depthwise": ("conv_dw", "bn2"),
    "project": ("conv_pwl", "bn3"),
}
_TIMM_FIRST = {"depthwise": ("conv_dw", "bn1"), "project": ("conv_pw", "bn2")}
# Block index (0 = expanded_conv) -> timm's (row, index in row).
_TIMM_BLOCKS = [(row, i) for row, count in enumerate(TIMM_ROWS) for i in range(count)]


def _key_map(backbone: keras.Model, prefix: str, ends, block, parts, first) -> KeyMap:
    key_map: KeyMap = {}
    for name in weighted_layers(backbone):
        if name in ends:
            key_map[name] = prefix + ends[name]
            continue
        match = _BLOCK.match(name)
        if not match:
            continue
        _, index, part, bn = match.groups()
        index = int(index or 0)
        module = (first if index == 0 else parts)[part][1 if bn else 0]
        key_map[name] = f"{prefix}{block(index)}.{module}"
    return key_map


def torchvision_map(backbone: keras.Model, prefix: str = "") -> KeyMap:
    """torchvision (and SMP encoder) `features.*` keys for a mobilenet_v2_torchvision backbone."""
    return _key_map(
        backbone,
        prefix,
        _TORCHVISION_ENDS,
        lambda index: f"features.{index + 1}",
        _TORCHVISION_PARTS,
        _TORCHVISION_FIRST,
    )


def timm_map(backbone: keras.Model, prefix: str = "") -> KeyMap:
    """timm `mobilenetv2_100` keys for a mobilenet_v2_torchvision backbone."""
    return _key_map(
        backbone,
        prefix,
        _TIMM_ENDS,
        lambda index: "blocks.{}.{}".format(*_TIMM_BLOCKS[index]),
        _TIMM_PARTS,
        _TIMM_FIRST,
    )


# backbone -> key-map builder (backbone model, prefix, weights format) -> KeyMap.
BACKBONE_MAPS: dict[str, Callable[[keras.Model, str, str], KeyMap]] = {
    BACKBONE: lambda m, p, f: timm_map(m, p) if f == "timm" else torchvision_map(m, p),
}


def _indices(keys: set[str], pattern: str) -> set[tuple[str, ...]]:
    regex = re.compile(pattern)
    return {m.groups() for k in keys if (m := regex.match(k))}


def recognise_torchvision(keys: set[str], prefix: str = "") -> tuple[str, dict] | None:
    """("mobilenet_v2_torchvision", kwargs) for a torchvision MobileNetV2 state dict, else None.

    With a prefix (SMP's "encoder.") the final 1x1 conv, `features.18`, is the deepest feature
    the decoder reads, so it gives `last_conv=True`; in an ImageNet classifier it is the head's.
    """
    p = re.escape(prefix)
    if f"{prefix}features.0.0.weight" not in keys or f"{prefix}features.1.conv.3.weight" in keys:
        return None  # not torchvision's stem, or a first block with expansion (not V2's)
    blocks = _indices(keys, p + r"features\.(\d+)\.conv\.")
    if blocks != {(str(i),) for i in range(1, BLOCK_COUNT + 1)}:
        return None
    last = f"{prefix}features.{BLOCK_COUNT + 1}.0.weight" in keys
    return (BACKBONE, {"last_conv": True} if prefix and last else {})


def recognise_timm(keys: set[str], prefix: str = "") -> tuple[str, dict] | None:
    """("mobilenet_v2_torchvision", kwargs) for a timm mobilenetv2_100 state dict, else None.

    timm's EfficientNet family shares these keys; the block count of each row, no
    squeeze-excitation and a first block without expansion tell MobileNetV2 apart (a
    different kernel or width shows in the shapes when the weights load).
    """
    p = re.escape(prefix)
    if f"{prefix}conv_stem.weight" not in keys or f"{prefix}blocks.0.0.conv_pwl.weight" in keys:
        return None
    if any(".se." in k for k in keys):
        return None
    blocks = _indices(keys, p + r"blocks\.(\d+)\.(\d+)\.")
    rows = [len([b for b in blocks if b[0] == str(r)]) for r in range(len(TIMM_ROWS))]
    if rows != list(TIMM_ROWS) or len(blocks) != BLOCK_COUNT:
        return None
    last = f"{prefix}conv_head.weight" in keys
    return (BACKBONE, {"last_conv": True} if prefix and last else {})
