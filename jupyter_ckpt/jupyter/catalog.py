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

Listing, deleting (through the trash), undeleting, the host verdict: the operations every
front end shares (snapshots_api.Snapshots, `catalog.snapshots`, which sees only kernel
snapshots). What is the server's alone is here: its scratch, a checkpoint's ingest, and
handing the engine only the user's own snapshots (_check_owner).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from jupyter_core.paths import jupyter_data_dir

from ..snapshots_api import Foreign, NotFound, Snapshot, Snapshots, notebook_key
from ..store import NotFound as StoreNotFound
from ..store import SnapshotStore, open_store
from ..store.reading import StoreImage
from ..store.snapshots import ChunkSink

_ID = re.compile(r"^[0-9a-f]{32}$")
PUBLIC_FIELDS = ("id", "label", "kernel_id", "kernel_name", "notebook_path", "created",
                 "size_bytes", "stored_bytes", "execution_count", "freeze_ms", "bytes_logical",
                 "host", "running_cell", "has_notebook", "parent", "auto")
_STORE_LABEL_MAX = 1000  # the store's own limit; the full label stays in the metadata


def default_root() -> str:
    return os.environ.get("JUPYTER_CKPT_DIR") or os.path.join(jupyter_data_dir(), "ckpt")


@dataclass
class SnapshotCatalog:
    root: str  # this host's own directory: scratch space, and the store unless `store_url`
    store_url: str = ""  # a store elsewhere (a path or s3://bucket/prefix), "" for <root>/store
    snapshots: Snapshots = field(init=False)

    def __post_init__(self) -> None:
        os.makedirs(self._scratch_root, mode=0o700, exist_ok=True)
        self.snapshots = Snapshots(open_store(self.store_url or os.path.join(self.root, "store")),
                                   kernel_only=True)
        self._sweep_scratch()

    @property
    def store(self) -> SnapshotStore:
        return self.snapshots.store

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
            notebook: Mapping[str, Any] | Callable[[], Mapping[str, Any] | None] | None = None
            ) -> Snapshot:
        """Take a snapshot: `dump(image_dir, sink)` writes the engine image's manifest (into
        scratch) and its blobs into `sink`, which stores them as they come, and returns
        metadata only known afterwards; the snapshot is then made (Snapshots.put) with all
        the metadata and `notebook` (nbformat JSON, or a function giving it or None once the
        dump is done), and the scratch removed, whatever happened. A dump that fails leaves
        no snapshot (its chunks are the store's gc's). Blocking: call it off the event loop.
        Conflict if the id got taken meanwhile."""
        scratch = self._new_scratch("dump")
        try:
            image = os.path.join(scratch, "image")
            with self.store.streaming() as sink:
                meta = {**metadata, **dump(image, sink), "id": snapshot_id}
                if callable(notebook):
                    notebook = notebook()
                return self.snapshots.put(image, meta, label=meta["label"][:_STORE_LABEL_MAX],
                                          snapshot_id=snapshot_id, progress=progress,
                                          notebook=notebook, consume=True, sink=sink)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def exists(self, snapshot_id: str) -> bool:
        return self.snapshots.exists(snapshot_id)

    def notebook(self, snapshot_id: str) -> dict[str, Any]:
        """The notebook stored with a snapshot, only if it is the user's own (see
        _check_owner): a client puts it into a notebook."""
        snapshot = self.snapshots.get(snapshot_id)
        if snapshot.metadata.get("has_notebook"):
            self._check_owner(snapshot, notebook_key(snapshot_id))
        return self.snapshots.notebook(snapshot_id)

    def delete_now(self, snapshot_id: str) -> None:
        """Remove a snapshot for good, not through the trash (retention of automatic
        snapshots). It does not wait for the store lock: while a checkpoint is being stored
        or a snapshot checked out, the store's LockTimeout says to try again later."""
        self.snapshots.delete_now(snapshot_id, timeout=0)

    def checkout(self, snapshot_id: str,
                 progress: Callable[[int, int], None] | None = None) -> str:
        """Write the snapshot's image into a fresh scratch directory and return its path;
        the caller hands it to the engine and then calls `release`. Blocking: call it off
        the event loop. Only the user's own snapshots are checked out (see _check_owner).
        `progress(done, total)` follows the bytes written."""
        self._check_owner(self.snapshots.get(snapshot_id))
        scratch = self._new_scratch("restore")
        image = os.path.join(scratch, "image")
        try:
            self.snapshots.checkout(snapshot_id, image, progress=progress)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return image

    def open_image(self, snapshot_id: str) -> StoreImage:
        """The snapshot, opened for the engine to restore straight from the store (no
        scratch); the caller closes it once the restore returned. Blocking: call it off the
        event loop. Only the user's own snapshots (see _check_owner)."""
        self._check_owner(self.snapshots.get(snapshot_id))
        return self.snapshots.open_image(snapshot_id)

    def _check_owner(self, snapshot: Snapshot, *more: str) -> None:
        """Refuse a snapshot whose record or chunk list (or `more` of its objects, such as
        its notebook) another user owns, as the engine refuses an image directory another
        user owns: the checkout we hand the engine is always ours, so this is where a
        snapshot planted by someone else is caught. (The image manifest's owner uid, checked
        by the engine too, is only what its writer claimed.) In an object store, whoever may
        write the bucket may write snapshots: the bucket's access control is what this check
        is on a shared directory."""
        info = snapshot.info
        for key in (f"snapshots/{info.id}.json", info.chunks_object, *more):
            try:
                uid = self.store.backend.owner(key)
            except StoreNotFound:  # deleted meanwhile
                raise NotFound(f"no snapshot {info.id}") from None
            if uid is not None and uid != os.getuid():
                raise Foreign(f"snapshot {info.id} belongs to uid {uid}, not to you "
                              f"(uid {os.getuid()})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def model(snapshot: Snapshot) -> dict[str, Any]:
    """The full (private) model of a kernel snapshot: its metadata plus the store's sizes,
    with the label given later (Snapshots.relabel) if any."""
    found = {**snapshot.metadata, "size_bytes": snapshot.info.logical_bytes,
             "stored_bytes": snapshot.info.new_bytes}
    if snapshot.label is not None:
        found["label"] = snapshot.label
    return found


def public(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot model the REST API shows (no connection secrets)."""
    meta = model(snapshot)
    return {key: meta.get(key) for key in PUBLIC_FIELDS}
