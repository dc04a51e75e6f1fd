"""Training augmentation and evaluation resizing, as graph ops for tf.data map functions.

Training geometry works backwards from the crop: the random scale and crop offset pick the
source region that lands in the crop, and only that region is resized (bilinear for the
image, nearest-neighbour index gathers for the mask), so the cost is O(crop), not
O(scaled image). The flip reverses the region's column order (the vertical flip, `vflip`,
its row order); padding (image: the mean colour, mask: 255) goes on the bottom and on the
right (top / left when flipped). Image and mask
use the same region, output size and flip, so they stay aligned. Photometric jitter is one
3x3 colour matrix applied to the region before resizing (so padding keeps the mean colour).
There is no `tf.cond`, and all randomness is `tf.random.stateless_*` from one seed per
sample, so a seed fixes the batches.
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


def _axis(n: tf.Tensor, scale: tf.Tensor, crop: int, u: tf.Tensor):
    """Source region `[start, start + length)` of one axis and its output length.

    The source axis of `n` pixels scaled by `scale` is `scaled` long; a crop of `crop` at a
    random offset (`u` in [0, 1)) covers `crop / scale` source pixels. A scaled axis shorter
    than the crop keeps all of it, `scaled` long, and is padded up to `crop`.
    """
    nf = tf.cast(n, tf.float32)
    scaled = tf.maximum(tf.round(nf * scale), 1.0)
    fits = scaled >= crop
    offset = tf.floor(u * (scaled - crop + 1.0))
    start = tf.where(fits, tf.cast(tf.round(offset * nf / scaled), tf.int32), 0)
    length = tf.where(fits, tf.cast(tf.maximum(tf.round(crop * nf / scaled), 1.0), tf.int32), n)
    length = tf.minimum(length, n - start)
    out = tf.where(fits, crop, tf.cast(scaled, tf.int32))
    return start, length, out


def _nearest(start, length, out, crop, pad_index):
    """Nearest-neighbour source indices (half-pixel centres, as `tf.image.resize`) of the
    `crop` output pixels; padding positions get `pad_index`."""
    centres = (tf.range(out, dtype=tf.float32) + 0.5) * tf.cast(length, tf.float32)
    inside = tf.minimum(tf.cast(centres / tf.cast(out, tf.float32), tf.int32), length - 1)
    return tf.concat([start + inside, tf.fill([crop - out], pad_index)], 0)


def train_augment(
    image: tf.Tensor,
    mask: tf.Tensor,
    crop_size: Sequence[int],
    seed: tf.Tensor,
    scale_range: Sequence[float] = (0.5, 2.0),
    flip: bool = True,
    jitter: bool | dict = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    vflip: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random scale, pad (image: `mean`, mask: 255) to at least `crop_size`, random crop,
    horizontal flip (all identical on image and mask) and photometric jitter (image only;
    padding keeps the mean colour).

    Args:
        image: uint8 or float `[H, W, 3]`, 0..255.
        mask: integer `[H, W]` class ids (at most 255).
        crop_size: `(height, width)` of the output.
        seed: int32/int64 `[2]` stateless seed.
        scale_range: `(low, high)` of the uniform random scale factor.
        flip: random horizontal flip with probability 0.5.
        vflip: random vertical flip with probability 0.5 (e.g. microscopy, aerial images).
        jitter: photometric jitter (`True` for `JITTER`, a dict to override magnitudes).
        mean: padding colour of the image (RGB 0..255).

    Returns:
        float32 `[h, w, 3]` image in 0..255 and int32 `[h, w]` mask.
    """
    ch, cw = int(crop_size[0]), int(crop_size[1])
    seeds = tf.random.experimental.stateless_split(seed, 5)
    h, w = tf.shape(mask)[0], tf.shape(mask)[1]
    scale = _uniform(seeds[0], scale_range[0], scale_range[1])
    y0, ylen, yout = _axis(h, scale, ch, _uniform(seeds[1]))
    x0, xlen, xout = _axis(w, scale, cw, _uniform(seeds[2]))
    flipped = tf.constant(False)
    if flip:
        flipped = _uniform(seeds[3]) < 0.5
    vflipped = tf.constant(False)
    if vflip:  # its own draw, folded from the flip's seed: the other draws stay as they were
        vflipped = _uniform(tf.random.experimental.stateless_fold_in(seeds[3], 1)) < 0.5
    mean_t = tf.constant(mean, tf.float32)

    # Image: the (possibly mirrored) source region, jittered, resized, padded.
    columns = x0 + tf.range(xlen)
    columns = tf.where(flipped, tf.reverse(columns, [0]), columns)
    if vflip:
        rows = y0 + tf.range(ylen)
        region = tf.gather(image, tf.where(vflipped, tf.reverse(rows, [0]), rows))
    else:
        region = image[y0 : y0 + ylen]
    region = tf.gather(region, columns, axis=1)
    region = tf.cast(region, tf.float32)
    # Resizing and padding mean-centred pixels makes the padding exactly `mean`; the
    # centring is folded into the jitter's offset, and clipping (which leaves the padding
    # alone) comes last.
    if jitter:
        options = jitter if isinstance(jitter, dict) else None
        matrix, offset = colour_transform(tf.reduce_mean(region, [0, 1]), seeds[4], options)
        region = _apply_colour(region, matrix, offset - mean_t)
    else:
        region = region - mean_t
    resized = tf.image.resize(region, tf.stack([yout, xout]))
    pad_x = cw - xout
    pad_y = ch - yout
    paddings = [
        [tf.where(vflipped, pad_y, 0), tf.where(vflipped, 0, pad_y)],
        [tf.where(flipped, pad_x, 0), tf.where(flipped, 0, pad_x)],
        [0, 0],
    ]
    image = tf.pad(resized, paddings) + mean_t
    if jitter:
        image = tf.clip_by_value(image, 0.0, 255.0)

    # Mask: the same region by nearest-neighbour index gathers; index h / w is a 255 line.
    rows = _nearest(y0, ylen, yout, ch, h)
    rows = tf.where(vflipped, tf.reverse(rows, [0]), rows)
    cols = _nearest(x0, xlen, xout, cw, w)
    cols = tf.where(flipped, tf.reverse(cols, [0]), cols)
    # float32: integer transposes fall back from oneDNN with an error-level log line.
    padded = tf.pad(tf.cast(mask, tf.float32), [[0, 1], [0, 1]], constant_values=IGNORE_LABEL)
    # Row gathers copy whole rows; gathering columns as rows of the transpose is ~3x faster.
    picked = tf.transpose(tf.gather(tf.transpose(tf.gather(padded, rows)), cols))
    mask = tf.cast(picked, tf.int32)
    return tf.ensure_shape(image, [ch, cw, 3]), tf.ensure_shape(mask, [ch, cw])


