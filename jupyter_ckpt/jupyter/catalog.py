"""Where a user's kernel snapshots live, with what a notebook needs to know about them.

A snapshot is an engine image plus a metadata record (id, label, kernel, notebook path,
times, execution count, the cell running when it was taken, the snapshot its kernel was
restored from, and the kernel's connection info, kept private because it holds the kernel's
signing key), and, when the client sent it, the notebook's cells and outputs as they were
(nbformat JSON, a separate object `notebooks/<id>.json` beside the record, so that listing
snapshots does not read notebooks). Both are kept in one SnapshotStore per user (<root>/store, or
any store URL such as s3://bucket/prefix, shared by the servers of several hosts), so
memory that several snapshots share — of the same kernel or of different ones — is stored
once, zero pages not at all, and the rest compressed.

A checkpoint streams the dump's blobs into the store as the engine writes them (chunked,
compressed, deduplicated on the way: no image is written and read back); only the image
manifest passes through a scratch directory (<root>/tmp). A restore reads the snapshot
straight from the store (`open_image`), or, where the engine needs a directory (a restore
in a helper process, without CAP_CHECKPOINT_RESTORE), gets a checkout in scratch. Scratch
is on the store's filesystem, not in /tmp (often RAM), and is removed as soon as the engine
is done with it.

Deleting a snapshot moves it to the trash (a marker `trash/<id>.json` with the time, in the
store, so every server and client sharing it agrees at once): it is no longer listed nor
restorable, `undelete` takes it back, and `purge_trash` deletes for good what has been
there long enough (the server does so periodically).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from jupyter_core.paths import jupyter_data_dir

from ..engine import ImageError, schema
from ..engine.hostcheck import Difference, verdict
from ..store import (AlreadyExists, CorruptData, LocalBackend, LockTimeout, NotFound,
                     SnapshotInfo, SnapshotStore, open_store)
from ..store.reading import StoreImage
from ..store.snapshots import ChunkSink

_ID = re.compile(r"^[0-9a-f]{32}$")
PUBLIC_FIELDS = ("id", "label", "kernel_id", "kernel_name", "notebook_path", "created",
                 "size_bytes", "stored_bytes", "execution_count", "freeze_ms", "bytes_logical",
                 "host", "running_cell", "has_notebook", "parent")
_STORE_LABEL_MAX = 1000  # the store's own limit; the full label stays in the metadata


class UnknownSnapshot(KeyError):
    pass


def default_root() -> str:
    return os.environ.get("JUPYTER_CKPT_DIR") or os.path.join(jupyter_data_dir(), "ckpt")


@dataclass
class SnapshotCatalog:
    root: str  # this host's own directory: scratch space, and the store unless `store_url`
    store_url: str = ""  # a store elsewhere (a path or s3://bucket/prefix), "" for <root>/store
    store: SnapshotStore = field(init=False)

    def __post_init__(self) -> None:
        os.makedirs(self._scratch_root, mode=0o700, exist_ok=True)
        self.store = open_store(self.store_url or os.path.join(self.root, "store"))
        self._sweep_scratch()

    @property
    def _scratch_root(self) -> str:
        return os.path.join(self.root, "tmp")

    @staticmethod
    def valid_id(snapshot_id: str) -> bool:
        return bool(_ID.match(snapshot_id or ""))

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    # ------------------------------------------------------------------ scratch
    def _new_scratch(self, kind: str) -> str:
        """A fresh scratch directory; its name starts with our PID so that a later server
        can tell the leftovers of a dead one (see _sweep_scratch) from a live one's."""
        return tempfile.mkdtemp(prefix=f"{os.getpid()}.{kind}.", dir=self._scratch_root)

    def release(self, image: str) -> None:
        """Remove the scratch directory holding `image` (from `checkout`)."""
        shutil.rmtree(os.path.dirname(image), ignore_errors=True)

    def _sweep_scratch(self) -> None:
        """Remove scratch left by servers that died mid-operation (images are large).
        Another live server may share this root: its directories stay."""
        for name in os.listdir(self._scratch_root):
            pid = name.split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(os.path.join(self._scratch_root, name), ignore_errors=True)

    # ------------------------------------------------------------------ snapshots
    def add(self, snapshot_id: str, metadata: Mapping[str, Any],
            dump: Callable[[str, ChunkSink], Mapping[str, Any]],
            progress: Callable[[int, int], None] | None = None,
            notebook: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Take a snapshot: `dump(image_dir, sink)` writes the engine image's manifest (into
        scratch) and its blobs into `sink`, which stores them as they come, and returns
        metadata only known afterwards; the snapshot is then made with all the metadata and
        the scratch removed, whatever happened; `notebook` (nbformat JSON) is stored beside
        it. A dump that fails leaves no snapshot (its chunks are the store's gc's). Blocking:
        call it off the event loop. Raises the store's AlreadyExists if the id got taken
        meanwhile."""
        if notebook is not None:  # first, and only if the id is ours: a record never lacks it
            self.store.backend.put(_notebook_key(snapshot_id), json.dumps(notebook).encode(),
                                   exclusive=True)
        scratch = self._new_scratch("dump")
        try:
            image = os.path.join(scratch, "image")
            with self.store.streaming() as sink:
                meta = {**metadata, **dump(image, sink), "id": snapshot_id,
                        "has_notebook": notebook is not None}
                info = self.store.put_image(image, meta, label=meta["label"][:_STORE_LABEL_MAX],
                                            snapshot_id=snapshot_id, progress=progress,
                                            consume=True, sink=sink)
        except BaseException as err:
            if notebook is not None and not isinstance(err, AlreadyExists):
                self.store.backend.delete(_notebook_key(snapshot_id))
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return _model(info)

    def notebook(self, snapshot_id: str) -> dict[str, Any]:
        """The notebook stored with a snapshot (UnknownSnapshot when it has none), only if
        it is the user's own (see _check_owner): a client puts it into a notebook."""
        info = self._info(snapshot_id)
        if not info.metadata.get("has_notebook"):
            raise UnknownSnapshot(snapshot_id)
        self._check_owner(info, _notebook_key(snapshot_id))
        try:
            return json.loads(self.store.backend.get(_notebook_key(snapshot_id)))
        except (NotFound, ValueError):
            raise UnknownSnapshot(snapshot_id) from None

    def _info(self, snapshot_id: str, trashed: bool = False) -> SnapshotInfo:
        """The store's record of a kernel snapshot (one this catalog added: the store may
        hold others, e.g. put there with the CLI, which lack what a restore needs), not
        in the trash (`trashed`: only in the trash)."""
        try:
            if self.valid_id(snapshot_id) and \
                    self.store.backend.exists(_trash_key(snapshot_id)) == trashed:
                info = self.store.get(snapshot_id)
                if _is_kernel_snapshot(info):
                    return info
        except (NotFound, CorruptData):
            pass
        raise UnknownSnapshot(snapshot_id)

    def exists(self, snapshot_id: str) -> bool:
        return self.valid_id(snapshot_id) and self.store.exists(snapshot_id)

    def get(self, snapshot_id: str) -> dict[str, Any]:
        return _model(self._info(snapshot_id))

    def list(self, notebook_path: str | None = None) -> list[dict[str, Any]]:
        """Kernel snapshots, newest first (the store's order), of one notebook or all."""
        where = {} if notebook_path is None else {"notebook_path": notebook_path}
        trashed = self._trashed()
        return [_model(info) for info in self.store.list(where)
                if _is_kernel_snapshot(info) and info.id not in trashed]

    def _trashed(self) -> dict[str, str]:
        """The ids of the snapshots in the trash, with their markers' keys."""
        found = {}
        for key, _ in self.store.backend.list("trash/"):
            snapshot_id = key[len("trash/"):].removesuffix(".json")
            if self.valid_id(snapshot_id):
                found[snapshot_id] = key
        return found

    def trash(self, snapshot_id: str) -> None:
        """Move a snapshot to the trash (see the module docstring)."""
        self._info(snapshot_id)
        try:
            self.store.backend.put(_trash_key(snapshot_id),
                                   json.dumps({"deleted": time.time()}).encode(), exclusive=True)
        except AlreadyExists:  # trashed meanwhile
            raise UnknownSnapshot(snapshot_id) from None

    def undelete(self, snapshot_id: str) -> dict[str, Any]:
        """Take a snapshot back out of the trash (UnknownSnapshot when it is not there,
        e.g. purged already)."""
        info = self._info(snapshot_id, trashed=True)
        if not self.store.backend.delete(_trash_key(snapshot_id)):
            raise UnknownSnapshot(snapshot_id)  # taken back meanwhile
        return _model(info)

    def purge_trash(self, older_than: float) -> list[str]:
        """Delete for good the snapshots trashed more than `older_than` seconds ago (those
        whose store lock is busy stay for the next purge); the ids deleted. Blocking: call
        it off the event loop."""
        purged = []
        for snapshot_id, key in self._trashed().items():
            try:
                deleted = json.loads(self.store.backend.get(key))["deleted"]
            except (NotFound, ValueError, KeyError, TypeError):
                continue  # taken back meanwhile, or not a marker of ours
            if time.time() - deleted < older_than:
                continue
            try:
                self._delete(snapshot_id)
            except LockTimeout:
                continue
            except UnknownSnapshot:
                pass  # (its record is gone already: only the marker is left)
            self.store.backend.delete(key)
            purged.append(snapshot_id)
        return purged

    def _delete(self, snapshot_id: str) -> None:
        """Remove a snapshot for good, freeing the chunks no other snapshot uses. It does
        not wait for the store lock: while a checkpoint is being stored or a snapshot
        checked out, the store's LockTimeout says to try again (at the next purge)."""
        try:
            self.store.delete(snapshot_id, timeout=0)
        except NotFound:
            raise UnknownSnapshot(snapshot_id) from None
        self.store.backend.delete(_notebook_key(snapshot_id))

    def host_verdict(self, snapshot_id: str) -> list[Difference]:
        """What differs between this host and the one a snapshot was made on, from its
        image manifest alone (nothing is checked out). Blocking: call it off the event
        loop."""
        self._info(snapshot_id)
        try:
            manifest = self.store.manifest(snapshot_id)
        except NotFound:  # deleted meanwhile
            raise UnknownSnapshot(snapshot_id) from None
        except (CorruptData, ValueError) as err:
            raise ImageError(f"snapshot {snapshot_id} is damaged: {err}") from None
        try:
            schema.validate(manifest)
        except schema.Invalid as err:
            raise ImageError(f"snapshot {snapshot_id} holds an invalid image: {err}") from None
        return verdict(manifest)

    def checkout(self, snapshot_id: str,
                 progress: Callable[[int, int], None] | None = None) -> str:
        """Write the snapshot's image into a fresh scratch directory and return its path;
        the caller hands it to the engine and then calls `release`. Blocking: call it off
        the event loop. Only the user's own snapshots are checked out (see _check_owner).
        `progress(done, total)` follows the bytes written."""
        info = self._info(snapshot_id)
        scratch = self._new_scratch("restore")
        image = os.path.join(scratch, "image")
        try:
            try:
                self._check_owner(info)
                self.store.checkout(snapshot_id, image, progress=progress)
            except NotFound:  # deleted meanwhile
                raise UnknownSnapshot(snapshot_id) from None
            except CorruptData as err:
                raise ImageError(f"snapshot {snapshot_id} is damaged: {err}") from None
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return image

    def open_image(self, snapshot_id: str) -> StoreImage:
        """The snapshot, opened for the engine to restore straight from the store (no
        scratch); the caller closes it once the restore returned. Blocking: call it off the
        event loop. Only the user's own snapshots (see _check_owner)."""
        info = self._info(snapshot_id)
        self._check_owner(info)
        try:
            return self.store.open_image(snapshot_id)
        except NotFound:  # deleted meanwhile
            raise UnknownSnapshot(snapshot_id) from None
        except CorruptData as err:
            raise ImageError(f"snapshot {snapshot_id} is damaged: {err}") from None

    def _check_owner(self, info: SnapshotInfo, *more: str) -> None:
        """Refuse a snapshot whose record or chunk list (or `more` of its objects, such as
        its notebook) another user owns, as the engine refuses an image directory another
        user owns: the checkout we hand the engine is always ours, so this is where a
        snapshot planted by someone else is caught. (The image manifest's owner uid, checked
        by the engine too, is only what its writer claimed.) In an object store, whoever may
        write the bucket may write snapshots: the bucket's access control is what this check
        is on a shared directory."""
        if not isinstance(self.store.backend, LocalBackend):
            return
        store_root = self.store.backend.root  # a LocalBackend: key "a/b" is <root>/a/b
        for key in (f"snapshots/{info.id}.json", info.chunks_object, *more):
            try:
                uid = os.stat(os.path.join(store_root, key)).st_uid
            except FileNotFoundError:  # deleted meanwhile
                raise UnknownSnapshot(info.id) from None
            if uid != os.getuid():
                raise ImageError(f"snapshot {info.id} belongs to uid {uid}, not to you "
                                 f"(uid {os.getuid()})")


def _trash_key(snapshot_id: str) -> str:
    return f"trash/{snapshot_id}.json"


def _notebook_key(snapshot_id: str) -> str:
    return f"notebooks/{snapshot_id}.json"


def _is_kernel_snapshot(info: SnapshotInfo) -> bool:
    return bool(_ID.match(info.id)) and "connection" in info.metadata


def _model(info: SnapshotInfo) -> dict[str, Any]:
    """The full (private) model of a stored snapshot: its metadata plus the store's sizes."""
    return {**info.metadata, "size_bytes": info.logical_bytes, "stored_bytes": info.new_bytes}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def public(meta: dict[str, Any]) -> dict[str, Any]:
    """The snapshot model the REST API shows (no connection secrets)."""
    return {key: meta.get(key) for key in PUBLIC_FIELDS}

