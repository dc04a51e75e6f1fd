"""The up-front file check: sizes and completeness read from file headers, no decoding.

`keras_seg.data.load` runs `check_samples` before building the pipeline (by default for data
sets in plain folders), so a missing, corrupt or truncated file, or an image and mask of
different sizes, is reported at once as a `DataError` naming the file, not minutes into
training from inside tf.data. It reads a few hundred bytes per file (PNG IHDR, JPEG SOF
marker, BMP/GIF/WebP headers, and the end of the file for the format's end marker), so it
checks thousands of files per second. A file whose header looks wrong is then decoded by
TensorFlow, the pipeline's own decoder: only files that decoder rejects are reported.
Mask values cannot be checked from headers; the pipeline checks them.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from collections.abc import Sequence

from keras_seg.data.errors import DataError
from keras_seg.data.errors import size_mismatch
from keras_seg.data.errors import warn_skipped
from keras_seg.data.storage import Store

#: Image file suffixes the readers accept (lower case): the formats `tf.io.decode_image` reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
IMAGE_KINDS = "a JPEG, PNG, BMP, GIF or WebP image"
_TAIL = 1024  # bytes read at the end of a file to find its end marker
# JPEG start-of-frame markers (C4 = DHT, C8 = JPG, CC = DAC are not frames).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # markers without a length field
_END = {
    "JPEG": "end-of-image marker FFD9",
    "PNG": "IEND chunk",
    "GIF": "trailer byte 3B",
    "BMP": "all the bytes its header declares",
    "WebP": "all the bytes its RIFF header declares",
}


class _Bad(Exception):
    """A file problem; `args[0]` says what is wrong and what was expected."""


class _Cut(Exception):
    """The file ended inside its header."""


def _jpeg(at) -> tuple[int, int]:
    """Size from the SOF marker; the walk goes on to the first scan (SOS), so a file cut
    inside its header is known as such without decoding it."""
    pos, size = 2, None
    while True:
        marker = at(pos, 2)
        if marker[0] != 0xFF:
            raise _Bad(f"no JPEG marker at byte {pos}")
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            pos += 1
        elif kind in _STANDALONE:
            pos += 2
        elif kind == 0xD9 or (kind == 0xDA and size is None):
            raise _Bad("no frame header (SOF) before the image data")
        elif kind == 0xDA:
            return size
        else:
            if kind in _SOF:
                height, width = struct.unpack(">HH", at(pos + 5, 4))
                size = width, height
            pos += 2 + struct.unpack(">H", at(pos + 2, 2))[0]


def _png(at) -> tuple[int, int]:
    if at(12, 4) != b"IHDR":
        raise _Bad("no IHDR chunk first")
    return struct.unpack(">II", at(16, 8))


def _webp(at) -> tuple[int, int]:
    chunk = at(12, 4)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", at(26, 4))
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        b = at(21, 4)
        width = 1 + (b[0] | (b[1] & 0x3F) << 8)
        height = 1 + (b[1] >> 6 | b[2] << 2 | (b[3] & 0x0F) << 10)
        return width, height
    if chunk == b"VP8X":
        b = at(24, 6)
        return 1 + int.from_bytes(b[:3], "little"), 1 + int.from_bytes(b[3:], "little")
    raise _Bad(f"unknown WebP chunk {chunk!r}")


def _bmp(at) -> tuple[int, int]:
    if struct.unpack("<I", at(14, 4))[0] == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", at(18, 4))
    width, height = struct.unpack("<ii", at(18, 8))
    return width, abs(height)  # a negative height means rows stored top-down


def _complete(kind: str, head: bytes, tail: bytes, size: int) -> bool:
    if kind == "JPEG":
        return b"\xff\xd9" in tail  # FFD9 cannot occur inside entropy-coded data
    if kind == "PNG":
        return b"\x00\x00\x00\x00IEND" in tail
    if kind == "GIF":
        return tail.rstrip(b"\x00").endswith(b";")
    if kind == "BMP":
        return size >= struct.unpack("<I", head[2:6])[0]
    return size >= 8 + struct.unpack("<I", head[4:8])[0]  # WebP: RIFF size


def _kind(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    return None


_SIZE = {
    "JPEG": _jpeg,
    "PNG": _png,
    "GIF": lambda at: struct.unpack("<HH", at(6, 4)),
    "BMP": _bmp,
    "WebP": _webp,
}


def image_size(
    f: io.BufferedIOBase,
    expected: str = IMAGE_KINDS,
    kinds: Sequence[str] = tuple(_SIZE),
    decodes: Callable[[io.BufferedIOBase], tuple[int, int] | None] | None = None,
) -> tuple[int, int]:
    """`(width, height)` of the image in the open file `f`, read from its header.

    Args:
        f: a seekable binary file.
        expected: what the file should be, for the error message.
        kinds: the formats allowed.
        decodes: called on a file whose header or end looks wrong; returns the size when the
            file decodes after all (then it is accepted), None when it does not.

    Raises:
        DataError: the file is empty, not one of `kinds`, or truncated/corrupt (the message
            says which, without the file name).
    """
    size = f.seek(0, io.SEEK_END)
    if size == 0:
        raise DataError(f"empty file (expected {expected})")

    def at(offset: int, n: int) -> bytes:
        f.seek(offset)
        data = f.read(n)
        if len(data) < n:
            raise _Cut
        return data

    head = at(0, min(size, 32))
    kind = _kind(head)
    if kind not in kinds:
        raise DataError(f"not {expected} (the file starts with {head[:8]!r})")
    try:
        width, height = _SIZE[kind](at)
        if not (width and height):
            problem = "no size in its header"  # e.g. a JPEG whose height comes later (DNL)
        elif not _complete(kind, head, at(max(0, size - _TAIL), min(size, _TAIL)), size):
            problem = f"no {_END[kind]}"
        else:
            problem = None
    except _Cut:  # no decoder reads a file without its header: no need to try
        raise DataError(
            f"truncated {kind} (the file ends inside its header; expected a complete {kind} file)"
        ) from None
    except _Bad as e:
        problem = e.args[0]
    except struct.error:
        problem = "unreadable header"
    if problem is None:
        return width, height
    decoded = decodes(f) if decodes is not None else None
    if decoded is None:
        raise DataError(f"truncated or corrupt {kind} ({problem}; expected a complete {kind} file)")
    return decoded


def tf_decodes(f: io.BufferedIOBase) -> tuple[int, int] | None:
    """`(width, height)` when TensorFlow's decoder (the pipeline's) reads the file, else None."""
    import tensorflow as tf

    from keras_seg.console import native_stderr_captured

    f.seek(0)
    try:
        with native_stderr_captured():  # libjpeg's "Premature end of JPEG data" line
            shape = tf.io.decode_image(f.read(), expand_animations=False).shape
    except tf.errors.OpError:
        return None
    return int(shape[1]), int(shape[0])


def sample_problem(
    image_store: Store,
    image: str,
    mask_store: Store,
    mask: str,
    decodes: Callable[[io.BufferedIOBase], tuple[int, int] | None] | None = tf_decodes,
) -> str | None:
    """What is wrong with one `(image, mask)` sample's files, or None when the headers agree.

    Checks that both files can be read, are complete images of the expected formats
    (masks: PNG; SBD `.mat` masks are only checked for existence) and have the same size.
    """
    sizes = []
    for store, name, expected, kinds in (
        (image_store, image, IMAGE_KINDS, tuple(_SIZE)),
        (mask_store, mask, "a PNG mask", ("PNG",)),
    ):
        if name.endswith(".mat"):
            break
        where = store.describe(name)
        try:
            with store.open(name) as f:
                sizes.append(image_size(f, expected, kinds, decodes))
        except DataError as e:
            return f"{where}: {e}"
        except FileNotFoundError:
            return f"{where} does not exist (expected {expected})"
        except OSError as e:
            return f"{where}: cannot read the file ({e.strerror or e})"
    if len(sizes) == 2 and sizes[0] != sizes[1]:
        where = image_store.describe(image), mask_store.describe(mask)
        return "".join(map(str, size_mismatch(where[0], *sizes[0], where[1], *sizes[1])))
    return None


def check_samples(name: str, samples: Sequence, on_error: str = "raise") -> list:
    """The samples whose files pass `sample_problem`.

    Raises:
        DataError: on the first bad sample (`on_error="raise"`), or when none is left.

    With `on_error="skip"`, bad samples are dropped with one warning that counts them.
    """
    good, problems = [], []
    for sample in samples:
        problem = sample_problem(*sample)
        if problem is None:
            good.append(sample)
        elif on_error == "raise":
            raise DataError(f"{name}: {problem}")
        else:
            problems.append(problem)
    warn_skipped(name, problems, "whose files failed the check")
    if not good:
        raise DataError(f"{name}: every sample failed the file check, e.g. {problems[0]}")
    return good
