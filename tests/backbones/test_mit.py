"""MiT (SegFormer's encoder): registration, pyramid P2..P5 at strides 4..32 on any input size,
stable attention under mixed precision. Parity with transformers is in tests/weights."""

import keras
import numpy as np
import pytest

from keras_seg.backbones import ALL_LEVELS
from keras_seg.backbones import build_backbone
from keras_seg.backbones import get_backbone_spec
from keras_seg.backbones import list_backbones
from keras_seg.backbones.mit import MIT_VARIANTS
from keras_seg.backbones.mit import SpatialReductionAttention

SMALL = {"hidden_sizes": (8, 16, 20, 32), "depths": (1, 1, 1, 1)}


def _x(height, width, batch=1):
    return np.random.default_rng(0).normal(size=(batch, height, width, 3)).astype("float32")


@pytest.mark.parametrize("name", sorted(MIT_VARIANTS))
def test_registered_with_levels_p2_to_p5(name):
    spec = get_backbone_spec(name)
    assert spec.normalization == "torch"
    assert spec.output_strides == (32,)
    assert spec.levels == ("P2", "P3", "P4", "P5")


def test_other_backbones_keep_all_five_levels():
    others = [n for n in list_backbones() if n not in MIT_VARIANTS]
    assert others and all(get_backbone_spec(n).levels == ALL_LEVELS for n in others)


# The patch embeddings pad kernel // 2 and floor, as PyTorch: stage 1 has ceil(H / 4) rows.
@pytest.mark.parametrize(
    "size, expected",
    [
        ((64, 64), [(16, 16), (8, 8), (4, 4), (2, 2)]),
        ((70, 90), [(18, 23), (9, 12), (5, 6), (3, 3)]),
    ],
)
def test_pyramid_shapes_at_strides_4_to_32_on_any_size(size, expected):
    model = build_backbone("mit_b0", **SMALL)
    features = model(_x(*size, batch=2))
    assert sorted(features) == ["P2", "P3", "P4", "P5"]
    levels = zip(["P2", "P3", "P4", "P5"], SMALL["hidden_sizes"], expected, strict=True)
    for level, channels, hw in levels:
        assert tuple(features[level].shape) == (2, *hw, channels), level
        assert np.isfinite(np.asarray(features[level])).all()


def test_default_mit_b0_channels_and_a_fixed_input_shape():
    model = build_backbone("mit_b0", input_shape=(96, 64, 3))
    features = model(_x(96, 64))
    assert [tuple(features[k].shape) for k in ("P2", "P3", "P4", "P5")] == [
        (1, 24, 16, 32),
        (1, 12, 8, 64),
        (1, 6, 4, 160),
        (1, 3, 2, 256),
    ]


def test_no_keras_applications_weights():
    with pytest.raises(
        ValueError, match=r"mit_b0 has no keras.applications weights.*hf://nvidia/mit-b0"
    ):
        build_backbone("mit_b0", weights="imagenet")


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match=r"hidden_sizes must divide by num_heads"):
        build_backbone("mit_b0", hidden_sizes=(8, 16, 24, 32))
    with pytest.raises(ValueError, match=r"depths must be four positive ints.*\(1, 1\)"):
        build_backbone("mit_b0", depths=(1, 1))


def _reference_attention(q, k, v, heads):
    b, h, w, c = q.shape
    d = c // heads
    q = q.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    k = k.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    v = v.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(b, h, w, c)


def test_attention_matches_numpy_and_its_scores_stay_float32_under_float16():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 6, 5, 8)).astype("float32")
    k = rng.normal(size=(2, 3, 2, 8)).astype("float32")
    v = rng.normal(size=(2, 3, 2, 8)).astype("float32")
    expected = _reference_attention(q, k, v, 2)
    out = SpatialReductionAttention(2)([q, k, v])
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    # Scores of 40 * 40 * 8 / 2 = 6400 per head: exp() of those overflows float16, a
    # float16 softmax gives NaN; ours computes them in float32.
    layer = SpatialReductionAttention(2, dtype="mixed_float16")
    big = np.full((1, 2, 2, 8), 40.0, "float32")
    out = layer([big.astype("float16"), big.astype("float16"), v[:1, :2, :2].astype("float16")])
    assert out.dtype == "float16" and np.isfinite(np.asarray(out, "float32")).all()


def test_attention_config_round_trip():
    layer = SpatialReductionAttention(5, name="attn")
    clone = SpatialReductionAttention.from_config(layer.get_config())
    assert (clone.num_heads, clone.name) == (5, "attn")
    assert keras.saving.get_registered_object("keras_seg>SpatialReductionAttention")
