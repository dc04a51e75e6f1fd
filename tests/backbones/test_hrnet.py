"""HRNetV2 backbones: timm's structure (parameter counts), the pyramid, any input size, and
timm checkpoints (written here from a keras_seg backbone; parity with timm itself is
tests/weights/test_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_seg
from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.weights import WeightsError
from tests.weights.test_weights import torch_state

# Learnable parameters of timm's hrnet_* without its classification head (incre_modules,
# downsamp_modules, final_layer, classifier), computed once with timm 1.0 (pretrained=False):
# sum(p.numel() for k, p in named_parameters() if not a head key).
TIMM_PARAMS = {
    "hrnetv2_w18_small": 1_477_920,
    "hrnetv2_w18_small_v2": 3_860_720,
    "hrnetv2_w18": 9_562_260,
    "hrnetv2_w32": 29_305_536,
    "hrnetv2_w48": 65_325_120,
}


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _x(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1, height, width, 3)).astype("float32")


@pytest.mark.parametrize(
    "name",
    [
        "hrnetv2_w18_small",
        "hrnetv2_w18",
        pytest.param("hrnetv2_w48", marks=pytest.mark.slow),
    ],
)
def test_parameters_equal_timm(name):
    assert _trainable(build_backbone(name)) == TIMM_PARAMS[name]


def test_registered_with_torch_normalization_and_stride_32():
    spec = get_backbone_spec("hrnetv2_w18")
    assert spec.normalization == "torch" and spec.output_strides == (32,)
    with pytest.raises(ValueError, match=r"output_stride in \(32,\), got 8"):
        build_backbone("hrnetv2_w18_small", output_stride=8)
    with pytest.raises(ValueError, match="no keras.applications weights.*'imagenet'"):
        build_backbone("hrnetv2_w18_small", weights="imagenet")


@pytest.mark.parametrize("size", [(64, 64), (70, 90)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_pyramid_strides_and_channels_at_any_size(size):
    features = build_backbone("hrnetv2_w18_small")(_x(*size))
    h, w = size
    assert tuple(features["P1"].shape) == (1, -(-h // 2), -(-w // 2), 64)
    for level, channels in zip(range(2, 6), (16, 32, 64, 128), strict=True):
        stride = 2**level
        # PyTorch-style padding: each stride-2 3x3 conv gives ceil(size / 2).
        expected_h, expected_w = h, w
        for _ in range(level):
            expected_h, expected_w = -(-expected_h // 2), -(-expected_w // 2)
        assert tuple(features[f"P{level}"].shape) == (1, expected_h, expected_w, channels), stride


def test_layers_are_named_after_timm_modules():
    names = {layer.name for layer in build_backbone("hrnetv2_w18_small").layers}
    for key in (
        "conv1",
        "bn2",
        "layer1.0.downsample.0",
        "transition1.1.0.0",
        "stage2.0.branches.1.1.conv2",
        "stage4.0.fuse_layers.0.3.0",
        "stage4.0.fuse_layers.3.0.2.1",
    ):
        assert key in names, key


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A timm-layout hrnet_w18_small checkpoint (with a stand-in classification head)."""
    model = build_backbone("hrnetv2_w18_small")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    state = torch_state(model, "hrnetv2_w18_small")
    for key in ("incre_modules.0.0.conv1.weight", "final_layer.0.weight", "classifier.weight"):
        state[key] = np.zeros((4, 4, 1, 1), np.float32)
    path = tmp_path_factory.mktemp("ckpt") / "hrnet_w18_small.safetensors"
    save_file(state, str(path))
    return path, model


def test_timm_checkpoint_loads_into_backbone_and_model(checkpoint):
    path, original = checkpoint
    loaded = build_backbone("hrnetv2_w18_small", weights=str(path))
    x = _x(64, 64)
    for level, y in loaded(x).items():
        np.testing.assert_allclose(y.numpy(), original(x)[level].numpy(), rtol=1e-5, atol=1e-5)
    model = keras_seg.build("hrnet", num_classes=3, weights=str(path), head_filters=8)
    backbone = model.get_layer("hrnetv2_w18_small")
    for a, b in zip(backbone.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_wrong_variant_names_the_checkpoint(checkpoint):
    path, _ = checkpoint
    with pytest.raises(
        WeightsError, match=r"timm hrnet_w18_small; use backbone='hrnetv2_w18_small'"
    ):
        build_backbone("hrnetv2_w18", weights=str(path))
