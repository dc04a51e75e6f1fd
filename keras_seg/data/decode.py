"""Decoding of images and label masks, and the checked `(image, mask)` tf.data.Dataset.

Label PNGs are often palette ("P" mode) images whose pixel value is the palette index
(VOC). `tf.io.decode_png` expands a palette to RGB colours, and OpenCV does the same, so
`decode_label_png` first swaps the PNG's palette for the identity palette (entry i = grey
level i, CRC fixed) and then decodes: the grey level is the palette index. This stays a
graph op (no Python), so it runs in parallel inside tf.data. The map functions avoid
`tf.cond`: each conditional is a function that tf.data instantiates when an iterator
starts, which made every pass over the data cost about a second.
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_seg.data.check import IMAGE_KINDS
from keras_seg.data.check import sample_problem
from keras_seg.data.errors import bad_values
from keras_seg.data.errors import size_mismatch
from keras_seg.data.errors import tagged
from keras_seg.data.info import INVALID
from keras_seg.data.options import without_autotune
from keras_seg.data.storage import Store

_IDENTITY = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
# CRC-32 of the PLTE chunk holding the first n identity entries, n = 0..256.
_PLTE_CRC = [zlib.crc32(b"PLTE" + _IDENTITY[: 3 * n]).to_bytes(4, "big") for n in range(257)]
ON_ERROR = ("raise", "skip")


def _be_uint32(four_bytes: tf.Tensor) -> tf.Tensor:
    b = tf.cast(tf.io.decode_raw(four_bytes, tf.uint8), tf.int32)
    return ((b[0] * 256 + b[1]) * 256 + b[2]) * 256 + b[3]


def _identity_palette(data: tf.Tensor) -> tf.Tensor:
    """PNG bytes with the PLTE chunk's colours replaced by entry i = (i, i, i)."""
    # Only the header before the first IDAT chunk is searched: PLTE must precede IDAT,
    # and compressed pixel data could contain the bytes "PLTE" by chance.
    head_rest = tf.concat([tf.strings.split(data, sep="IDAT", maxsplit=1), [""]], 0)
    parts = tf.concat([tf.strings.split(head_rest[0], sep="PLTE", maxsplit=1), [""]], 0)
    head, tail = parts[0], parts[1]
    n = tf.clip_by_value(
        _be_uint32(tf.strings.substr(head, tf.strings.length(head) - 4, 4)), 0, 768
    )
    patched = tf.strings.join(
        [
            head,
            "PLTE",
            tf.strings.substr(tf.constant(_IDENTITY), 0, n),
            tf.gather(tf.constant(_PLTE_CRC), n // 3),
            tf.strings.substr(tail, tf.minimum(n + 4, tf.strings.length(tail)), -1),
            "IDAT",
            head_rest[1],
        ]
    )
    is_palette = tf.equal(tf.strings.substr(data, 25, 1), b"\x03")  # IHDR colour type
    return tf.where(is_palette & tf.not_equal(tail, ""), patched, data)


def decode_label_png(data: tf.Tensor) -> tf.Tensor:
    """Class-id PNG bytes -> int32 `[H, W]`: palette index for palette PNGs, else grey level.

    Palette PNGs of 1, 2, 4 or 8 bits and 8- or 16-bit grey PNGs are supported; an RGB PNG
    gives its luma.
    """
    sixteen_bit = tf.equal(tf.strings.substr(data, 24, 1), b"\x10")  # IHDR bit depth
    # Decoding to uint16 serves both depths: 8-bit values come out multiplied by 257.
    wide = tf.cast(tf.io.decode_png(_identity_palette(data), 1, tf.uint16)[..., 0], tf.int32)
    return tf.where(sixteen_bit, wide, wide // 257)


def encode_label_png(mask: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """Class-id mask uint8 `[H, W]` -> palette PNG bytes, as VOC stores its masks.

    `palette` is uint8 `[n, 3]` (default: the VOC colour map of 256 entries).
    """
    import cv2

    from keras_seg.data.info import voc_palette

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(mask, np.uint8))
    if not ok or np.ndim(mask) != 2:
        raise ValueError(f"cannot encode a mask of shape {np.shape(mask)} as a palette PNG")
    data = encoded.tobytes()
    # An 8-bit grey PNG and an 8-bit palette PNG store pixels the same way: set the IHDR
    # colour type to 3 (palette) and add a PLTE chunk after IHDR.
    ihdr = bytearray(data[16:29])
    ihdr[9] = 3
    colours = np.asarray(voc_palette(256) if palette is None else palette, np.uint8).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    return data[:8] + chunk(b"IHDR", bytes(ihdr)) + chunk(b"PLTE", colours) + data[33:]


def decode_sbd_mat(data: bytes) -> np.ndarray:
    """SBD `cls/*.mat` bytes -> int32 `[H, W]` (struct `GTcls`, field `Segmentation`)."""
    from scipy.io import loadmat

    mat = loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    return np.asarray(mat["GTcls"].Segmentation, np.int32)


def allowed_text(lut: np.ndarray) -> str:
    """'0..20, 255' style description of the raw values a look-up table accepts."""
    ok = np.flatnonzero(lut != INVALID).tolist()
    runs, start = [], ok[0] if ok else None
    for a, b in zip(ok, ok[1:] + [None], strict=True):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}..{a}")
            start = b
    return ", ".join(runs) or "none"


def diagnose(image_store: Store, image: str, mask_store: Store, mask: str) -> str:
    """Why a sample that TensorFlow could not read or decode failed (Python; on failure only).

    The file check's header reading first (it names truncated files), then OpenCV decoding
    (for damage inside the data), then SBD `.mat` parsing.
    """
    import cv2

    problem = sample_problem(image_store, image, mask_store, mask, decodes=None)
    if problem is not None:
        return problem
    for store, name, expected in ((image_store, image, IMAGE_KINDS), (mask_store, mask, "a PNG")):
        where = store.describe(name)
        data = store.read(name)
        if name.endswith(".mat"):
            try:
                decode_sbd_mat(data)
            except Exception as e:  # noqa: BLE001 - any failure means a corrupt file
                return f"{where}: not an SBD .mat with GTcls.Segmentation ({type(e).__name__})"
        elif cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is None:
            return f"{where}: corrupt image data (expected {expected} that decodes)"
    return (
        f"{image_store.describe(image)} or {mask_store.describe(mask)}: could not be decoded "
        f"(expected {IMAGE_KINDS} and a PNG mask)"
    )


def _join_op(pieces: list) -> tf.Tensor:
    """`tf.strings.join` of strings and string or integer tensors."""
    return tf.strings.join(
        [tf.strings.as_string(p) if tf.is_tensor(p) and p.dtype != tf.string else p for p in pieces]
    )


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
    values the table does not allow raises `tf.errors.InvalidArgumentError` whose message
    names the file and what was expected (`on_error="raise"`; `errors.data_error_from` turns
    it into a one-line `DataError`); the samples after it in that pass are dropped. With
    `on_error="skip"` such a sample is dropped with a warning that names it and counts the
    samples dropped so far.

    With `on_error="raise"` the error message is built by graph ops, so a pipeline over
    plain files never calls Python. That matters: after the error has reached the caller,
    tf.data threads keep working ahead (the next pass of a repeated dataset meets the same
    bad sample again). A `tf.numpy_function` called then, while the interpreter exits or
    while the caller frees the iterator, kills the thread inside TensorFlow (the process
    aborts with "terminate called without an active exception", SIGABRT) or deadlocks on
    the GIL. The error is raised by a step after the scan, so no retry re-runs it.
    (Archive members and SBD `.mat` masks are still read in Python.)

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
    allowed = allowed_text(lut)
    lut_t = tf.constant(lut, tf.int32)
    mats = [m.endswith(".mat") for _, _, _, m in samples]
    # [image, mask] file names for messages (and for reading, in plain folders).
    paths = tf.constant([[s.describe(i), t.describe(m)] for s, i, t, m in samples] + [["", ""]])

    if all(s.is_directory and t.is_directory for s, _, t, _ in samples):

        def read(i):
            return tf.io.read_file(paths[i, 0]), tf.io.read_file(paths[i, 1])
    else:

        def _read_py(i):
            image_store, image, mask_store, mask = samples[int(i)]
            return image_store.read(image), mask_store.read(mask)

        def read(i):
            image, mask = tf.numpy_function(_read_py, [i], [tf.string, tf.string], stateful=False)
            return tf.ensure_shape(image, []), tf.ensure_shape(mask, [])

    def decode_mask(i, data):
        if not any(mats):
            return decode_label_png(data)
        if all(mats):
            out = tf.numpy_function(decode_sbd_mat, [data], tf.int32, stateful=False)
            return tf.ensure_shape(out, [None, None])
        is_mat = tf.constant(mats)[i]
        return tf.cond(
            is_mat,
            lambda: tf.ensure_shape(
                tf.numpy_function(decode_sbd_mat, [data], tf.int32, stateful=False), [None, None]
            ),
            lambda: decode_label_png(data),
        )

    def decode(position, i):
        image_bytes, mask_bytes = read(i)
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        raw = decode_mask(i, mask_bytes)
        mask = tf.gather(lut_t, tf.clip_by_value(raw, 0, 255))
        bad = (mask < 0) | (raw > 255)
        # Problem report: [image h, image w, mask h, mask w, bad pixel count, a bad value].
        report = tf.concat(
            [
                tf.shape(image)[:2],
                tf.shape(mask),
                [tf.reduce_sum(tf.cast(bad, tf.int32)), tf.reduce_max(tf.where(bad, raw, -1))],
            ],
            0,
        )
        return position, image, mask, report

    def message_op(position, expected, report, order):
        """The first failure of one scan step, told in graph ops (`on_error="raise"`)."""
        image, mask = paths[order[position], 0], paths[order[position], 1]
        h, w, mh, mw, count, value = tf.unstack(report)
        gap = [
            paths[order[expected], 0],
            " or its mask ",
            paths[order[expected], 1],
            f": could not be decoded (corrupt data; expected {IMAGE_KINDS} and a PNG mask)",
        ]
        first = tf.where(
            position > expected,
            _join_op(gap),
            tf.where(
                count > 0,
                _join_op(bad_values(name, mask, count, value, allowed)),
                _join_op(size_mismatch(image, w, h, mask, mw, mh)),
            ),
        )
        return tf.strings.join([tagged(f"{name}: "), first])

    def explain(position, expected, report, dropped, order):
        """Warn about the failed samples of one scan step (Python; `on_error="skip"`)."""
        messages = [diagnose(*samples[int(order[p])]) for p in range(expected, position)]
        h, w, mh, mw, count, value = report.tolist()
        if position < n and ((h, w) != (mh, mw) or count):
            image_store, image, mask_store, mask = samples[int(order[position])]
            image, mask = image_store.describe(image), mask_store.describe(mask)
            pieces = (
                bad_values(name, mask, count, value, allowed)
                if count
                else size_mismatch(image, w, h, mask, mw, mh)
            )
            messages.append("".join(map(str, pieces)))
        for k, message in enumerate(messages, int(dropped) + 1):
            warnings.warn(f"{name}: skipped a sample ({k} skipped so far): {message}", stacklevel=1)
        return b""

    def one_pass(order):
        # `order` is this pass's sample order; position p holds sample order[p].
        sentinel = tf.data.Dataset.from_tensors(
            (tf.constant(n, tf.int64), tf.zeros([0, 0, 3], tf.uint8), tf.zeros([0, 0], tf.int32),
             tf.zeros([6], tf.int32))
        )  # fmt: skip
        order_t = tf.concat([order, [n]], 0)

        def check(state, element):
            expected, dropped, stopped = state
            position, image, mask, report = element
            gap = position > expected
            bad = (report[4] > 0) | tf.reduce_any(report[:2] != report[2:4])
            failed = (gap | (bad & (position < n))) & ~stopped
            if on_error == "raise":
                message = tf.where(failed, message_op(position, expected, report, order_t), "")
                stopped |= failed  # the rest of the pass is dropped: one error per pass
            else:
                message = tf.cond(
                    failed,
                    lambda: tf.ensure_shape(
                        tf.numpy_function(
                            explain, [position, expected, report, dropped, order_t], tf.string
                        ),
                        [],
                    ),
                    lambda: tf.constant(""),
                )
            dropped += position - expected + tf.cast(bad, tf.int64)
            keep = (position < n) & ~bad & ~stopped
            return (position + 1, dropped, stopped), (keep, message, image, mask)

        ds = (
            tf.data.Dataset.from_tensor_slices(order)
            .enumerate()
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE)
            # A decoder failure (corrupt file) drops the element; the scan below notices the
            # missing position and reports that sample's files by name.
            .ignore_errors()
            .concatenate(sentinel)
        )
        zero = tf.constant(0, tf.int64)
        return ds.scan((zero, zero, tf.constant(False)), check)

    orders = tf.data.Dataset.range(n)
    if shuffle:
        orders = orders.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = orders.batch(n).flat_map(one_pass)
    else:
        ds = one_pass(tf.range(n, dtype=tf.int64))

    def finish(keep, message, image, mask):
        with tf.control_dependencies([tf.debugging.Assert(tf.equal(message, ""), [message])]):
            return image, tf.cast(mask, tf.uint8)

    # With on_error="skip", `message` is always empty (the warning is the report).
    ds = ds.filter(lambda keep, message, image, mask: keep | tf.not_equal(message, ""))
    return without_autotune(ds.map(finish))
