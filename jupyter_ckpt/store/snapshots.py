"""Snapshots: engine images kept in a content-addressed, deduplicated chunk store.

Objects in the backend (see backend.py for the interface):

    config.json                     store format/version and the chunking parameters
    chunks/<h[:2]>/<h>              one chunk, h = xxh3-128 of its raw bytes (chunking.py)
    snapshots/<id>.<nonce>.chunks   the snapshot's image manifest, verbatim, and per blob
                                    its size, xxh3-128 and chunk list (zstd-compressed JSON)
    snapshots/<id>.json             the snapshot record: id, label, created, the caller's
                                    metadata, sizes, and the name of its .chunks object

A snapshot exists once its record exists: `put_image` writes chunks, then the chunk list,
makes them durable (`flush`), and writes the record last with create-if-absent. `delete`
removes the record first. Anything left without a record (a put that died) is garbage
that `gc` removes. A dump can also write its blobs straight into the store (`streaming`):
they are chunked as they come, and `put_image` takes them from the sink.

Concurrency: a reader-writer lock named "store". Everything that needs chunks to stay
(`put_image` from its first existence check to its record, `checkout`, `verify`) holds it
shared; everything that frees chunks (`delete`, `gc`) holds it exclusive. So a put never
loses a chunk it found or wrote, however it interleaves with deletes, and puts of
different kernels run side by side. A delete waits for the puts in progress to finish.
In a bucket the lock is a lease (s3.py) that can be lost if its holder stalls; a put
checks it still holds it before and after writing its record, and stores nothing if not.
"""
from __future__ import annotations

import json
import mmap
import os
import queue
import re
import secrets
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Container, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import xxhash

from ..engine.errors import ImageError
from ..engine.image import ImageReader
from .backend import Backend, LocalBackend
from .chunking import (WINDOW, ChunkParams, Codec, Cutter, cut_blob, decode_document,
                       encode_document)
from .errors import (AlreadyExists, BadImage, CorruptData, InvalidName, LockTimeout, NotFound,
                     StoreError)

if TYPE_CHECKING:
    from .reading import StoreImage

STORE_FORMAT = "jupyter-ckpt-store"
STORE_VERSION = 1
SNAPSHOT_FORMAT = "jupyter-ckpt-snapshot"
IMAGE_MANIFEST = "manifest.json"
LOCK = "store"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}\Z")
_HASH = re.compile(r"[0-9a-f]{32}\Z")
_BLOB_NAME = re.compile(r"[^/\x00]{1,255}\Z")
_ZEROS_VIEW = memoryview(bytes(1 << 20))

Progress = Callable[[int, int], None]


def check_id(snapshot_id: object) -> str:
    """`snapshot_id` if it is a valid snapshot id: 1-100 letters, digits, '_' or '-',
    starting with a letter or digit. Anything path-like is refused."""
    if not isinstance(snapshot_id, str) or not _ID.match(snapshot_id):
        raise InvalidName(f"invalid snapshot id {snapshot_id!r} (letters, digits, '_' and '-' "
                          "only, at most 100, starting with a letter or digit)")
    return snapshot_id


def new_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def _chunk_key(h: str) -> str:
    if not _HASH.match(h):
        raise CorruptData(f"invalid chunk name {h!r} in a chunk list")
    return f"chunks/{h[:2]}/{h}"


