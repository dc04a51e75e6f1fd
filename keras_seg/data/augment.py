"""Training augmentation and evaluation resizing, as graph ops for tf.data map functions.

Scale, pad, crop and flip are done by one `tf.image.crop_and_resize` per tensor: the crop
window is mapped back to the source image, so the resize costs O(crop) and not O(scaled
image), padding is the op's extrapolation, and a flip is a box with x1 > x2. Image and
mask share the box, so they stay aligned pixel for pixel; the mask uses nearest neighbour.
All randomness is `tf.random.stateless_*` from one seed per sample, so a seed fixes the
batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_seg.data.info import IGNORE_LABEL

#: ImageNet mean pixel (RGB, 0..255): padding colour of images.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
#: Photometric jitter, each applied with probability 0.5 (mmsegmentation's magnitudes):
#: brightness delta (fraction of 255), contrast and saturation factor ranges, hue delta
#: (fraction of a full turn).
JITTER = {"brightness": 32 / 255, "contrast": (0.5, 1.5), "saturation": (0.5, 1.5), "hue": 0.1}


def _uniform(seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


def train_augment(
    image: tf.Tensor,
    mask: tf.Tensor,
    crop_size: Sequence[int],
    seed: tf.Tensor,
    scale_range: Sequence[float] = (0.5, 2.0),
    flip: bool = True,
    jitter: bool | dict = True,
    mean: Sequence[float] = IMAGENET_MEAN,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random scale, pad (image: `mean`, mask: 255) to at least `crop_size`, random crop,
    horizontal flip (all identical on image and mask), then photometric jitter (image only;
    padding keeps the mean colour).

    Args:
        image: uint8 or float `[H, W, 3]`, 0..255.
        mask: integer `[H, W]` class ids.
        crop_size: `(height, width)` of the output.
        seed: int32/int64 `[2]` stateless seed.
        scale_range: `(low, high)` of the uniform random scale factor.
        flip: random horizontal flip with probability 0.5.
        jitter: photometric jitter (`True` for `JITTER`, a dict to override magnitudes).
        mean: padding colour of the image (RGB 0..255).

    Returns:
        float32 `[h, w, 3]` image in 0..255 and int32 `[h, w]` mask.
    """
    ch, cw = int(crop_size[0]), int(crop_size[1])
    seeds = tf.random.experimental.stateless_split(seed, 5)
    size = tf.cast(tf.shape(mask), tf.float32)
    scale = _uniform(seeds[0], scale_range[0], scale_range[1])
    # Scaled size (at least 2 px so the corner-aligned mapping below is defined).
    scaled = tf.maximum(tf.round(size * scale), 2.0)
    room = tf.maximum(scaled - [ch, cw], 0.0)  # bottom/right padding makes room >= 0
    oy = tf.floor(_uniform(seeds[1]) * (room[0] + 1))
    ox = tf.floor(_uniform(seeds[2]) * (room[1] + 1))
    # Scaled pixel y maps to source y * (H - 1) / (H' - 1); a crop_and_resize box is in
    # units of (H - 1). Squeezing the box into [eps, 1 - eps] keeps the first and last
    # in-image rows/columns from being taken for padding through float round-off.
    eps = 1e-5

    def unit(v, extent):
        return eps + v / extent * (1.0 - 2.0 * eps)

    y1, y2 = unit(oy, scaled[0] - 1.0), unit(oy + ch - 1, scaled[0] - 1.0)
    x1, x2 = unit(ox, scaled[1] - 1.0), unit(ox + cw - 1, scaled[1] - 1.0)
    if flip:  # a box with x1 > x2 samples the mirror image
        flipped = _uniform(seeds[3]) < 0.5
        x1, x2 = tf.where(flipped, x2, x1), tf.where(flipped, x1, x2)
    box = tf.stack([y1, x1, y2, x2])[None]
    # Extrapolated (padding) pixels come out as -1, impossible for real pixels >= 0.
    # (crop_and_resize is faster on float32 input than on uint8.)
    image = tf.image.crop_and_resize(
        tf.cast(image, tf.float32)[None], box, [0], (ch, cw), extrapolation_value=-1.0
    )[0]
    mask = tf.image.crop_and_resize(
        mask[None, ..., None], box, [0], (ch, cw), "nearest", extrapolation_value=IGNORE_LABEL
    )[0, ..., 0]
    padding = image[..., :1] < 0
    image = tf.where(padding, tf.constant(mean, tf.float32), image)
    if jitter:  # padding keeps the mean colour
        jittered = photometric(image, seeds[4], jitter if isinstance(jitter, dict) else None)
        image = tf.where(padding, image, jittered)
    return image, tf.cast(mask, tf.int32)


