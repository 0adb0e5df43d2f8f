"""Content-addressed ciphertext storage.

The database only holds a blob's SHA-256; the bytes live in a :class:`BlobStore`.
:class:`LocalBlobStore` writes to a temp file, fsyncs it and renames it into place,
so a crash never leaves a half-written blob under its final name, and a hash always
names exactly one content. For a scale-out deployment the same interface maps 1:1 onto
an S3-compatible object store (``put`` = PutObject with key ``sha256/<hex>``, ``open`` =
GetObject streaming body, ``delete`` = DeleteObject); see docs/cloud.md.
"""

from __future__ import annotations

import abc
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


class BlobNotFound(KeyError):
    """No blob with this hash is stored."""


class BlobStore(abc.ABC):
    """Minimal interface the service needs from a ciphertext store."""

    @abc.abstractmethod
    def put(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data`` durably and return its SHA-256 hex digest (idempotent). ``digest``:
        the caller already hashed ``data`` (while it streamed in); it is not hashed again."""

    @abc.abstractmethod
    def get(self, digest: str) -> bytes:
        """Return the whole blob (for the aggregation worker: deltas are a few MB)."""

    @abc.abstractmethod
    def iter_chunks(self, digest: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Stream a blob to an HTTP client without loading it into memory."""

    @abc.abstractmethod
    def size(self, digest: str) -> int:
        """Size in bytes, raising :class:`BlobNotFound` if absent."""

    @abc.abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abc.abstractmethod
    def age_s(self, digest: str) -> float:
        """Seconds since the blob was written (LastModified on an object store); orphan
        collection in a shared store spares young blobs that may not be committed yet."""

    @abc.abstractmethod
    def delete(self, digest: str) -> None:
        """Remove a blob that no row references any more (missing is not an error)."""

    @abc.abstractmethod
    def digests(self) -> Iterator[str]:
        """Every stored digest (for orphan collection: ListObjectsV2 on an object store)."""


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise BlobNotFound(digest)
    return digest


class LocalBlobStore(BlobStore):
    """Blobs under ``root/ab/cdef...`` (two-level fan-out keeps directories small)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(exist_ok=True)
        # Temp files of a crashed write are garbage: their hash was never committed anywhere.
        for leftover in self._tmp.iterdir():
            try:
                leftover.unlink()
            except OSError:
                pass

    def path(self, digest: str) -> Path:
        digest = _check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def put(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists():
            return digest
        final.parent.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix=digest[:8] + ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            raise
        # fsync the directory so the rename itself survives a power loss.
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def iter_chunks(self, digest: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        fh = self.open(digest)

        def _gen() -> Iterator[bytes]:
            with fh:
                while chunk := fh.read(chunk_size):
                    yield chunk

        return _gen()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def exists(self, digest: str) -> bool:
        try:
            return self.path(digest).is_file()
        except BlobNotFound:
            return False

    def age_s(self, digest: str) -> float:
        import time

        try:
            return time.time() - self.path(digest).stat().st_mtime
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def delete(self, digest: str) -> None:
        try:
            self.path(digest).unlink()
        except (FileNotFoundError, BlobNotFound):
            pass

    def digests(self) -> Iterator[str]:
        for sub in self.root.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for f in sub.iterdir():
                digest = sub.name + f.name
                if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                    yield digest
