"""Decoding of images and label masks, and the checked `(image, mask)` tf.data.Dataset.

Label PNGs are often palette ("P" mode) images whose pixel value is the palette index
(VOC). `tf.io.decode_png` expands a palette to RGB colours, and OpenCV does the same, so
`decode_label_png` first swaps the PNG's palette for the identity palette (entry i = grey
level i, CRC fixed) and then decodes: the grey level is the palette index. This stays a
graph op, so it runs in parallel inside tf.data.
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_seg.data.info import INVALID
from keras_seg.data.storage import Store

_IDENTITY = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
# CRC-32 of the PLTE chunk holding the first n identity entries, n = 0..256.
_PLTE_CRC = [zlib.crc32(b"PLTE" + _IDENTITY[: 3 * n]).to_bytes(4, "big") for n in range(257)]
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_IMAGE_MAGICS = (_PNG_MAGIC[:4], b"\xff\xd8\xff", b"BM", b"GIF8")
_MAT_MAGIC = b"MATLAB"
ON_ERROR = ("raise", "skip")


def _be_uint32(four_bytes: tf.Tensor) -> tf.Tensor:
    b = tf.cast(tf.io.decode_raw(four_bytes, tf.uint8), tf.int32)
    return ((b[0] * 256 + b[1]) * 256 + b[2]) * 256 + b[3]


def _identity_palette(data: tf.Tensor) -> tf.Tensor:
    # Only the header before the first IDAT chunk is searched: PLTE must precede IDAT,
    # and compressed pixel data could contain the bytes "PLTE" by chance.
    head_rest = tf.strings.split(data, sep="IDAT", maxsplit=1)
    parts = tf.strings.split(head_rest[0], sep="PLTE", maxsplit=1)

    def patch():
        head, tail = parts[0], parts[1]
        n = _be_uint32(tf.strings.substr(head, tf.strings.length(head) - 4, 4))
        return tf.strings.join(
            [
                head,
                "PLTE",
                tf.strings.substr(tf.constant(_IDENTITY), 0, n),
                tf.gather(tf.constant(_PLTE_CRC), n // 3),
                tf.strings.substr(tail, n + 4, -1),
                "IDAT",
                head_rest[1],
            ]
        )

    return tf.cond(tf.size(parts) > 1, patch, lambda: data)


def decode_label_png(data: tf.Tensor) -> tf.Tensor:
    """Class-id PNG bytes -> int32 `[H, W]`: palette index for palette PNGs, else grey level.

    Palette PNGs of 1, 2, 4 or 8 bits, 8-bit and 16-bit grey PNGs are supported; an RGB
    PNG gives its first channel.
    """
    color_type = tf.strings.substr(data, 25, 1)
    bit_depth = tf.strings.substr(data, 24, 1)
    data = tf.cond(tf.equal(color_type, b"\x03"), lambda: _identity_palette(data), lambda: data)
    return tf.cond(
        tf.equal(bit_depth, b"\x10"),
        lambda: tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16)[..., 0], tf.int32),
        lambda: tf.cast(tf.io.decode_png(data, channels=1)[..., 0], tf.int32),
    )


def decode_sbd_mat(data: bytes) -> np.ndarray:
    """SBD `cls/*.mat` bytes -> int32 `[H, W]` (struct `GTcls`, field `Segmentation`)."""
    from scipy.io import loadmat

    mat = loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    return np.asarray(mat["GTcls"].Segmentation, np.int32)


def _decode_mask(data: tf.Tensor, is_mat: tf.Tensor) -> tf.Tensor:
    def mat():
        out = tf.numpy_function(decode_sbd_mat, [data], tf.int32, stateful=False)
        return tf.ensure_shape(out, [None, None])

    return tf.cond(is_mat, mat, lambda: decode_label_png(data))


def _allowed_text(lut: np.ndarray) -> str:
    """'raw values 0..20, 255' style description of the values a look-up table accepts."""
    ok = np.flatnonzero(lut != INVALID)
    runs, start = [], ok[0] if len(ok) else None
    for a, b in zip(ok, list(ok[1:]) + [None], strict=True):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}..{a}")
            start = b
    return ", ".join(runs) or "none"


def _magic_ok(data: tf.Tensor, magics: Sequence[bytes]) -> tf.Tensor:
    return tf.reduce_any([tf.equal(tf.strings.substr(data, 0, len(m)), m) for m in magics], axis=0)


def checked_dataset(
    samples: Sequence[tuple[Store, str, Store, str]],
    lut: np.ndarray,
    name: str,
    on_error: str = "raise",
    shuffle: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Decode `(image_store, image_name, mask_store, mask_name)` samples into `(image, mask)`.

    Masks are mapped through `lut` (raw value -> class id, -1 = not allowed). A sample whose
    files cannot be read or decoded, whose image and mask sizes differ, or whose mask holds
    values the table does not allow raises `tf.errors.InvalidArgumentError` naming the file
    (`on_error="raise"`), or is dropped with a warning on stderr naming it and the running
    count of dropped samples (`on_error="skip"`).

    Args:
        shuffle: visit the samples in a new random order on every pass (before decoding,
            so no decoded image is held in a buffer); `seed` makes the orders repeatable.

    Returns:
        Dataset of `(uint8 [H, W, 3], uint8 [H, W])`, in the order of `samples` unless
        `shuffle`.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    n = len(samples)
    image_desc = tf.constant([s.describe(i) for s, i, _, _ in samples] + [""])
    mask_desc = tf.constant([s.describe(m) for _, _, s, m in samples] + [""])
    is_mat = tf.constant([m.endswith(".mat") for _, _, _, m in samples])
    lut_t = tf.constant(lut, tf.int32)
    allowed = f"{name} allows raw mask values {_allowed_text(lut)}"

    if all(s.is_directory for s, _, _, _ in samples) and all(
        s.is_directory for _, _, s, _ in samples
    ):

        def read(i):
            return tf.io.read_file(image_desc[i]), tf.io.read_file(mask_desc[i])
    else:

        def _read_py(i):
            image_store, image, mask_store, mask = samples[int(i)]
            return image_store.read(image), mask_store.read(mask)

        def read(i):
            image, mask = tf.numpy_function(_read_py, [i], [tf.string, tf.string], stateful=False)
            return tf.ensure_shape(image, []), tf.ensure_shape(mask, [])

    def decode(i):
        image_bytes, mask_bytes = read(i)
        image_ok = _magic_ok(image_bytes, _IMAGE_MAGICS)
        mask_ok = tf.cond(
            is_mat[i],
            lambda: _magic_ok(mask_bytes, [_MAT_MAGIC]),
            lambda: _magic_ok(mask_bytes, [_PNG_MAGIC]),
        )
        readable = image_ok & mask_ok
        image = tf.cond(
            readable,
            lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
            lambda: tf.zeros([0, 0, 3], tf.uint8),
        )
        raw = tf.cond(
            readable,
            lambda: _decode_mask(mask_bytes, is_mat[i]),
            lambda: tf.zeros([0, 0], tf.int32),
        )
        mask = tf.where(raw > 255, INVALID, tf.gather(lut_t, tf.minimum(raw, 255)))
        same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask)))
        bad = mask < 0
        problem = tf.case(
            [
                (
                    ~image_ok,
                    lambda: tf.strings.join([image_desc[i], ": not a JPEG, PNG, BMP or GIF image"]),
                ),
                (
                    ~mask_ok,
                    lambda: tf.strings.join(
                        [mask_desc[i], ": not a ", tf.where(is_mat[i], ".mat", "PNG"), " mask"]
                    ),
                ),
                (
                    ~same_size,
                    lambda: tf.strings.format(
                        "{}: mask size {} differs from image size {} of {}",
                        (mask_desc[i], tf.shape(mask), tf.shape(image)[:2], image_desc[i]),
                    ),
                ),
                (
                    tf.reduce_any(bad),
                    lambda: tf.strings.format(
                        "{}: mask values {} are not classes; " + allowed,
                        (mask_desc[i], tf.unique(tf.boolean_mask(raw, bad))[0][:8]),
                        summarize=8,
                    ),
                ),
            ],
            default=lambda: tf.constant(""),
            exclusive=False,
        )
        return i, image, mask, problem

    def one_pass(order):
        # `order` is this pass's sample order; position p holds sample order[p].
        sentinel = tf.data.Dataset.from_tensors(
            (
                tf.constant(n, tf.int64),
                tf.zeros([0, 0, 3], tf.uint8),
                tf.zeros([0, 0], tf.int32),
                "",
            )
        )
        ds = (
            tf.data.Dataset.range(n)
            .map(lambda p: decode(order[p]) + (p,), num_parallel_calls=tf.data.AUTOTUNE)
            # A decoder failure (corrupt file) drops the element; the scan below notices the
            # missing position and reports that sample's files by name.
            .ignore_errors()
            .map(lambda i, image, mask, problem, p: (p, image, mask, problem))
            .concatenate(sentinel)
        )
        return ds.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), _checker(order))

    def _checker(order):
        order = tf.concat([order, [n]], 0)

        def check(state, element):
            expected, dropped = state
            p, image, mask, problem = element
            gap = p > expected
            bad = tf.not_equal(problem, "")
            dropped = dropped + (p - expected) + tf.cast(bad & (p < n), tf.int64)
            missing = tf.strings.format(
                "{}: could not read or decode the image {} or its mask {} (expected a "
                "JPEG/PNG image and a class-id mask of the same size); samples skipped: {}",
                (name, image_desc[order[expected]], mask_desc[order[expected]], dropped),
            )
            if on_error == "raise":
                ops = [
                    tf.debugging.Assert(~gap, [missing]),
                    tf.debugging.Assert(~bad, [problem]),
                ]
            else:
                ops = [
                    tf.cond(gap, lambda: tf.print("WARNING keras_seg.data:", missing), tf.no_op),
                    tf.cond(
                        bad,
                        lambda: tf.print(
                            "WARNING keras_seg.data: skipped",
                            problem,
                            "; samples skipped:",
                            dropped,
                        ),
                        tf.no_op,
                    ),
                ]
            with tf.control_dependencies(ops):
                keep = tf.identity((p < n) & ~bad)
            return (p + 1, dropped), (keep, image, mask)

        return check

    orders = tf.data.Dataset.range(n)
    if shuffle:
        orders = orders.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return (
        orders.batch(n)
        .flat_map(one_pass)
        .filter(lambda keep, image, mask: keep)
        .map(lambda keep, image, mask: (image, tf.cast(mask, tf.uint8)))
    )


def warn_skipped(name: str, skipped: Sequence[str], what: str) -> None:
    """One warning that counts samples dropped before decoding (e.g. a missing mask)."""
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"{name}: skipped {len(skipped)} samples {what}: {shown}", stacklevel=3)
