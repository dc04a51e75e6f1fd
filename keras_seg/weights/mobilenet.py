"""Key maps of torchvision's and timm's MobileNetV2 onto `mobilenet_v2_torchvision`."""

from __future__ import annotations

from collections.abc import Callable

import keras

from keras_seg.weights.assign import KeyMap

BACKBONE_MAPS: dict[str, Callable[[keras.Model, str], KeyMap]] = {}


def recognise_torchvision(keys: set[str], prefix: str = "") -> tuple[str, dict] | None:
    """("mobilenet_v2_torchvision", kwargs) for a torchvision MobileNetV2 state dict, else None."""
    return None


def recognise_timm(keys: set[str], prefix: str = "") -> tuple[str, dict] | None:
    """("mobilenet_v2_torchvision", kwargs) for a timm mobilenetv2_100 state dict, else None."""
    return None
