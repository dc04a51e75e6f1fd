"""timm's HRNet ImageNet checkpoints (`hrnet_w18_small`, `_small_v2`, `hrnet_w18/32/48`).

keras_seg's HRNet backbones (`keras_seg.backbones.hrnet`) name every layer after timm's module
path, so the key map is the identity. Which variant a checkpoint is follows from its keys
(stage-1 blocks, modules per stage, blocks per branch) and one shape (the width C of the
first branch, `transition1.0.0.weight`). timm's classification head (`incre_modules`,
`downsamp_modules`, `final_layer`, `classifier`) has no counterpart in the backbone and is
ignored.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import keras

from keras_seg.weights.assign import KeyMap
from keras_seg.weights.assign import weighted_layers
from keras_seg.weights.checkpoint import Checkpoint
from keras_seg.weights.checkpoint import WeightsError

if TYPE_CHECKING:  # formats imports this module's maps
    from keras_seg.weights.formats import Layout

HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
# (stage-1 bottlenecks, stage-1 width, modules of stages 2..4, blocks per branch, C) -> timm
# name, from timm's `cfg_cls`; the keras_seg backbone is "hrnetv2_" + the part after "hrnet_".
TIMM_VARIANTS = {
    (1, 32, (1, 1, 1), 2, 16): "hrnet_w18_small",
    (2, 64, (1, 3, 2), 2, 18): "hrnet_w18_small_v2",
    (4, 64, (1, 4, 3), 4, 18): "hrnet_w18",
    (4, 64, (1, 4, 3), 4, 32): "hrnet_w32",
    (4, 64, (1, 4, 3), 4, 48): "hrnet_w48",
}
BACKBONES = tuple("hrnetv2_" + name.removeprefix("hrnet_") for name in TIMM_VARIANTS.values())


def is_hrnet(keys: set[str]) -> bool:
    return "transition1.0.0.weight" in keys and "stage2.0.fuse_layers.0.1.0.weight" in keys


def _count(keys: set[str], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def layout(checkpoint: Checkpoint) -> Layout:
    """The timm HRNet variant of `checkpoint`.

    Raises:
        WeightsError: an HRNet whose structure is none of timm's variants.
    """
    from keras_seg.weights.formats import Layout

    keys = set(checkpoint.tensors)
    structure = (
        _count(keys, r"layer1\.(\d+)\."),
        int(checkpoint.tensors["layer1.0.conv1.weight"].shape[0]),
        tuple(_count(keys, rf"stage{s}\.(\d+)\.") for s in (2, 3, 4)),
        _count(keys, r"stage2\.0\.branches\.0\.(\d+)\."),
        int(checkpoint.tensors["transition1.0.0.weight"].shape[0]),
    )
    factory = TIMM_VARIANTS.get(structure)
    if factory is None:
        raise WeightsError(
            f"{checkpoint.source}: an HRNet with (stage-1 blocks, stage-1 width, modules, "
            f"blocks, width) {structure}, none of timm's {', '.join(TIMM_VARIANTS.values())}"
        )
    return Layout(
        "timm",
        "hrnetv2_" + factory.removeprefix("hrnet_"),
        description=f"timm {factory}",
        reference={"library": "timm", "factory": factory, "kwargs": {}},
    )


def key_map(backbone: keras.Model, prefix: str = "", weights_format: str = "timm") -> KeyMap:
    """Identity: each weighted layer is named after timm's module path."""
    return {name: prefix + name for name in weighted_layers(backbone)}
