"""Uniform file access below a root that is a directory, an uncompressed/compressed tar, or a zip.

The readers list and open files through a `Store`, so the same reader code works on an
extracted data set and on the official archive. Directory files are read by TensorFlow
(`tf.io.read_file`, in the graph); archive members are read in Python through
`tf.numpy_function`. Python's `tarfile`/`zipfile` have no TensorFlow equivalent, hence this
small module.
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
import threading
import zipfile
from pathlib import Path

from keras_seg.data.errors import DataError


class Store:
    """Files below one root, addressed by '/'-separated names relative to it."""

    #: True when `path(name)` is a real file that `tf.io.read_file` can open.
    is_directory = False

    def __init__(self, location: str | os.PathLike, prefix: str = ""):
        self.location = str(location)
        self.prefix = prefix.strip("/")

    def _full(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def names(self, folder: str) -> list[str]:
        """Sorted names of the files directly or indirectly below `folder`."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        """Whether the file `name` exists."""
        raise NotImplementedError

    def isdir(self, name: str) -> bool:
        """Whether `name` is a folder holding at least one file."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        """The bytes of file `name`."""
        raise NotImplementedError

    def open(self, name: str) -> io.BufferedIOBase:
        """File `name` opened for binary reading (seekable)."""
        return io.BytesIO(self.read(name))

    def describe(self, name: str) -> str:
        """Human-readable location of `name`, for error messages."""
        return f"{self.location}::{self._full(name)}"

    def sub(self, prefix: str) -> Store:
        """The same storage rooted at `prefix` below this root."""
        raise NotImplementedError


class DirStore(Store):
    """A plain directory."""

    is_directory = True

    def path(self, name: str) -> str:
        return os.path.join(self.location, *self._full(name).split("/"))

    def names(self, folder: str) -> list[str]:
        root = Path(self.path(folder))
        if not root.is_dir():
            return []
        base = Path(self.path(""))
        return sorted(p.relative_to(base).as_posix() for p in root.rglob("*") if p.is_file())

    def isdir(self, name: str) -> bool:
        return os.path.isdir(self.path(name))

    def exists(self, name: str) -> bool:
        return os.path.isfile(self.path(name))

    def read(self, name: str) -> bytes:
        return Path(self.path(name)).read_bytes()

    def open(self, name: str) -> io.BufferedIOBase:
        return open(self.path(name), "rb")  # noqa: SIM115 - the caller closes it

    def describe(self, name: str) -> str:
        return self.path(name)

    def sub(self, prefix: str) -> DirStore:
        return DirStore(self.location, self._full(prefix))


_SCANS: dict[tuple, dict] = {}


class _ArchiveStore(Store):
    """Shared listing logic: the archive's member names are read once and kept."""

    def __init__(self, location, prefix="", members=None):
        super().__init__(location, prefix)
        if members is None:
            # Listing a large archive reads every member header; keep it per file version.
            stat = os.stat(self.location)
            key = (type(self).__name__, os.path.abspath(self.location), stat.st_mtime, stat.st_size)
            if key not in _SCANS:
                _SCANS[key] = self._scan()
            members = _SCANS[key]
        self._members = members

    def _scan(self) -> dict:
        raise NotImplementedError

    def names(self, folder: str) -> list[str]:
        start = self._full(folder).rstrip("/") + "/"
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(m[cut:] for m in self._members if m.startswith(start))

    def isdir(self, name: str) -> bool:
        start = self._full(name).rstrip("/") + "/"
        return any(m.startswith(start) for m in self._members)

    def exists(self, name: str) -> bool:
        return self._full(name) in self._members

    def sub(self, prefix: str):
        return type(self)(self.location, self._full(prefix), self._members)


class TarStore(_ArchiveStore):
    """A tar file. Uncompressed tars (the VOC release) are read with `os.pread` at the
    member's offset, which is thread-safe and needs no extraction."""

    _local = threading.local()

    def _scan(self) -> dict:
        with tarfile.open(self.location) as tar:
            return {_clean(m.name): (m.offset_data, m.size) for m in tar if m.isfile()}

    def read(self, name: str) -> bytes:
        offset, size = self._members[self._full(name)]
        if _compressed(self.location):
            # Compressed tars have no random access: fall back to tarfile (slow; extract
            # the archive for training).
            handles = self._local.__dict__.setdefault("handles", {})
            if self.location not in handles:
                tar = tarfile.open(self.location)
                handles[self.location] = (tar, {_clean(m.name): m for m in tar.getmembers()})
            tar, members = handles[self.location]
            return tar.extractfile(members[self._full(name)]).read()
        with open(self.location, "rb") as f:
            data = os.pread(f.fileno(), size, offset)
        if len(data) != size:
            raise OSError(f"{self.describe(name)}: archive truncated, read {len(data)} of {size}")
        return data


class ZipStore(_ArchiveStore):
    """A zip file (the Cityscapes release); one open handle per reading thread."""

    _local = threading.local()

    def _scan(self) -> dict:
        with zipfile.ZipFile(self.location) as z:
            return {n: None for n in z.namelist() if not n.endswith("/")}

    def read(self, name: str) -> bytes:
        handles = self._local.__dict__.setdefault("handles", {})
        if self.location not in handles:
            handles[self.location] = zipfile.ZipFile(self.location)
        return handles[self.location].read(self._full(name))


def _clean(name: str) -> str:
    return name[2:] if name.startswith("./") else name


@functools.cache
def _compressed(path: str) -> bool:
    with open(path, "rb") as f:
        magic = f.read(6)
    return magic.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def open_store(location: str | os.PathLike) -> Store:
    """A `Store` for a directory, a `.tar`/`.tar.gz`/`.tgz` file or a `.zip` file."""
    location = os.fspath(location)
    if os.path.isdir(location):
        return DirStore(location)
    if not os.path.exists(location):
        raise DataError(f"{location}: no such directory or archive (expected the data set)")
    if zipfile.is_zipfile(location):
        return ZipStore(location)
    if tarfile.is_tarfile(location):
        return TarStore(location)
    raise DataError(f"{location}: expected a directory, a tar or a zip archive")