def _record_key(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}.json"


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot. Sizes in bytes: `logical_bytes` is the image's blobs (what `checkout`
    writes, holes included), `zero_bytes` the part of it that was zero pages (never stored),
    `stored_bytes` what its distinct chunks take in the store (shared ones included),
    `new_bytes` what this snapshot added to the store when it was put (chunks nobody had)."""

    id: str
    label: str
    created: str
    metadata: dict[str, Any]
    image: dict[str, Any]
    logical_bytes: int
    zero_bytes: int
    stored_bytes: int
    new_bytes: int
    chunks: int
    new_chunks: int
    manifest_bytes: int
    chunks_object: str = field(repr=False, default="")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Usage:
    snapshots: int
    chunks: int
    chunk_bytes: int  # stored size of all chunks
    manifest_bytes: int  # chunk lists and records
    logical_bytes: int  # what all snapshots would take as plain image directories

    @property
    def stored_bytes(self) -> int:
        return self.chunk_bytes + self.manifest_bytes


def read_image(image_dir: str, streamed: Container[str] = ()) -> ImageReader:
    """An engine image, opened and validated by the engine's own reader (its files checked,
    its manifest against the image schema) without reading the blobs: their contents are
    checked while the store reads them. Blobs `streamed` into the store are not files."""
    try:
        reader = ImageReader(image_dir, verify_blobs=False)
        for name in reader.blobs:
            if name not in streamed:
                os.close(reader.open_blob(name))
    except ImageError as err:
        raise BadImage(str(err)) from None
    return reader


def _image_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    procs = manifest.get("processes") or []
    return {"version": manifest.get("version"), "created": manifest.get("created"),
            "tool_version": manifest.get("tool_version"), "root_pid": manifest.get("root_pid"),
            "processes": len(procs) if isinstance(procs, list) else None,
            "blobs": len(manifest["blobs"])}


class _ChunkWriter:
    """Stores the chunks of one put: skips those the store (or this put) already has,
    compresses and writes the others. The existence check runs on the thread pool with
    the write, as a remote backend answers it in a round trip: many chunks are checked
    and written at once, with a bounded number in flight."""

    def __init__(self, backend: Backend, codec: Codec, pool: ThreadPoolExecutor, workers: int):
        self.backend = backend
        self.codec = codec
        self.pool = pool
        self.limit = 3 * workers
        self.inflight: deque[Future] = deque()
        self.sizes: dict[str, Future] = {}  # chunk hash -> (stored size, written by us)
        self._lock = threading.Lock()  # several blobs may be streamed at once

    def _store(self, h: str, data: memoryview) -> tuple[int, bool]:
        size = self.backend.size(_chunk_key(h))
        if size is not None:
            return size, False
        obj = self.codec.encode(data)
        self.backend.put(_chunk_key(h), obj)
        return len(obj), True

    def add(self, data: bytes | memoryview) -> str:
        h = xxhash.xxh3_128_hexdigest(data)
        with self._lock:
            if h in self.sizes:
                return h
            fut = self.pool.submit(self._store, h, data)
            self.sizes[h] = fut
            self.inflight.append(fut)
            while len(self.inflight) > self.limit:
                self.inflight.popleft().result()
        return h

    def cancel(self) -> None:
        for fut in self.inflight:
            fut.cancel()

    def finish(self) -> tuple[dict[str, int], set[str]]:
        """Stored size of every chunk, and the chunks this put wrote."""
        while self.inflight:
            self.inflight.popleft().result()
        done = {h: f.result() for h, f in self.sizes.items()}
        return {h: r[0] for h, r in done.items()}, {h for h, r in done.items() if r[1]}


_QUEUED = 2  # windows of a streamed blob waiting for its chunker


def _window() -> mmap.mmap:
    """A buffer for one window of a streamed blob: anonymous memory, so that a small blob
    touches (and the kernel zeroes) only the pages it fills, not 16 MiB. Unmapped when the
    last view of it (the chunks being stored) is gone."""
    return mmap.mmap(-1, WINDOW)


class _BlobStream:
    """One blob of a dump chunked and stored as the dump writes it (engine.image's
    BlobStream): `write` copies the bytes into a window; full windows go to a thread that
    cuts them into chunks (chunking.Cutter, so the chunks are those `cut_blob` finds in
    the same blob as a file) and hands them to the put's chunk writer, which hashes them
    and has the pool check, compress and store those the store lacks. The dump runs on
    meanwhile, unless a few windows are already waiting."""

    def __init__(self, sink: "ChunkSink", name: str):
        self._sink = sink
        self.name = name
        self.size = 0
        self.entries: list[list[Any]] = []  # [offset, length, chunk hash]
        self._cutter = Cutter(sink.params)
        self._digest = xxhash.xxh3_128()
        self._buf = _window()
        self._fill = 0
        self._queue: queue.Queue[tuple[memoryview, bool] | None] = queue.Queue(_QUEUED)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._dropped = False

    def write(self, data: bytes | memoryview) -> None:
        mv = memoryview(data).cast("B")
        pos = 0
        while pos < len(mv):
            n = min(len(mv) - pos, WINDOW - self._fill)
            self._buf[self._fill:self._fill + n] = mv[pos:pos + n]
            self._fill += n
            pos += n
            if self._fill == WINDOW:
                self._hand(last=False)
        self.size += len(mv)

    def _hand(self, last: bool) -> None:
        if self._error is not None:
            raise self._error
        window = memoryview(self._buf)[:self._fill]
        self._buf, self._fill = (_window() if not last else bytearray()), 0
        if self._thread is None:
            if last:  # all of it in one window: cut it here
                self._cut(window, last)
                return
            self._thread = threading.Thread(target=self._run, name="ckpt-chunker", daemon=True)
            self._thread.start()
        self._queue.put((window, last))

    def _cut(self, window: memoryview, last: bool) -> None:
        self._digest.update(window)
        for off, chunk in self._cutter.feed(window, last):
            self.entries.append([off, len(chunk), self._sink.writer.add(chunk)])

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            window, last = item
            if self._error is None and not self._dropped:
                try:
                    self._cut(window, last)
                except BaseException as err:  # reported to the writer (the dump)
                    self._error = err
            self._queue.task_done()
            if last:
                return

    def drain(self) -> None:
        if self._thread is not None:
            self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._hand(last=True)
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        self._sink.blobs[self.name] = {"size": self.size, "xxh3_128": self._digest.hexdigest(),
                                       "chunks": self.entries}

    def abort(self) -> None:
        self._dropped = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)  # (the thread drains the queue: this put does not wait long)
            self._thread.join()


class ChunkSink:
    """Where a dump writes its blobs to be stored as a snapshot, chunk by chunk, as it
    goes (engine.image's BlobSink): from `SnapshotStore.streaming`."""

    def __init__(self, params: ChunkParams, writer: _ChunkWriter, lock: Any):
        self.params = params
        self.writer = writer
        self.lock = lock
        self.blobs: dict[str, dict[str, Any]] = {}  # complete blobs: size, xxh3_128, chunks
        self._streams: list[_BlobStream] = []

    def open(self, name: str) -> _BlobStream:
        stream = _BlobStream(self, name)
        self._streams.append(stream)
        return stream

    def abort(self) -> None:
        for stream in self._streams:
            stream.abort()
        self.writer.cancel()


class SnapshotStore:
    """Snapshots of one user, in a directory or any `Backend`.

    `compression` ("zstd" or "none") and `level` apply to chunks this instance writes; a
    store may hold chunks of both kinds. Level 1 is the default: on memory images it
    compressed as well as level 3 (within 1%) for 40% less CPU. `workers` threads compress,
    write and read chunks, several chunks at a time (zstd's own worker threads would not
    help: zstd cuts its input in jobs of at least 1 MiB, larger than a chunk). `chunking` is
    used only when the store is created; an existing store keeps its own.
    """

    def __init__(self, root_or_backend: str | os.PathLike[str] | Backend, *,
                 compression: str = "zstd", level: int = 1, workers: int | None = None,
                 chunking: ChunkParams | None = None):
        self.backend = (root_or_backend if isinstance(root_or_backend, Backend)
                        else LocalBackend(root_or_backend))
        self.codec = Codec(compression, level)
        self.workers = max(1, workers or os.cpu_count() or 2)
        self.params = self._open_config(chunking or ChunkParams())

    def __repr__(self) -> str:
        return f"SnapshotStore({self.backend.describe()})"

    def _open_config(self, params: ChunkParams) -> ChunkParams:
        config = {"format": STORE_FORMAT, "version": STORE_VERSION, "chunking": params.to_dict()}
        try:
            self.backend.put("config.json", json.dumps(config, indent=1).encode(),
                             exclusive=True)
            return params
        except AlreadyExists:
            pass
        try:
            found = json.loads(self.backend.get("config.json"))
        except ValueError:
            raise CorruptData("store config.json is corrupt") from None
        if not isinstance(found, dict) or found.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.backend.describe()} is not a jupyter-ckpt snapshot store")
        if found.get("version") != STORE_VERSION:
            raise StoreError(f"snapshot store version {found.get('version')!r}, this "
                             f"jupyter-ckpt reads version {STORE_VERSION}")
        return ChunkParams.from_dict(found["chunking"])

    # --- reading records -------------------------------------------------------------

    def _load_record(self, snapshot_id: str) -> SnapshotInfo:
        try:
            raw = self.backend.get(_record_key(snapshot_id))
        except NotFound:
            raise NotFound(f"no snapshot {snapshot_id}") from None
        try:
            rec = json.loads(raw)
            if rec.get("format") != SNAPSHOT_FORMAT:
                raise ValueError
            return SnapshotInfo(**rec["info"])
        except (ValueError, TypeError, KeyError, AttributeError):
            raise CorruptData(f"snapshot {snapshot_id}: record is corrupt") from None

    def _load_chunks(self, info: SnapshotInfo) -> dict[str, Any]:
        what = f"snapshot {info.id}: chunk list"
        try:
            obj = self.backend.get(info.chunks_object)
        except NotFound:
            raise CorruptData(f"{what} is missing") from None
        try:
            doc = json.loads(decode_document(obj, what))
            if doc.get("id") != info.id:
                raise ValueError
            return doc
        except (ValueError, AttributeError):
            raise CorruptData(f"{what} is corrupt") from None

    def get(self, snapshot_id: str) -> SnapshotInfo:
        return self._load_record(check_id(snapshot_id))

    def exists(self, snapshot_id: str) -> bool:
        return self.backend.exists(_record_key(check_id(snapshot_id)))

    def manifest(self, snapshot_id: str) -> dict[str, Any]:
        """The engine image manifest of a snapshot (as `inspect --json` would read it)."""
        doc = self._load_chunks(self.get(snapshot_id))
        return json.loads(doc["image_manifest"])

    def _ids(self) -> list[str]:
        ids = []
        for key, _ in self.backend.list("snapshots/"):
            name = key[len("snapshots/"):]
            if name.endswith(".json") and _ID.match(name[:-5]):
                ids.append(name[:-5])
        return ids

    def list(self, where: Mapping[str, Any] | None = None, /, **match: Any) -> list[SnapshotInfo]:
        """Snapshots whose metadata has every given key with the given value (all of them
        without arguments), newest first."""
        wanted = {**(where or {}), **match}
        out = []
        for snapshot_id in self._ids():
            try:
                info = self._load_record(snapshot_id)
            except NotFound:
                continue  # deleted while we listed
            if all(k in info.metadata and info.metadata[k] == v for k, v in wanted.items()):
                out.append(info)
        out.sort(key=lambda i: (i.created, i.id), reverse=True)
        return out

    # --- put -------------------------------------------------------------------------

    @contextmanager
    def streaming(self) -> Iterator[ChunkSink]:
        """A sink for `engine.dump(..., sink=)`: it chunks and stores the blobs as the dump
        writes them, so that memory is read once, and chunks the store has already cost
        only their hash. Then `put_image(image_dir, ..., sink=)`, inside the `with`, makes
        the snapshot of the image (the manifest, and any blob the dump wrote as a file).
        Holds the store lock shared, as `put_image` does. If the dump or the put fails, the
        chunks stored so far are referenced by nothing: `gc` removes them."""
        with self.backend.lock(LOCK, shared=True) as lock, \
                ThreadPoolExecutor(self.workers, thread_name_prefix="ckpt-store") as pool:
            sink = ChunkSink(self.params, _ChunkWriter(self.backend, self.codec, pool,
                                                       self.workers), lock)
            try:
                yield sink
            except BaseException:
                sink.abort()
                raise

    def put_image(self, image_dir: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None,
                  *, label: str = "", snapshot_id: str | None = None,
                  progress: Progress | None = None, consume: bool = False,
                  sink: ChunkSink | None = None) -> SnapshotInfo:
        """Ingest the engine image in `image_dir` as a new snapshot. `metadata` is any JSON
        object (kernel_id, notebook_path, ...). Blob contents are checked against the
        image's checksums while they are read; a damaged image is refused (BadImage).
        `progress(done, total)` is called as blob bytes are consumed. With `consume` (a
        scratch image, not written durably) each blob file is removed once read, before the
        store flushes: its pages, still only in the page cache, are then never written.
        With a `sink` (see `streaming`), blobs the dump gave it are taken from there,
        checked against the image's sizes and checksums likewise."""
        image_dir = os.fspath(image_dir)
        meta = dict(metadata or {})
        if not all(isinstance(k, str) for k in meta):
            raise TypeError("metadata keys must be strings")
        json.dumps(meta, allow_nan=False)  # TypeError/ValueError now, not after the ingest
        if not isinstance(label, str) or len(label) > 1000:
            raise ValueError("label must be a string of at most 1000 characters")
        created = datetime.now(timezone.utc)
        sid = check_id(snapshot_id) if snapshot_id is not None else new_id(created)
        if sink is not None:
            return self._put(image_dir, meta, label, sid, created, progress, consume, sink)
        with self.streaming() as own:
            return self._put(image_dir, meta, label, sid, created, progress, consume, own)

    def _put(self, image_dir: str, meta: dict[str, Any], label: str, sid: str,
             created: datetime, progress: Progress | None, consume: bool,
             sink: ChunkSink) -> SnapshotInfo:
        image = read_image(image_dir, sink.blobs)
        raw_manifest, manifest = image.raw_manifest, image.manifest
        total = sum(b["size"] for b in manifest["blobs"].values())
        done = 0
        writer, lock = sink.writer, sink.lock
        if self.exists(sid):
            raise AlreadyExists(f"snapshot {sid} already exists")
        extra = sink.blobs.keys() - manifest["blobs"].keys()
        if extra:
            raise BadImage(f"{image_dir}: blob {sorted(extra)[0]} was stored but is not in "
                           "the image")
        blobs: dict[str, dict[str, Any]] = {}
        zero_bytes = 0
        for name, meta_b in manifest["blobs"].items():
            streamed = sink.blobs.get(name)
            if streamed is not None:
                if (streamed["size"], streamed["xxh3_128"]) != (meta_b["size"], meta_b["xxh3_128"]):
                    raise BadImage(f"{image_dir}: blob {name} checksum mismatch (corrupt)")
                entries = streamed["chunks"]
            else:
                entries = []
                digest = xxhash.xxh3_128()
                try:
                    fd = image.open_blob(name)
                except ImageError as err:
                    raise BadImage(str(err)) from None
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                    last = 0
                    for off, view in cut_blob(fd, meta_b["size"], self.params, digest,
                                              f"{image_dir}: blob {name}"):
                        entries.append([off, len(view), writer.add(view)])
                        if progress is not None and off - last >= (64 << 20):
                            progress(done + off, total)
                            last = off
                finally:
                    os.close(fd)
                if digest.hexdigest() != meta_b["xxh3_128"]:
                    raise BadImage(f"{image_dir}: blob {name} checksum mismatch (corrupt)")
                if consume:
                    os.unlink(os.path.join(image_dir, name))
            zero_bytes += meta_b["size"] - sum(e[1] for e in entries)
            blobs[name] = {"size": meta_b["size"], "xxh3_128": meta_b["xxh3_128"],
                           "chunks": entries}
            done += meta_b["size"]
            if progress is not None:
                progress(done, total)
        sizes, new = writer.finish()
        for b in blobs.values():
            for e in b["chunks"]:
                e.append(sizes[e[2]])

        doc = {"format": SNAPSHOT_FORMAT + "-chunks", "version": STORE_VERSION, "id": sid,
               "image_manifest": raw_manifest.decode(), "blobs": blobs}
        doc_obj = encode_document(json.dumps(doc, separators=(",", ":")).encode())
        chunks_object = f"snapshots/{sid}.{secrets.token_hex(4)}.chunks"
        self.backend.put(chunks_object, doc_obj, exclusive=True)
        info = SnapshotInfo(
            id=sid, label=label, created=created.isoformat(timespec="microseconds"),
            metadata=meta, image=_image_summary(manifest), logical_bytes=total,
            zero_bytes=zero_bytes, stored_bytes=sum(sizes.values()),
            new_bytes=sum(sizes[h] for h in new), chunks=len(sizes),
            new_chunks=len(new), manifest_bytes=len(doc_obj),
            chunks_object=chunks_object)
        record = {"format": SNAPSHOT_FORMAT, "version": STORE_VERSION, "info": info.to_dict()}
        self.backend.flush()  # chunks and chunk list durable before the record names them
        lost = LockTimeout(f"snapshot {sid} not stored: the store lock was lost during "
                           "the put (its lease expired); put it again")
        if not lock.held():  # a lease not renewed in time: a gc may have run meanwhile
            self.backend.delete(chunks_object)
            raise lost
        try:
            self.backend.put(_record_key(sid), json.dumps(record, indent=1).encode(),
                             exclusive=True)
        except AlreadyExists:
            self.backend.delete(chunks_object)
            raise AlreadyExists(f"snapshot {sid} already exists") from None
        if not lock.held():  # lost while the record was written: it may name freed chunks
            self.backend.delete(_record_key(sid))
            self.backend.delete(chunks_object)
            raise lost
        self.backend.flush()
        return info

    # --- checkout and verify ---------------------------------------------------------

    def _fetch(self, h: str, size: int, what: str) -> bytes:
        try:
            obj = self.backend.get(_chunk_key(h))
        except NotFound:
            raise CorruptData(f"{what}: chunk {h} is missing from the store") from None
        data = self.codec.decode(obj, size, f"{what}: chunk {h}")
        if xxhash.xxh3_128_hexdigest(data) != h:
            raise CorruptData(f"{what}: chunk {h} is corrupt (checksum mismatch)")
        return data

    def _read_blob(self, pool: ThreadPoolExecutor, snapshot_id: str, name: str,
                   blob: dict[str, Any], sink: Callable[[int, bytes], None] | None) -> None:
        """Fetch and check every chunk of a blob in order (a few in flight on the pool),
        pass each to sink(offset, data), and check the whole blob's checksum."""
        what = f"snapshot {snapshot_id}: blob {name}"
        digest = xxhash.xxh3_128()
        pending: deque[tuple[int, int, Future]] = deque()
        pos = 0  # end of the last chunk consumed
        submitted = 0  # end of the last chunk submitted

        def consume() -> None:
            nonlocal pos
            off, length, fut = pending.popleft()
            _feed_zeros(digest, off - pos)
            data = fut.result()
            digest.update(data)
            if sink is not None:
                sink(off, data)
            pos = off + length

        try:
            for off, length, h, _stored in blob["chunks"]:
                if off < submitted or length <= 0 or off + length > blob["size"]:
                    raise CorruptData(f"{what}: chunk list is inconsistent")
                submitted = off + length
                pending.append((off, length, pool.submit(self._fetch, h, length,
                                                         f"{what} at offset {off}")))
                while len(pending) > 3 * self.workers:
                    consume()
            while pending:
                consume()
        finally:
            for _, _, fut in pending:
                fut.cancel()
        _feed_zeros(digest, blob["size"] - pos)
        if digest.hexdigest() != blob["xxh3_128"]:
            raise CorruptData(f"{what}: reassembled blob checksum mismatch")

    def checkout(self, snapshot_id: str, target_dir: str | os.PathLike[str], *,
                 durable: bool = False, progress: Progress | None = None) -> SnapshotInfo:
        """Write the snapshot as a complete engine image directory `target_dir` (which must
        not exist), ready for `jupyter-ckpt restore`. Every chunk is checked against its
        hash and every blob against the image's checksum; a missing or corrupt chunk raises
        CorruptData and leaves nothing behind. Zero ranges become holes (sparse files).

        Like the engine's writer, the directory is built under a temporary sibling name and
        renamed into place. `durable` also fsyncs it first; without it a power cut can
        leave a damaged image, which restore's own checks refuse (check it out again).
        `progress(done, total)` is called as blob bytes are written."""
        sid = check_id(snapshot_id)
        target = os.path.abspath(os.fspath(target_dir))
        if os.path.lexists(target):
            raise AlreadyExists(f"{target} already exists; choose a new image directory")
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            raise StoreError(f"{parent} is not a directory")
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", suffix=".partial",
                               dir=parent)
        try:
            with self.backend.lock(LOCK, shared=True), \
                    ThreadPoolExecutor(self.workers, thread_name_prefix="ckpt-store") as pool:
                info = self._load_record(sid)
                doc = self._load_chunks(info)
                total = sum(blob["size"] for blob in doc["blobs"].values())
                done = 0
                for name, blob in doc["blobs"].items():
                    if not _BLOB_NAME.match(name) or name.startswith(".") or \
                            name == IMAGE_MANIFEST:
                        raise CorruptData(f"snapshot {info.id}: invalid blob name {name!r}")
                    fd = os.open(os.path.join(tmp, name),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    try:
                        os.ftruncate(fd, blob["size"])

                        def sink(off: int, data: bytes, fd: int = fd, base: int = done) -> None:
                            view = memoryview(data)
                            end = off + len(view)
                            while view:
                                n = os.pwrite(fd, view, off)
                                view, off = view[n:], off + n
                            if progress is not None:
                                progress(base + end, total)

                        self._read_blob(pool, info.id, name, blob, sink)
                        done += blob["size"]
                        if durable:
                            os.fsync(fd)
                    finally:
                        os.close(fd)
            with open(os.path.join(tmp, IMAGE_MANIFEST), "wb") as f:
                f.write(doc["image_manifest"].encode())
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o700)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return info

    def open_image(self, snapshot_id: str) -> "StoreImage":
        """The snapshot as the engine's restore reads an image, straight from the chunks
        (reading.py): no image directory is written. Close it once the restore returned."""
        from .reading import StoreImage

        return StoreImage(self, snapshot_id)

    def verify(self, snapshot_id: str) -> SnapshotInfo:
        """Read and check every chunk of a snapshot without writing anything; CorruptData
        names the first bad one."""
        sid = check_id(snapshot_id)
        with self.backend.lock(LOCK, shared=True), \
                ThreadPoolExecutor(self.workers, thread_name_prefix="ckpt-store") as pool:
            info = self._load_record(sid)
            doc = self._load_chunks(info)
            for name, blob in doc["blobs"].items():
                self._read_blob(pool, info.id, name, blob, None)
        return info

    # --- delete and gc ---------------------------------------------------------------

    def _referenced(self, skip: str | None = None
                    ) -> Iterable[tuple[SnapshotInfo, set[str] | None]]:
        """Every other snapshot with the set of chunks it uses (None: its chunk list cannot
        be read, so it might use any chunk)."""
        for sid in self._ids():
            if sid == skip:
                continue
            try:
                info = self._load_record(sid)
            except NotFound:
                continue
            except CorruptData:
                yield SnapshotInfo(sid, "", "", {}, {}, 0, 0, 0, 0, 0, 0, 0), None
                continue
            try:
                doc = self._load_chunks(info)
                yield info, {e[2] for b in doc["blobs"].values() for e in b["chunks"]}
            except CorruptData:
                yield info, None

    def delete(self, snapshot_id: str, *, timeout: float | None = None) -> int:
        """Remove a snapshot and free the chunks no other snapshot uses; returns the bytes
        freed. Waits (up to `timeout` seconds, else LockTimeout) for puts, checkouts and
        verifies in progress, which may be using those chunks."""
        sid = check_id(snapshot_id)
        with self.backend.lock(LOCK, shared=False, timeout=timeout):
            try:
                info = self._load_record(sid)
            except CorruptData:  # no record to go by: remove it, leave the rest to gc
                freed = self.backend.size(_record_key(sid)) or 0
                self.backend.delete(_record_key(sid))
                return freed
            try:
                doc = self._load_chunks(info)
                mine = {e[2]: e[3] for b in doc["blobs"].values() for e in b["chunks"]}
            except CorruptData:
                mine = None  # no chunk list to go by: leave the chunks to gc
            freed = self.backend.size(_record_key(sid)) or 0
            self.backend.delete(_record_key(sid))  # from here on the snapshot is gone
            if mine is not None:
                for _, keys in self._referenced(skip=sid):
                    if keys is None:  # cannot tell what it uses: free nothing, gc refuses too
                        mine = {}
                        break
                    for h in keys & mine.keys():
                        del mine[h]
                    if not mine:
                        break
                for h, stored in mine.items():
                    if self.backend.delete(_chunk_key(h)):
                        freed += stored
            if self.backend.delete(info.chunks_object):
                freed += info.manifest_bytes
            return freed

    def gc(self, *, timeout: float | None = None) -> int:
        """Remove every chunk and chunk list that no snapshot refers to (leftovers of puts
        that died or deletes that were interrupted); returns the bytes freed."""
        with self.backend.lock(LOCK, shared=False, timeout=timeout):
            live: set[str] = set()
            live_lists: set[str] = set()
            for info, keys in self._referenced():
                if keys is None:
                    raise CorruptData(f"snapshot {info.id}: record or chunk list is unreadable; "
                                      "gc cannot tell which chunks are in use (delete that "
                                      "snapshot first)")
                live |= keys
                live_lists.add(info.chunks_object)
            freed = 0
            for key, size in list(self.backend.list("chunks/")):
                if key.rsplit("/", 1)[-1] not in live and self.backend.delete(key):
                    freed += size
            for key, size in list(self.backend.list("snapshots/")):
                if key.endswith(".chunks") and key not in live_lists and self.backend.delete(key):
                    freed += size
            self.backend.cleanup_incomplete()
            return freed

    def usage(self) -> Usage:
        chunks = chunk_bytes = manifest_bytes = 0
        for _, size in self.backend.list("chunks/"):
            chunks += 1
            chunk_bytes += size
        for _, size in self.backend.list("snapshots/"):
            manifest_bytes += size
        infos = []
        for sid in self._ids():
            try:
                infos.append(self._load_record(sid))
            except NotFound:
                continue
        return Usage(snapshots=len(infos), chunks=chunks, chunk_bytes=chunk_bytes,
                     manifest_bytes=manifest_bytes,
                     logical_bytes=sum(i.logical_bytes for i in infos))


def _feed_zeros(digest: "xxhash.xxh3_128", n: int) -> None:
    while n > 0:
        step = min(n, len(_ZEROS_VIEW))
        digest.update(_ZEROS_VIEW[:step])
        n -= step

