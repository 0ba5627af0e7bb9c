"""A snapshot read straight out of the store by the engine's restore, with no image directory
in between: `SnapshotStore.open_image(id)` gives a `StoreImage`, which reads like the
engine's ImageReader (manifest, blob bytes, blob mappings, page sources).

Memory pages come from chunks into an anonymous buffer per blob (`ChunkPages`, the lazy page
server's PageSource): on demand, chunk by chunk, and, for a lazy restore, in the background
on worker threads, so the restored kernel runs while the rest streams in. Every chunk is
checked against its name (its xxh3-128) before a byte of it reaches the buffer: a chunk that
is missing or does not match is refused by name, and since the page server copies a range
into the process only once `ensure` said it is in, the process never gets a wrong page (the
page server kills it instead). Whole small blobs are also checked against the image's own
blob checksum.

The store's lock is held shared (a delete waits) until the image is closed and every
buffer has all its chunks or is closed.
"""
from __future__ import annotations

import bisect
import ctypes
import json
import logging
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..engine.errors import ImageError
from ..engine.image import check_manifest
from .errors import CorruptData, NotFound

if TYPE_CHECKING:
    from .snapshots import SnapshotStore

log = logging.getLogger(__name__)
_WANTED, _FETCHING, _IN = 0, 1, 2


class StoreImage:
    """A snapshot opened for restore (see the module docstring). `close` when the restore
    returned; the buffers a lazy restore still reads keep what they need."""

    def __init__(self, store: "SnapshotStore", snapshot_id: str):
        from .snapshots import LOCK, check_id

        sid = check_id(snapshot_id)
        self.store = store
        self.path = f"snapshot {sid}"
        self.owner = os.getuid()  # whoever may write the store wrote it (see the catalog)
        self.bases: list[Any] = []
        self._refs = 1
        self._refs_lock = threading.Lock()
        self._closed = False
        self._lock = store.backend.lock(LOCK, shared=True)
        self.pool = ThreadPoolExecutor(store.workers, thread_name_prefix="ckpt-store-read")
        try:
            self.info = store._load_record(sid)
            doc = store._load_chunks(self.info)
            try:
                manifest = json.loads(doc["image_manifest"])
            except (ValueError, TypeError, KeyError):
                raise ImageError(f"{self.path}: its image manifest is corrupt") from None
            self.manifest: dict[str, Any] = check_manifest(manifest, self.path)
            if self.manifest.get("bases"):
                raise ImageError(f"{self.path}: an incremental image cannot be read from a store")
            self.blobs: dict[str, dict[str, Any]] = self.manifest["blobs"]
            self._chunks = doc.get("blobs")
            if not isinstance(self._chunks, dict) or set(self._chunks) != set(self.blobs) or any(
                    self._chunks[n].get("size") != b["size"]
                    or self._chunks[n].get("xxh3_128") != b["xxh3_128"]
                    for n, b in self.blobs.items()):
                raise ImageError(f"{self.path}: its chunk list does not match its image manifest")
            for name, blob in self._chunks.items():
                _check_chunk_list(self.path, name, blob)
        except CorruptData as err:
            self._release()
            raise ImageError(f"{self.path} is damaged: {err}") from None
        except BaseException:
            self._release()
            raise

    # --- what the engine's restore reads

    def blob_bytes(self, name: str) -> bytes:
        data = bytearray(self.blobs[name]["size"])
        self._read_whole(name, data)
        return bytes(data)

    def open_blob(self, name: str) -> int:
        """A memory file holding the blob (the caller closes it)."""
        fd = os.memfd_create(f"ckpt-{name}", os.MFD_CLOEXEC)
        try:
            data = memoryview(self.blob_bytes(name))
            while data:
                data = data[os.write(fd, data):]
            os.lseek(fd, 0, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def map_blob(self, name: str) -> mmap.mmap | None:
        size = self.blobs[name]["size"]
        if not size:
            return None
        blob = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            self._read_whole(name, blob)
        except BaseException:
            blob.close()
            raise
        return blob

    def page_source(self, name: str) -> "ChunkPages | None":
        """Blob `name` for the page writer or the lazy page server (engine.lazy.PageSource):
        chunks come in as `ensure` asks for them, and all of them once `prefetch` is called."""
        if not self.blobs[name]["size"]:
            return None
        return ChunkPages(self, name, self._chunks[name])

    def close(self) -> None:
        with self._refs_lock:
            closed, self._closed = self._closed, True
        if not closed:
            self._release()

    # --- chunks

    def fetch(self, name: str, off: int, length: int, h: str) -> bytes:
        """One chunk's bytes, checked against its name; ImageError names it otherwise."""
        try:
            return self.store._fetch(h, length, f"{self.path}: blob {name} at offset {off}")
        except (CorruptData, NotFound) as err:
            raise ImageError(f"{self.path} is damaged: {err}") from None

    def _read_whole(self, name: str, into: Any) -> None:
        def sink(off: int, data: bytes) -> None:
            into[off:off + len(data)] = data

        try:
            self.store._read_blob(self.pool, self.info.id, name, self._chunks[name], sink)
        except (CorruptData, NotFound) as err:
            raise ImageError(f"{self.path} is damaged: {err}") from None

    def hold(self) -> None:
        with self._refs_lock:
            if self._refs <= 0:
                raise ImageError(f"{self.path} was closed")
            self._refs += 1

    def _release(self) -> None:
        with self._refs_lock:
            self._refs -= 1
            if self._refs:
                return
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._lock.release()


def _check_chunk_list(where: str, name: str, blob: dict[str, Any]) -> None:
    """Chunks in order, inside the blob, not overlapping (a crafted list must not make two
    chunks write the same bytes, or one write past the buffer)."""
    end = 0
    for entry in blob.get("chunks", ()):
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], int)
                and isinstance(entry[1], int) and entry[0] >= end and entry[1] > 0
                and entry[0] + entry[1] <= blob["size"]):
            raise ImageError(f"{where}: blob {name}: its chunk list is inconsistent")
        end = entry[0] + entry[1]


