"""Where the store's objects live: a flat namespace of named, immutable byte strings.

The interface is what an object store (S3, SeaweedFS's S3 gateway) offers, so that a
remote backend can be added without touching the callers:

    put(key, data, exclusive=False)   whole-object write, atomic: a reader sees the old
                                      object, or nothing, or all of the new one, never a part.
                                      exclusive: fail with AlreadyExists if the key exists
                                      (S3: PutObject with If-None-Match: *)
    get(key) -> bytes                 NotFound if absent
    size(key) -> int | None           None if absent (S3: HeadObject)
    owner(key) -> int | None          the uid owning it (local); None where objects have no
                                      owner (S3: the bucket's access control is the check)
    delete(key) -> bool               whether it was there
    list(prefix) -> (key, size)...    every key starting with prefix (S3: ListObjectsV2)
    flush()                           every put that returned so far is durable (local:
                                      syncfs; S3: nothing, a PUT is durable once answered)
    lock(name, shared=...)            a reader-writer lock shared by every process using the
                                      store (local: flock; S3: lock objects with a lease)
    cleanup_incomplete()              remove leftovers of writers that died (local: temp
                                      files; S3: abandoned multipart uploads)

Keys are "/"-separated components of letters, digits, "_", "-" and "." that never start
with "." — no empty components, no "..", nothing absolute. Callers never rename, link or
append: an object is written once, read, and deleted.
"""
from __future__ import annotations

import abc
import contextlib
import ctypes
import fcntl
import os
import re
import secrets
import threading
import time
from typing import Iterator

from .errors import AlreadyExists, InvalidName, LockTimeout, NotFound

_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}\Z")
_MAX_KEY = 1024


def check_key(key: str) -> str:
    """`key` if it is a valid object key, else InvalidName."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise InvalidName(f"invalid object key {key!r}")
    for part in key.split("/"):
        if not _COMPONENT.match(part):
            raise InvalidName(f"invalid object key {key!r}")
    return key


class Lock(abc.ABC):
    """A held lock; release it with `release` or by leaving its `with` block."""

    @abc.abstractmethod
    def release(self) -> None: ...

    def held(self) -> bool:
        """Whether the lock is still ours. A flock is until released; a lease (remote
        backends) can be lost if it could not be renewed in time."""
        return True

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Backend(abc.ABC):
    """Named immutable objects plus a lock. See the module docstring for the contract."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            exclusive: bool = False) -> None: ...

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def size(self, key: str) -> int | None: ...

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def owner(self, key: str) -> int | None:
        """The uid owning an object (NotFound if there is none), where objects have owners;
        None where they have not, as in a bucket, whose access control is the bucket's."""
        return None

    @abc.abstractmethod
    def delete(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]: ...

    @abc.abstractmethod
    def flush(self) -> None: ...

    @abc.abstractmethod
    def lock(self, name: str, *, shared: bool = False, timeout: float | None = None) -> Lock:
        """Take the named lock, shared (many holders) or exclusive (one holder, no shared
        ones). Waits at most `timeout` seconds (None: forever), then raises LockTimeout.
        A holder that dies releases its locks (local) or lets them expire (remote)."""

    @abc.abstractmethod
    def cleanup_incomplete(self) -> None: ...

    def describe(self) -> str:
        return type(self).__name__


_libc = ctypes.CDLL(None, use_errno=True)


class _FlockLock(Lock):
    def __init__(self, fd: int):
        self._fd: int | None = fd
        self._mutex = threading.Lock()

    def release(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)  # closing the only descriptor drops the flock
                self._fd = None

    def __del__(self) -> None:
        self.release()


class LocalBackend(Backend):
    """Objects as files under `root` (key "a/b" is ROOT/a/b). A put writes a temporary file
    in ROOT/.tmp and renames it into place; `flush` is one syncfs. Locks are flock()s on
    files in ROOT/.locks, so they are released when their holder dies."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self._tmp = os.path.join(self.root, ".tmp")
        self._locks = os.path.join(self.root, ".locks")
        os.makedirs(self._tmp, mode=0o700, exist_ok=True)
        os.makedirs(self._locks, mode=0o700, exist_ok=True)
        self._dirs: set[str] = set()  # parent directories known to exist

    def describe(self) -> str:
        return f"local:{self.root}"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, check_key(key))

    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            exclusive: bool = False) -> None:
        path = self._path(key)
        parent = os.path.dirname(path)
        if parent not in self._dirs:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            self._dirs.add(parent)
        tmp = os.path.join(self._tmp, f"{os.getpid()}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        try:
            for attempt in range(2):
                try:
                    if exclusive:
                        # link() fails if the name exists: create-if-absent in one step
                        os.link(tmp, path)
                        os.unlink(tmp)
                    else:
                        os.replace(tmp, path)
                    return
                except FileNotFoundError:
                    if attempt:  # parent removed under us: recreate it once
                        raise
                    self._dirs.discard(parent)
                    os.makedirs(parent, mode=0o700, exist_ok=True)
                except FileExistsError:
                    raise AlreadyExists(f"object {key} already exists") from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb", buffering=0) as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        if not data:  # see size(): an empty file is no object
            raise NotFound(f"object {key} not found")
        return data

    def size(self, key: str) -> int | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        # an empty file can only be a rename whose data a crash lost: treat it as absent
        return st.st_size or None

    def owner(self, key: str) -> int | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            st = None
        if st is None or not st.st_size:  # (see size())
            raise NotFound(f"object {key} not found")
        return st.st_uid

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self._path(key))
            return True
        except FileNotFoundError:
            return False

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        # walk only the directory the prefix names (or its parent), then filter by prefix
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if head:
            check_key(head)
        start = os.path.join(self.root, head) if head else self.root
        stack = [(start, head)]
        while stack:
            path, rel = stack.pop()
            try:
                entries = list(os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                key = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append((entry.path, key))
                elif key.startswith(prefix):
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue  # deleted while we listed
                    yield key, size  # (empty files too, so that gc can remove them)

    def flush(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs: {os.strerror(err)}", self.root)
        finally:
            os.close(fd)

    def lock(self, name: str, *, shared: bool = False, timeout: float | None = None) -> Lock:
        if "/" in name:
            raise InvalidName(f"invalid lock name {name!r}")
        path = os.path.join(self._locks, check_key(name))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            if timeout is None:
                fcntl.flock(fd, op)
            else:
                deadline = time.monotonic() + timeout
                delay = 0.001
                while True:
                    try:
                        fcntl.flock(fd, op | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise LockTimeout(f"store lock {name!r} is busy (waited "
                                              f"{timeout:g} s)") from None
                        time.sleep(delay)
                        delay = min(delay * 2, 0.05)
        except BaseException:
            os.close(fd)
            raise
        return _FlockLock(fd)

    def cleanup_incomplete(self, max_age: float = 86400.0) -> None:
        """Remove temporary files of writers that are gone (dead pid, or older than max_age)."""
        now = time.time()
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return
        for entry in entries:
            pid_text = entry.name.split(".", 1)[0]
            try:
                age = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue
            alive = False
            if pid_text.isdigit():
                try:
                    os.kill(int(pid_text), 0)
                    alive = True
                except ProcessLookupError:
                    pass
                except PermissionError:
                    alive = True
            if not alive or age > max_age:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
