"""Shared-file-system connector.

Every object is one file in ``store_dir``. Writes go to a temporary file in the
same directory and are then renamed into place: ``rename`` is atomic on POSIX
file systems (Lustre, GPFS and NFS included, within one directory), so a reader
on another node sees either nothing or the whole object, never a torn write,
however many writers there are.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from warpstore.exceptions import ConnectorError, StoreFullError
from warpstore.serialize import BytesLike

__all__ = ["FileConnector", "FileKey"]


class FileKey(NamedTuple):
    """Key of an object held by a :class:`FileConnector`: its file name."""

    filename: str


class FileConnector:
    """Stores objects as files under ``store_dir`` (local or shared)."""

    def __init__(self, store_dir: str | os.PathLike[str], *, clear: bool = False) -> None:
        self.store_dir = os.path.abspath(os.fspath(store_dir))
        self.clear = clear
        try:
            os.makedirs(self.store_dir, exist_ok=True)
        except OSError as e:
            raise ConnectorError(
                f"cannot create store directory {self.store_dir} on {socket.gethostname()}: {e}"
            ) from e

    def __repr__(self) -> str:
        return f"FileConnector(store_dir={self.store_dir!r})"

    def _path(self, key: FileKey) -> str:
        name = key.filename
        if not name or "/" in name or name in {".", ".."}:
            raise ValueError(f"invalid FileKey filename {name!r}")
        return os.path.join(self.store_dir, name)

    def close(self, clear: bool | None = None) -> None:
        """Remove the directory if this connector was made with ``clear=True``."""
        if self.clear if clear is None else clear:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def config(self) -> dict[str, Any]:
        return {"store_dir": self.store_dir, "clear": self.clear}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FileConnector:
        return cls(**config)

    def evict(self, key: FileKey) -> None:
        path = self._path(key)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:  # a read-only directory, say: one line naming the file
            raise ConnectorError(
                f"cannot evict {path} on {socket.gethostname()}: {e.strerror or e} "
                f"(the directory {os.path.dirname(path)} must be writable to remove objects)"
            ) from e

    def exists(self, key: FileKey) -> bool:
        return os.path.exists(self._path(key))

    def get(self, key: FileKey) -> BytesLike | None:
        path = self._path(key)
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                # readinto a bytearray: one copy, and the result is writable so
                # numpy arrays come back as zero-copy views of it.
                buf = bytearray(size)
                view = memoryview(buf)
                got = 0
                while got < size:
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConnectorError(f"cannot read {path} on {socket.gethostname()}: {e}") from e
        if got != size:
            raise ConnectorError(f"short read of {path}: {got} of {size} bytes")
        return buf

    def get_batch(self, keys: Sequence[FileKey]) -> list[BytesLike | None]:
        return [self.get(k) for k in keys]

    def new_key(self, obj: BytesLike | None = None) -> FileKey:
        return FileKey(uuid.uuid4().hex)

    def put(self, obj: BytesLike) -> FileKey:
        key = self.new_key()
        self.set(key, obj)
        return key

    def put_batch(self, objs: Sequence[BytesLike]) -> list[FileKey]:
        return [self.put(o) for o in objs]

    def set(self, key: FileKey, obj: BytesLike) -> None:
        path = self._path(key)
        tmp = os.path.join(
            self.store_dir, f".{key.filename}.{socket.gethostname()}.{os.getpid()}.tmp"
        )
        try:
            with open(tmp, "wb", buffering=0) as f:
                view = memoryview(obj).cast("B")
                written = 0
                while written < len(view):
                    written += f.write(view[written:]) or 0
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            size = memoryview(obj).nbytes
            where = f"{path} on {socket.gethostname()}"
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFullError(
                    f"no space left to write {size} bytes to {where}: {e.strerror}"
                ) from e
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ConnectorError(
                    f"cannot write {where}: the store directory is read-only or not "
                    f"writable by this user ({e.strerror})"
                ) from e
            raise ConnectorError(f"cannot write {size} bytes to {where}: {e}") from e
