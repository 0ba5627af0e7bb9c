"""The image: one directory, one manifest, a few blobs. Read and written only here.

Layout (see docs/image-format.md):
    DIR/manifest.json   schema version, host facts, processes, blob table with sizes and
                        xxh3-128 checksums, and a checksum over the manifest itself
    DIR/<blob>          raw bytes (memory pages, unlinked files' contents, pipe buffers)

Writers build the directory under a temporary sibling name and rename it into place only
once every byte is on disk, so DIR either holds a complete image or does not exist.
Readers verify format, version, every blob's size and checksum before anyone restores.
"""
from __future__ import annotations

import base64
import ctypes
import errno
import fcntl
import json
import logging
import mmap
import os
import shutil
import stat
import tempfile
import time
from typing import Any, Protocol

import xxhash

from .errors import CkptError, ImageError
from .libc import libc
from .version import IMAGE_FORMAT as FORMAT, IMAGE_VERSION as VERSION

MANIFEST = "manifest.json"
PARTIAL = ".partial"  # suffix of an image directory being written
MAX_MANIFEST = 1 << 30  # bytes: a manifest is read whole; bigger is not one of ours
_CHUNK = 8 << 20
_WRITEBACK = 32 << 20  # start writeback of a blob being filled every this many bytes
_SYNC_FILE_RANGE_WRITE = 2
log = logging.getLogger(__name__)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """The manifest's own checksum (docs/image-format.md, "Checksums")."""
    body = {k: v for k, v in manifest.items() if k != "manifest_xxh3_128"}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True).encode())