def _hue_rotation(theta: tf.Tensor) -> tf.Tensor:
    """3x3 RGB matrix rotating hue by `theta` radians about the grey axis in YIQ space."""
    cos, sin = tf.cos(theta), tf.sin(theta)
    zero, one = tf.zeros_like(theta), tf.ones_like(theta)
    rotation = tf.stack([[one, zero, zero], [zero, cos, -sin], [zero, sin, cos]])
    return tf.constant(_YIQ_INV) @ rotation @ tf.constant(_YIQ)


_GREY = np.array([0.299, 0.587, 0.114], np.float32)
_YIQ = np.array([_GREY, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_INV = np.linalg.inv(_YIQ).astype(np.float32)


def photometric(image: tf.Tensor, seed: tf.Tensor, jitter: dict | None = None) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter of a float `[H, W, 3]` 0..255 image.

    Each is applied with probability 0.5 with a magnitude drawn from `jitter` (default
    `JITTER`). All four are linear in RGB, so they are composed into one 3x3 matrix and an
    offset and applied in one pass (clipped to 0..255 at the end): brightness adds a delta;
    contrast scales about the mean grey level; saturation blends with the grey image (as
    torchvision does); hue rotates colours about the grey axis in YIQ space (the
    luminance-keeping matrix of the SVG/CSS hue-rotate filter) instead of an HSV round trip,
    which cost several times more per pixel.
    """
    jitter = {**JITTER, **(jitter or {})}
    b, (c0, c1), (s0, s1), h = (jitter[k] for k in ("brightness", "contrast", "saturation", "hue"))
    seeds = tf.random.experimental.stateless_split(seed, 8)

    def draw(k, low, high, identity):
        return tf.where(_uniform(seeds[k]) < 0.5, _uniform(seeds[k + 4], low, high), identity)

    brightness = draw(0, -b * 255.0, b * 255.0, 0.0)
    contrast = draw(1, c0, c1, 1.0)
    saturation = draw(2, s0, s1, 1.0)
    theta = draw(3, -h * 2 * np.pi, h * 2 * np.pi, 0.0)
    grey = tf.constant(_GREY)
    # x -> x + b -> c x + (1 - c) mean -> S x -> H x, with S = s I + (1 - s) 1 grey^T.
    mean = tf.reduce_mean(tf.tensordot(image, grey, 1)) + brightness
    sat = saturation * tf.eye(3) + (1.0 - saturation) * tf.ones([3, 1]) * grey[None]
    matrix = _hue_rotation(theta) @ sat
    offset = tf.linalg.matvec(matrix, tf.fill([3], contrast * brightness + (1 - contrast) * mean))
    out = tf.tensordot(image, tf.transpose(matrix * contrast), 1) + offset
    return tf.clip_by_value(out, 0.0, 255.0)


def fit_and_pad(
    image: tf.Tensor,
    mask: tf.Tensor,
    size: Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Evaluation resizing: shrink (keeping the aspect ratio) only if larger than `size`,
    then pad bottom/right to `size` (image: `mean`, mask: 255). No randomness."""
    h, w = int(size[0]), int(size[1])
    shape = tf.cast(tf.shape(mask), tf.float32)
    ratio = tf.minimum(1.0, tf.reduce_min([h, w] / shape))
    new = tf.cast(tf.round(shape * ratio), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear")
    mask = tf.image.resize(mask[..., None], new, method="nearest")[..., 0]
    pad = [[0, h - new[0]], [0, w - new[1]]]
    image = tf.stack(
        [tf.pad(image[..., c], pad, constant_values=mean[c]) for c in range(3)], axis=-1
    )
    mask = tf.pad(tf.cast(mask, tf.int32), pad, constant_values=IGNORE_LABEL)
    return tf.ensure_shape(image, [h, w, 3]), tf.ensure_shape(mask, [h, w])