def _hue_rotation(theta: tf.Tensor) -> tf.Tensor:
    """3x3 RGB matrix rotating hue by `theta` radians about the grey axis in YIQ space."""
    cos, sin = tf.cos(theta), tf.sin(theta)
    zero, one = tf.zeros_like(theta), tf.ones_like(theta)
    rotation = tf.stack([[one, zero, zero], [zero, cos, -sin], [zero, sin, cos]])
    return tf.constant(_YIQ_INV) @ rotation @ tf.constant(_YIQ)


_GREY = np.array([0.299, 0.587, 0.114], np.float32)
_YIQ = np.array([_GREY, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_INV = np.linalg.inv(_YIQ).astype(np.float32)


def colour_transform(
    channel_means: tf.Tensor, seed: tf.Tensor, jitter: dict | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """The random photometric jitter as `x -> x @ matrix + offset` on RGB 0..255 pixels.

    Brightness, contrast, saturation and hue are each applied with probability 0.5 with a
    magnitude drawn from `jitter` (default `JITTER`). All four are linear in RGB, so they
    compose into one 3x3 matrix and an offset, applied in one pass: brightness adds a
    delta; contrast scales about the mean grey level (from `channel_means`); saturation
    blends with the grey image (as torchvision does); hue rotates colours about the grey
    axis in YIQ space (the luminance-keeping matrix of the SVG/CSS hue-rotate filter)
    instead of an HSV round trip, which cost several times more per pixel.
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
    mean = tf.reduce_sum(channel_means * grey) + brightness
    sat = saturation * tf.eye(3) + (1.0 - saturation) * tf.ones([3, 1]) * grey[None]
    matrix = _hue_rotation(theta) @ sat
    offset = tf.linalg.matvec(matrix, tf.fill([3], contrast * brightness + (1 - contrast) * mean))
    return tf.transpose(matrix * contrast), offset


def _apply_colour(image: tf.Tensor, matrix: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    flat = tf.reshape(image, [-1, 3]) @ matrix + offset
    return tf.reshape(flat, tf.shape(image))


def photometric(image: tf.Tensor, seed: tf.Tensor, jitter: dict | None = None) -> tf.Tensor:
    """Photometric jitter (`colour_transform`) of a float `[H, W, 3]` 0..255 image, clipped."""
    matrix, offset = colour_transform(tf.reduce_mean(image, [0, 1]), seed, jitter)
    return tf.clip_by_value(_apply_colour(image, matrix, offset), 0.0, 255.0)


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
    mean_t = tf.constant(mean, tf.float32)
    image = tf.image.resize(tf.cast(image, tf.float32) - mean_t, new, method="bilinear")
    mask = tf.image.resize(mask[..., None], new, method="nearest")[..., 0]
    pad = [[0, h - new[0]], [0, w - new[1]]]
    image = tf.pad(image, pad + [[0, 0]]) + mean_t
    mask = tf.pad(tf.cast(mask, tf.int32), pad, constant_values=IGNORE_LABEL)
    return tf.ensure_shape(image, [h, w, 3]), tf.ensure_shape(mask, [h, w])
