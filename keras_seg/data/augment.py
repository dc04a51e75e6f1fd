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

import tensorflow as tf

from keras_seg.data.info import IGNORE_LABEL

#: ImageNet mean pixel (RGB, 0..255): padding colour of images.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
#: Photometric jitter, each applied with probability 0.5 (mmsegmentation's defaults):
#: brightness delta (0..1 units), contrast and saturation factor ranges, hue delta (turns).
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
    if flip:
        x1, x2 = tf.cond(_uniform(seeds[3]) < 0.5, lambda: (x2, x1), lambda: (x1, x2))
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
    if jitter:
        image = photometric(image, seeds[4], jitter if isinstance(jitter, dict) else None)
    image = tf.where(padding, tf.constant(mean, tf.float32), image)
    return image, tf.cast(mask, tf.int32)


def photometric(image: tf.Tensor, seed: tf.Tensor, jitter: dict | None = None) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter on a float `[H, W, 3]` 0..255 image,
    each with probability 0.5 and a magnitude drawn from `jitter` (default `JITTER`)."""
    jitter = {**JITTER, **(jitter or {})}
    seeds = tf.random.experimental.stateless_split(seed, 8)
    x = image / 255.0

    def maybe(i, fn, x):
        return tf.cond(_uniform(seeds[2 * i]) < 0.5, lambda: fn(x, seeds[2 * i + 1]), lambda: x)

    b, (c0, c1), (s0, s1), h = (jitter[k] for k in ("brightness", "contrast", "saturation", "hue"))
    x = maybe(0, lambda x, s: x + _uniform(s, -b, b), x)
    x = maybe(1, lambda x, s: tf.image.adjust_contrast(x, _uniform(s, c0, c1)), x)
    x = tf.clip_by_value(x, 0.0, 1.0)
    x = maybe(2, lambda x, s: tf.image.adjust_saturation(x, _uniform(s, s0, s1)), x)
    x = maybe(3, lambda x, s: tf.image.adjust_hue(x, _uniform(s, -h, h)), x)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


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