class ChunkPages:
    """One blob of memory pages in an anonymous buffer, filled from its chunks: by `ensure`
    (the chunks it needs, fetched by the caller or waited for) and, after `prefetch`, by
    threads of its own in blob order. A chunk that cannot be read stops the background work and
    makes every later `ensure` raise ImageError naming it."""

    def __init__(self, image: StoreImage, name: str, blob: dict[str, Any]):
        self.size = blob["size"]
        self._image, self._name = image, name
        self._chunks = [(e[0], e[1], e[2]) for e in blob["chunks"]]
        self._starts = [c[0] for c in self._chunks]
        self._state = bytearray(len(self._chunks))
        self._left = len(self._chunks)
        self._next = 0  # the background workers' cursor
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._buffer = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._anchor: Any = ctypes.c_char.from_buffer(self._buffer)
        self.address = ctypes.addressof(self._anchor)
        image.hold()
        self._holding = True
        self._prefetching = False
        if not self._left:
            self._let_go()

    def prefetch(self) -> None:
        """Bring every chunk in, on threads of their own (the pool stays free for what
        `ensure` asks)."""
        with self._cond:
            if self._prefetching or not self._left or self._closed:
                return
            self._prefetching = True
        for n in range(self._image.store.workers):
            threading.Thread(target=self._background, daemon=True,
                             name=f"ckpt-store-prefetch-{n}").start()

    def ensure(self, ranges: list[tuple[int, int]]) -> None:
        ours: list[int] = []
        wanted: list[int] = []
        with self._cond:
            self._raise_if_failed()
            for lo, hi in sorted(ranges):
                i = max(bisect.bisect_right(self._starts, lo) - 1, 0)
                if wanted and wanted[-1] >= i:
                    i = wanted[-1] + 1
                while i < len(self._chunks) and self._chunks[i][0] < hi:
                    off, length, _ = self._chunks[i]
                    if off + length > lo and self._state[i] != _IN:
                        wanted.append(i)
                        if self._state[i] == _WANTED:
                            self._state[i] = _FETCHING
                            ours.append(i)
                    i += 1
        for i in ours[1:]:  # several: on the pool too, this thread taking its share
            self._image.pool.submit(self._get, i)
        if ours:
            self._get(ours[0])
        pos = 0
        with self._cond:
            while True:
                while pos < len(wanted) and self._state[wanted[pos]] == _IN:
                    pos += 1
                if pos == len(wanted) or self._error or self._closed:
                    break
                self._cond.wait()
            self._raise_if_failed()

    def available(self, lo: int, hi: int) -> int:
        """How many bytes from `lo` on (up to `hi`) are in already: complete chunks, and the
        zero ranges between them (never stored, zero in the buffer)."""
        i = bisect.bisect_right(self._starts, lo) - 1
        if i < 0 or self._chunks[i][0] + self._chunks[i][1] <= lo:
            i += 1  # lo is in a zero range (or before the first chunk)
        with self._cond:
            while i < len(self._chunks) and self._chunks[i][0] < hi:
                if self._state[i] != _IN:
                    return max(0, self._chunks[i][0] - lo)
                i += 1
        return hi - lo

    def release(self, lo: int, hi: int) -> None:
        """[lo, hi) was copied where it belongs and is wanted nowhere else: give its memory
        back, so that a lazy restore does not hold the kernel's memory twice."""
        lo = -(-lo // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = hi // mmap.PAGESIZE * mmap.PAGESIZE
        with self._cond:
            if hi > lo and not self._closed:
                self._buffer.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise ImageError(str(self._error))
        if self._closed:
            raise ImageError(f"{self._image.path}: blob {self._name} was closed")

    def _background(self) -> None:
        while True:
            with self._cond:
                while self._next < len(self._chunks) and self._state[self._next] != _WANTED:
                    self._next += 1
                if self._next == len(self._chunks) or self._error or self._closed:
                    return
                i = self._next
                self._state[i] = _FETCHING
            self._get(i)

    def _get(self, i: int) -> None:
        off, length, h = self._chunks[i]
        try:
            data = self._image.fetch(self._name, off, length, h)
            with self._cond:
                if self._closed:
                    return
                # (ctypes lets the GIL go while it copies: the page server must not wait)
                ctypes.memmove(self.address + off, data, length)
                self._state[i] = _IN
                self._left -= 1
                self._cond.notify_all()
                done = not self._left
        except BaseException as err:  # noqa: BLE001 - every waiter must hear of it
            with self._cond:
                if self._error is None:
                    self._error = err
                    log.error("%s", err)
                self._cond.notify_all()
            self._let_go()
            return
        if done:
            self._let_go()

    def _let_go(self) -> None:
        """Every chunk is in (or none will come): the store is no longer needed."""
        with self._cond:
            holding, self._holding = self._holding, False
        if holding:
            self._image._release()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._anchor = None
            self._buffer.close()  # (copies into it take the lock too)
        self._let_go()
