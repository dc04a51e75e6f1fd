"""What a user sees in the terminal: TensorFlow's native start-up chatter kept out of it.

TensorFlow's C++ libraries write lines such as "oneDNN custom operations are on" and
"Could not find cuda drivers" straight to file descriptor 2 while they load, before absl's
logging is initialised, so `TF_CPP_MIN_LOG_LEVEL` cannot silence them (TF 2.21). We route
descriptor 2 to a temporary file while TensorFlow loads and initialises its devices, and
keep the text: `startup_messages()` returns it (`keras-seg --verbose` prints it). Set
`TF_CPP_MIN_LOG_LEVEL=0` to let it through untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

_captured: list[str] = []


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Send what native code writes to descriptor 2 into `startup_messages()` meanwhile.

    Python's own `sys.stderr` is flushed first and keeps working afterwards; what Python
    code writes to it inside the block is captured too.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real descriptor (e.g. a notebook)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            _captured.append(tmp.read().decode("utf-8", "replace"))


def startup_messages() -> str:
    """What native code wrote to stderr while captured (TensorFlow's start-up lines)."""
    return "".join(_captured)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and initialise its devices with the start-up lines captured."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    with native_stderr_captured():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing prints at the first device query
