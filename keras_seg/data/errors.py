"""`DataError`: bad data, told in one line that names the file and what was expected.

Problems found in Python (a missing file, a truncated image, image and mask of different
sizes) raise `DataError` directly. Problems found inside a running `tf.data` pipeline
(mask values outside the classes, a file that only fails when decoded) can only surface as
a TensorFlow runtime error, whose text buries the message in graph details; those messages
start with `MARKER`, and `data_error_from` recovers the one line:

    try:
        model.fit(keras_seg.data.pipeline(keras_seg.data.load(...), ...))
    except Exception as e:
        if (bad := keras_seg.data.data_error_from(e)) is None:
            raise
        sys.exit(f"error: {bad}")
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

#: Start of every data error message raised from inside a tf.data pipeline.
MARKER = "keras_seg.DataError: "
_IN_TEXT = re.compile(re.escape(MARKER) + r"(.*)")


class DataError(ValueError):
    """A data set file is missing, unreadable, corrupt or inconsistent.

    `str(error)` is one line: the data set, the file, and what was expected, e.g.
    `folder: d/masks/a.png is 64x48 but d/images/a.jpg is 64x64 (image and mask must have
    the same size)`.
    """


def size_mismatch(image, width, height, mask, mask_width, mask_height) -> list:
    """Pieces of the message for an image and mask of different sizes.

    Pieces are strings and numbers, or string and integer tensors (`"".join(map(str, ...))`
    in Python, `tf.strings.join` in a graph), so both say the same.
    """
    return [mask, " is ", mask_width, "x", mask_height, " but ", image, " is ", width, "x",
            height, " (image and mask must have the same size)"]  # fmt: skip


def bad_values(name: str, mask, count, value, allowed: str) -> list:
    """Pieces of the message for mask values outside the classes (see `size_mismatch`)."""
    return [mask, ": ", count, f" pixels hold values that are not classes of {name} (e.g. ",
            value, f"); expected raw values {allowed}"]  # fmt: skip


def tagged(message: str) -> str:
    """`message` as a pipeline error text that `data_error_from` recognises."""
    return MARKER + " ".join(message.split("\n"))


def data_error_from(exc: BaseException) -> DataError | None:
    """The `DataError` that `exc` is, wraps or reports; None when it has nothing to do with data.

    Recognises a `DataError` (also as the cause or context of another exception) and the
    TensorFlow runtime error (`tf.errors.OpError`) of a pipeline that met bad data: the
    returned error's message is the data message alone, without graph details.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DataError):
            return exc
        found = _IN_TEXT.search(str(exc))
        if found:
            line = found.group(1).rstrip()
            # tf.debugging.Assert prints its data in brackets: "assertion failed: [...]".
            if line.endswith("]") and line.count("]") > line.count("["):
                line = line[:-1]
            error = DataError(line)
            error.__cause__ = exc
            return error
        exc = exc.__cause__ or exc.__context__
    return None


def warn_skipped(name: str, skipped: Sequence[str], what: str) -> None:
    """One warning that counts the samples dropped before decoding (e.g. a missing mask)."""
    if skipped:
        shown = "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"{name}: skipped {len(skipped)} samples {what}: {shown}", stacklevel=3)
