"""Mix Transformer (MiT-B0..B5), SegFormer's hierarchical encoder.

Xie, Wang, Yu, Anandkumar, Alvarez, Luo. "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", NeurIPS 2021. https://arxiv.org/abs/2105.15203

Four stages, each: an overlapping patch embedding (a 7x7 stride-4 convolution for the first
stage, 3x3 stride 2 after, with `kernel // 2` zero padding, then LayerNorm), `depths[i]`
transformer blocks and a final LayerNorm. A block is pre-norm efficient self-attention (keys
and values from the tokens reduced by a `sr_ratio` x `sr_ratio` stride-`sr_ratio` convolution
and LayerNorm) and a Mix-FFN (Linear -> 3x3 depthwise conv -> exact GELU -> Linear), each added
back to its input. Stage outputs have strides 4, 8, 16 and 32: the pyramid is "P2".."P5" (no
stride-2 level).

Layer by layer it is Hugging Face transformers' `SegformerModel` (the checkpoints of
`nvidia/mit-b*` and `nvidia/segformer-*` load into it: `keras_seg.weights.transformers`),
including its LayerNorm epsilon: `nn.LayerNorm`'s default 1e-5 everywhere (its config's
`layer_norm_eps` is not used by the modules; the original mmseg code has 1e-6 in the blocks).
Tokens stay `(B, H, W, C)` maps throughout: Dense and LayerNorm act on the last axis, and
`SpatialReductionAttention` flattens only inside, so any input size works without Python
control flow on tensor values. The padding convolutions floor as PyTorch's do, so a size
that is not a multiple of 32 gives transformers' shapes (stage 1 has `ceil(H / 4)` rows).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from keras_seg.backbones import register_backbone

# Variant -> (hidden sizes, depths); every variant has heads (1, 2, 5, 8), sequence-reduction
# ratios (8, 4, 2, 1) and MLP ratio 4 (SegFormer Table 6; transformers' nvidia/mit-b* configs).
MIT_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
NUM_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
PATCH_SIZES = (7, 3, 3, 3)
PATCH_STRIDES = (4, 2, 2, 2)
MLP_RATIO = 4
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, which transformers' modules use
LEVELS = ("P2", "P3", "P4", "P5")


@keras.saving.register_keras_serializable(package="keras_seg")
class SpatialReductionAttention(keras.layers.Layer):
    """Multi-head attention of queries `(B, H, W, C)` over keys and values `(B, h, w, C)`.

    `[query, key, value] -> (B, H, W, C)`: the projections are separate Dense layers around
    it, so their weights keep plain names. Scores and softmax run in float32 whatever the
    compute dtype, so mixed precision can't overflow them.
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        if int(num_heads) < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads!r}")
        self.num_heads = int(num_heads)

    def _heads(self, x, batch):
        d = x.shape[-1] // self.num_heads
        return tf.transpose(tf.reshape(x, [batch, -1, self.num_heads, d]), [0, 2, 1, 3])

    def call(self, inputs):
        query, key, value = inputs
        shape = tf.shape(query)
        channels = query.shape[-1]
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels do not split into {self.num_heads} heads")
        q = self._heads(tf.cast(query, "float32"), shape[0])
        k = self._heads(tf.cast(key, "float32"), shape[0])
        v = self._heads(value, shape[0])
        scale = float((channels // self.num_heads) ** -0.5)
        probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * scale, axis=-1)
        out = tf.matmul(tf.cast(probs, v.dtype), v)  # (B, heads, N, d)
        out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [shape[0], shape[1], shape[2], channels])
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


def _layer_norm(name: str):
    return layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name)