def _hash_file(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _hash_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _hash_fd(fd: int, size: int) -> str:
    """xxh3-128 of the first `size` bytes of a file, hashed straight from a read-only
    mapping of its page cache (no copy into a buffer: about twice as fast as reading it)."""
    digest = xxhash.xxh3_128()
    mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None
    if mapping is not None:
        mapping.madvise(mmap.MADV_SEQUENTIAL)  # bigger readahead when not cached
        view = memoryview(mapping)
        for offset in range(0, size, _CHUNK):
            digest.update(view[offset:offset + _CHUNK])
        view.release()
        mapping.close()
    return digest.hexdigest()


class BlobStream(Protocol):
    """Where one blob's bytes go instead of a file (see BlobSink)."""

    size: int  # bytes written so far

    def write(self, data: bytes | memoryview) -> None:
        """The blob's next bytes (copied before it returns: the caller reuses its buffer).
        Raises if the destination failed; the dump then fails."""

    def drain(self) -> None:
        """Wait until the destination has caught up with what was written so far (before a
        freeze: writes while frozen then need not wait for it)."""

    def close(self) -> None:
        """Every byte is written: wait until the destination has taken them all."""

    def abort(self) -> None:
        """The blob is not wanted after all: drop it."""


class BlobSink(Protocol):
    """A destination for an image's blobs other than files in its directory, e.g. a
    snapshot store chunking them as they are produced. The writer still writes the
    manifest (with every blob's size and checksum) into the directory; blobs given to a
    sink are absent from it, and whoever passed the sink takes them from there."""

    def open(self, name: str) -> BlobStream: ...


class MappedBlob:
    """A new blob of known size, filled in place through a shared mapping of it (no copy
    through a buffer; `address` is where its first byte is mapped).

    Call `filled(n)` as soon as bytes [.., n) are final: they are checksummed right away,
    while still in the CPU cache (no second pass over the blob), and their writeback starts,
    so that the fsync in `commit` finds little left to do. The blob is registered on a clean
    exit of the `with` block, once every byte has been declared filled. A blob going to the
    writer's sink is filled the same way, in a file that has no name, and its bytes are
    handed on and their room given back as they are declared filled."""

    def __init__(self, writer: "ImageWriter", name: str, size: int):
        self._writer = writer
        self.name = name
        self.size = size
        self.done = 0  # bytes [0, done) are final and checksummed
        self._started = 0  # bytes handed to writeback so far, or to the sink and given back
        self._digest = xxhash.xxh3_128()
        self._stream = writer.stream_blob(name)
        path = os.path.join(writer.tmp, name)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        if self._stream is not None:
            os.unlink(path)
        try:
            if size:
                os.posix_fallocate(self._fd, 0, size)  # ENOSPC now, not SIGBUS later
            self.mapping = mmap.mmap(self._fd, size) if size else mmap.mmap(-1, 1)
        except BaseException:
            os.close(self._fd)
            raise
        self._anchor: Any = ctypes.c_char.from_buffer(self.mapping)
        self.address = ctypes.addressof(self._anchor)

    def filled(self, upto: int) -> None:
        view = memoryview(self.mapping)
        self._digest.update(view[self.done:upto])
        if self._stream is not None:
            self._stream.write(view[self.done:upto])
        view.release()
        self.done = upto
        if self._stream is not None:  # handed on: free the whole pages below `upto`
            end = upto - upto % mmap.PAGESIZE
            if end > self._started:
                try:
                    self.mapping.madvise(mmap.MADV_REMOVE, self._started, end - self._started)
                except OSError:  # a filesystem that cannot punch holes: freed at the end
                    pass
                self._started = end
            return
        if not self._writer.durable:
            return
        if upto - self._started >= _WRITEBACK or upto == self.size:
            libc.sync_file_range(self._fd, self._started, upto - self._started,
                             _SYNC_FILE_RANGE_WRITE)  # only a hint: errors surface at fsync
            self._started = upto

    def truncate(self) -> None:
        """End the blob where the bytes filled so far end: fewer were kept than reserved
        (all-zero memory pages are left out)."""
        os.ftruncate(self._fd, self.done)
        self.size = self.done
        self.filled(self.done)  # starts writeback of the rest

    def __enter__(self) -> "MappedBlob":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._anchor = None
        try:
            if exc_type is None:
                if self.done != self.size:
                    raise CkptError(f"blob {self.name}: {self.done} of {self.size} bytes filled")
                self._writer.blobs[self.name] = {"size": self.size,
                                                 "xxh3_128": self._digest.hexdigest()}
        finally:
            try:
                self.mapping.close()  # munmap; commit's fsync writes what is still dirty
            except BufferError:
                pass  # an exception's traceback still holds a view: unmapped when collected
            os.close(self._fd)


class ImageWriter:
    """Builds an image in a temporary sibling directory; `commit` makes it appear atomically,
    on disk first unless not `durable` (an image to be read once right away and removed).
    With a `sink`, blobs go there rather than into files (blobs a writer such as
    fileid.py puts at `blob_path` itself excepted)."""

    def __init__(self, path: str, durable: bool = True, sink: BlobSink | None = None):
        self.path = os.path.abspath(path)
        self.durable = durable
        self.sink = sink
        self._streams: dict[str, BlobStream] = {}
        if os.path.lexists(self.path):
            raise CkptError(f"{path} already exists; choose a new image directory")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise CkptError(f"{parent} is not a directory")
        _remove_stale_partials(parent)
        self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.", suffix=PARTIAL,
                                    dir=parent)
        # Held until commit or abort: a partial directory nobody holds locked is stale.
        self._lock = os.open(self.tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.blobs: dict[str, dict[str, Any]] = {}
        self._adopted: list[str] = []
        self._checksums: dict[str, str] = {}  # of adopted blobs, taken as they were written

    def stream_blob(self, name: str) -> BlobStream | None:
        """Where to write blob `name` if it goes to the sink (None: into its file). The
        blob is then registered with `adopt_blob`, or by the writer that asked."""
        if self.sink is None:
            return None
        if name in self._streams:  # written again: replaces it, as a file would be
            self._streams.pop(name).abort()
        self._streams[name] = self.sink.open(name)
        return self._streams[name]

    def add_blob(self, name: str, data: bytes | memoryview) -> str:
        stream = self.stream_blob(name)
        if stream is not None:
            stream.write(data)
        else:
            with open(os.path.join(self.tmp, name), "wb") as f:
                f.write(data)
        self.blobs[name] = {"size": len(data), "xxh3_128": xxhash.xxh3_128_hexdigest(data)}
        return name

    def fill_blob(self, name: str, size: int) -> MappedBlob:
        """A new blob of `size` bytes filled in place: `with writer.fill_blob(n, size) as b`."""
        return MappedBlob(self, name, size)

    def blob_path(self, name: str) -> str:
        """Where to write a blob directly (see `adopt_blob`); "" gives the directory."""
        return os.path.join(self.tmp, name) if name else self.tmp

    def replace_blob(self, name: str, data: bytes) -> None:
        """Rewrite a blob already in the image (an incremental image keeps fewer pages)."""
        self.blobs.pop(name, None)
        if name in self._adopted:
            self._adopted.remove(name)
        self._checksums.pop(name, None)
        os.unlink(self.blob_path(name))
        self.add_blob(name, data)

    def adopt_blob(self, name: str) -> None:
        """Register a blob written directly at `blob_path(name)`; it is checksummed at
        commit, so that work can happen after the tree runs on again."""
        self._adopted.append(name)
        size = self._streams[name].size if name in self._streams \
            else os.path.getsize(self.blob_path(name))
        self.blobs[name] = {"size": size, "xxh3_128": None}

    def adopted_checksum(self, name: str, xxh3_128: str) -> None:
        """The checksum of an adopted blob, taken by its writer as it wrote it: commit then
        need not read the blob again."""
        self._checksums[name] = xxh3_128

    def commit(self, manifest: dict[str, Any]) -> None:
        for name, stream in self._streams.items():
            if name not in self.blobs:
                stream.abort()  # opened for a blob given up (e.g. a pre-copy that could not start)
        for name in self._adopted:
            if name in self._streams and name not in self._checksums:
                raise CkptError(f"blob {name} went to the sink without its checksum")
            self.blobs[name]["xxh3_128"] = self._checksums.get(name) or _hash_file(self.blob_path(name))
        manifest = {"format": FORMAT, "version": VERSION, **manifest, "blobs": self.blobs}
        manifest["manifest_xxh3_128"] = manifest_checksum(manifest)
        with open(os.path.join(self.tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        for name, stream in self._streams.items():
            if name in self.blobs:
                stream.close()  # (raises if the sink failed: nothing is committed)
        for name in self.blobs if self.durable else ():
            if name in self._streams:
                continue
            fd = os.open(os.path.join(self.tmp, name), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        os.chmod(self.tmp, 0o700)
        os.rename(self.tmp, self.path)
        self._unlock()

    def abort(self) -> None:
        for stream in self._streams.values():
            stream.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


def _remove_stale_partials(parent: str) -> None:
    """Remove what dumps into `parent` that were killed left behind (`.NAME.*.partial`
    directories holding process memory): only those whose writer is gone, i.e. that no
    one holds locked, and only our own."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(".") and n.endswith(PARTIAL)]
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # empty and new: maybe a dump that has not taken its lock yet; left for later
            fresh = time.time() - st.st_mtime < 1 and not os.listdir(fd)
        except OSError:
            continue  # a live dump holds it
        else:
            if st.st_uid != os.getuid() or fresh:
                continue
            log.info("removing %s, left behind by a dump that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


class ImageReader:
    """A verified image. Construction fails with ImageError unless everything checks out:
    the files are what they claim (regular files of the image's owner, reached without
    following a link, never read past their declared size), and the manifest passes the
    schema (`schema.validate`), so nothing downstream meets a field it did not expect."""

    def __init__(self, path: str, verify_blobs: bool = True):
        self.path = path
        self._dir = -1
        self._dir = _open_image_dir(path)
        try:
            self.owner = os.fstat(self._dir).st_uid
            self.manifest: dict[str, Any] = check_manifest(self._read_manifest(), path)
            self.blobs: dict[str, dict[str, Any]] = self.manifest["blobs"]
            if verify_blobs:
                self.verify()
            self.bases = self._open_bases(verify_blobs)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1

    def __del__(self) -> None:
        self.close()

    def _open(self, name: str, limit: int) -> tuple[int, int]:
        """An image file opened for reading: a regular file of the directory's owner, no
        link followed, at most `limit` bytes. Returns (fd, size)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self._dir)
        except FileNotFoundError:
            raise ImageError(f"{self.path}: {name} is missing") from None
        except OSError as err:
            what = "a symbolic link" if err.errno == errno.ELOOP else err.strerror
            raise ImageError(f"{self.path}: {name} cannot be opened ({what})") from None
        st = os.fstat(fd)
        problem = ("is not a regular file" if not stat.S_ISREG(st.st_mode)
                   else f"belongs to uid {st.st_uid}, not to the image's owner" if st.st_uid != self.owner
                   else f"is {st.st_size} bytes, more than the {limit} expected" if st.st_size > limit
                   else "")
        if problem:
            os.close(fd)
            raise ImageError(f"{self.path}: {name} {problem}")
        return fd, st.st_size

    def _read_manifest(self) -> Any:
        try:
            fd, size = self._open(MANIFEST, MAX_MANIFEST)
        except ImageError as err:
            if f"{MANIFEST} is missing" in str(err):
                raise ImageError(f"{self.path}: not an image (no {MANIFEST})") from None
            raise
        with os.fdopen(fd, "rb") as f:
            data = f.read(size + 1)
        self.raw_manifest = data  # verbatim, for a store that keeps it as it is
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ImageError(f"{self.path}: {MANIFEST} is corrupt or truncated") from None
        except RecursionError:
            raise ImageError(f"{self.path}: {MANIFEST} is nested too deeply") from None

    def _open_bases(self, verify_blobs: bool) -> list["ImageReader"]:
        """The images an incremental image builds on (see incremental.py), each checked
        like this one and required to be exactly the image recorded at dump time."""
        readers = []
        for base in self.manifest.get("bases", []):
            path = os.path.normpath(os.path.join(self.path, base["path"]))
            try:
                reader = ImageReader(path, verify_blobs)
            except ImageError as err:
                raise ImageError(f"{self.path} builds on {path}, which is unusable: {err}") from None
            if reader.manifest["manifest_xxh3_128"] != base["manifest_xxh3_128"]:
                raise ImageError(f"{self.path} builds on {path}, which has changed since")
            readers.append(reader)
        from . import schema  # (only readers need it: a dump does not build the schema)

        try:
            schema.validate_base_runs(self.manifest, [r.manifest for r in readers])
        except schema.Invalid as err:
            raise ImageError(f"image {self.path} is invalid: {err}") from None
        return readers

    def verify(self) -> None:
        for name, meta in self.blobs.items():
            fd, size = self._open(name, meta["size"])
            try:
                if size != meta["size"]:
                    raise ImageError(f"{self.path}: blob {name} is {size} bytes, expected "
                                     f"{meta['size']} (truncated or corrupt)")
                if _hash_fd(fd, size) != meta["xxh3_128"]:
                    raise ImageError(f"{self.path}: blob {name} checksum mismatch (corrupt)")
            finally:
                os.close(fd)

    def open_blob(self, name: str) -> int:
        """A file descriptor for reading blob `name`, checked like every image file and of
        exactly its recorded size (the caller closes it and checks its checksum)."""
        size = self.blobs[name]["size"]
        fd, actual = self._open(name, size)
        if actual != size:
            os.close(fd)
            raise ImageError(f"{self.path}: blob {name} is {actual} bytes, expected {size} "
                             "(truncated or corrupt)")
        return fd

    def blob_bytes(self, name: str) -> bytes:
        fd, size = self._open(name, self.blobs[name]["size"])
        with os.fdopen(fd, "rb") as f:
            return f.read(size)

    def map_blob(self, name: str) -> mmap.mmap | None:
        size = self.blobs[name]["size"]
        if not size:
            return None
        fd, actual = self._open(name, size)
        try:
            if actual != size:
                raise ImageError(f"{self.path}: blob {name} is {actual} bytes, expected {size}")
            # copy-on-write access: never written, but lets ctypes take its address
            return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)

    def page_source(self, name: str) -> MappedPages | None:
        """Blob `name` for the page writer or the lazy page server (None if it is empty)."""
        blob = self.map_blob(name)
        return MappedPages(blob) if blob is not None else None


class MappedPages:
    """A blob of memory pages as the lazy page server reads it (engine.lazy.PageSource): a
    copy-on-write mapping of the image file, all there from the start."""

    def __init__(self, blob: mmap.mmap):
        self._blob = blob
        self._anchor: Any = ctypes.c_char.from_buffer(blob)
        self.address = ctypes.addressof(self._anchor)
        self.size = len(blob)

    def ensure(self, ranges: list[tuple[int, int]]) -> None:
        pass

    def available(self, lo: int, hi: int) -> int:
        return hi - lo

    def prefetch(self) -> None:
        pass

    def release(self, lo: int, hi: int) -> None:
        pass  # the page cache keeps the file's pages as it sees fit

    def close(self) -> None:
        self._anchor = None
        self._blob.close()


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """`manifest` if it passes the schema and its own checksum (ImageError otherwise): what
    every reader of an image, from a directory or from a snapshot store, checks first."""
    from . import schema  # (only readers need it: a dump does not build the schema)

    try:
        schema.validate(manifest)
    except schema.Invalid as err:
        raise ImageError(f"image {where} is invalid: {err}") from None
    if manifest["manifest_xxh3_128"] != manifest_checksum(manifest):
        raise ImageError(f"{where}: {MANIFEST} checksum mismatch (corrupt or edited)")
    return manifest


def _open_image_dir(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image directory") from None
    except OSError as err:
        what = ("is a symbolic link" if err.errno == errno.ELOOP
                else "is not a directory" if err.errno == errno.ENOTDIR else f": {err.strerror}")
        raise ImageError(f"{path} {what}: not an image directory") from None


def append_run(runs: list[list[int]], run: list[int]) -> None:
    """Append a page run ([address, length, blob offset] or, in incremental images,
    [..., base index]) to `runs`, extending the last one instead where `run` continues it
    in memory and in the same blob."""
    last = runs[-1] if runs else None
    if last and len(last) == len(run) and last[3:] == run[3:] and \
            last[0] + last[1] == run[0] and last[2] + last[1] == run[2]:
        last[1] += run[1]
    else:
        runs.append(run)