def _block(x, channels: int, heads: int, sr_ratio: int, name: str):
    """One transformer block; layers `{name}_norm1`, `_query`, ..., `_fc2`."""
    y = _layer_norm(f"{name}_norm1")(x)
    query = layers.Dense(channels, name=f"{name}_query")(y)
    if sr_ratio > 1:
        y = layers.Conv2D(channels, sr_ratio, strides=sr_ratio, name=f"{name}_sr")(y)
        y = _layer_norm(f"{name}_sr_norm")(y)
    key = layers.Dense(channels, name=f"{name}_key")(y)
    value = layers.Dense(channels, name=f"{name}_value")(y)
    y = SpatialReductionAttention(heads, name=f"{name}_attention")([query, key, value])
    y = layers.Dense(channels, name=f"{name}_attn_out")(y)
    x = layers.Add(name=f"{name}_attn_add")([x, y])
    y = _layer_norm(f"{name}_norm2")(x)
    y = layers.Dense(channels * MLP_RATIO, name=f"{name}_fc1")(y)
    y = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dwconv")(y)
    y = layers.Activation("gelu", name=f"{name}_gelu")(y)  # exact (erf) GELU, as transformers
    y = layers.Dense(channels, name=f"{name}_fc2")(y)
    return layers.Add(name=f"{name}_mlp_add")([x, y])


def mit(
    variant: str,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    hidden_sizes: tuple[int, ...] | None = None,
    depths: tuple[int, ...] | None = None,
    num_heads: tuple[int, ...] = NUM_HEADS,
) -> keras.Model:
    """MiT encoder `variant` (a key of `MIT_VARIANTS`) -> {"P2".."P5"}; `hidden_sizes`,
    `depths` and `num_heads` override the variant's (four values each)."""
    default_sizes, default_depths = MIT_VARIANTS[variant]
    hidden_sizes = tuple(hidden_sizes or default_sizes)
    depths = tuple(depths or default_depths)
    num_heads = tuple(num_heads)
    for arg, value in (
        ("hidden_sizes", hidden_sizes),
        ("depths", depths),
        ("num_heads", num_heads),
    ):
        if len(value) != 4 or not all(isinstance(v, int) and v >= 1 for v in value):
            raise ValueError(f"{arg} must be four positive ints (one per stage), got {value!r}")
    bad = [(c, h) for c, h in zip(hidden_sizes, num_heads, strict=True) if c % h]
    if bad:
        raise ValueError(f"hidden_sizes must divide by num_heads, got {hidden_sizes} / {num_heads}")
    inputs = keras.Input(input_shape, name="pixels")
    x = inputs
    outputs = {}
    for stage in range(4):
        name = f"stage{stage + 1}"
        kernel = PATCH_SIZES[stage]
        # Explicit symmetric padding + valid conv = PyTorch's `padding=k // 2`; Keras "same"
        # pads one pixel less at the top-left for strided convolutions on some sizes.
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_patch_pad")(x)
        x = layers.Conv2D(
            hidden_sizes[stage], kernel, strides=PATCH_STRIDES[stage], name=f"{name}_patch_embed"
        )(x)
        x = _layer_norm(f"{name}_patch_norm")(x)
        for block in range(depths[stage]):
            x = _block(
                x,
                hidden_sizes[stage],
                num_heads[stage],
                SR_RATIOS[stage],
                f"{name}_block{block + 1}",
            )
        x = _layer_norm(f"{name}_norm")(x)
        outputs[LEVELS[stage]] = x
    return keras.Model(inputs, outputs, name=variant)


def _register(variant: str) -> None:
    @register_backbone(
        variant,
        normalization="torch",
        output_strides=(32,),
        levels=LEVELS,
        small_config={"hidden_sizes": (8, 16, 40, 64), "depths": (1, 1, 1, 1)},
    )
    def builder(
        input_shape=(None, None, 3),
        weights=None,
        output_stride=32,
        hidden_sizes=None,
        depths=None,
        num_heads=NUM_HEADS,
    ) -> keras.Model:
        if weights is not None:
            raise ValueError(
                f"{variant} has no keras.applications weights; pass weights=None or a "
                f"transformers checkpoint (e.g. hf://nvidia/{variant.replace('_', '-')}), got "
                f"{weights!r}"
            )
        return mit(variant, input_shape, hidden_sizes, depths, num_heads)

    builder.__name__ = variant
    builder.__doc__ = f"MiT-{variant[-2:].upper()} (SegFormer's encoder): pyramid P2..P5."


for _variant in MIT_VARIANTS:
    _register(_variant)
