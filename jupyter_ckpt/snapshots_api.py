"""The snapshot operations, written once over a snapshot store: list, get, check, delete
(through the trash), undelete, gc, put, and fetching a snapshot for a restore. The CLI's
`snapshots` verbs and the Jupyter server (jupyter/service.py, under the REST API and the
magics) are thin adapters over `Snapshots`, so that they agree on what a store holds; the
server adds only what needs its kernels (checkpoint and restore of a kernel, scratch space).

Results are typed (`Snapshot`, `Verdict`, `BulkDelete`, `Collected`) and every failure is
a `SnapshotError` with a one-line message (NotFound, Conflict, Damaged, Foreign); the
store's own errors (e.g. LockTimeout, an unreachable bucket) pass through as StoreError.

Deleting a snapshot moves it to the trash, a marker `trash/<id>.json` holding the time, in
the store, so every server and client sharing it agrees at once: it is no longer listed
(unless the trash is asked for) nor restorable, `undelete` takes it back, and
`purge_trash` (the server, periodically; `gc`, on the command line) deletes for good what
has been there `trash_seconds`. Deleting for good removes the snapshot's notebook
(`notebooks/<id>.json`) and its marker with it.

A snapshot's record is written once; a label given later (`relabel`) is an object of its
own, `labels/<id>/<time>-<nonce>.json`, a new one for each edit (objects are never
overwritten), and the newest is the snapshot's label wherever it is shown.

Usable without Jupyter: imports the store and the engine's image schema and host check only.
"""
from __future__ import annotations

import calendar
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

from .engine import schema
from .engine.hostcheck import Difference, fatal, verdict
from .store import AlreadyExists, CorruptData, InvalidName, LockTimeout, SnapshotInfo, \
    SnapshotStore, check_id
from .store import NotFound as NotStored
from .store.reading import StoreImage
from .store.snapshots import ChunkSink

log = logging.getLogger(__name__)

TRASH_SECONDS = 600.0  # how long a deleted snapshot can be taken back, unless configured
Progress = Callable[[int, int], None]


class SnapshotError(Exception):
    """A snapshot operation that cannot be done; the message is one line for the user."""


class NotFound(SnapshotError):
    """No such snapshot (or kernel, for the server's operations): never stored, deleted, or
    in the trash when asked for outside it."""


class Conflict(SnapshotError):
    """The operation collides with the state of things (an id in use, a kernel that cannot
    be checkpointed, the store busy)."""


class Damaged(SnapshotError):
    """The snapshot is stored but cannot be used: unreadable, or not a valid image."""


class Foreign(SnapshotError):
    """The snapshot's objects belong to another user, who could have planted it."""


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot: the store's record, when it went to the trash (seconds since
    the epoch; None while it is not there) and the label given since it was stored (None:
    the record's own)."""

    info: SnapshotInfo
    deleted: float | None = None
    label: str | None = None

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def metadata(self) -> dict[str, Any]:
        return self.info.metadata

    def created(self) -> float | None:
        """When it was taken, in seconds since the epoch: a kernel snapshot's metadata says
        when the dump was, to the second, in UTC; else the store's record when it was put."""
        try:
            return calendar.timegm(time.strptime(self.metadata["created"], "%Y-%m-%dT%H:%M:%SZ"))
        except (KeyError, TypeError, ValueError):
            pass
        try:
            return datetime.fromisoformat(self.info.created).timestamp()
        except ValueError:
            return None


@dataclass(frozen=True)
class Verdict:
    """Whether a snapshot can be restored on this host: one Difference per way this host
    differs from the one it was made on (engine/hostcheck.py), fatal ones first."""

    snapshot_id: str
    differences: list[Difference]

    @property
    def restorable(self) -> bool:
        return not fatal(self.differences)


@dataclass(frozen=True)
class BulkDelete:
    """What `delete_many` did."""

    deleted: list[str] = field(default_factory=list)  # moved to the trash
    missing: list[str] = field(default_factory=list)  # named, but not there (or trashed)


@dataclass(frozen=True)
class Collected:
    """What `purge_trash` or `gc` did: the snapshots purged from the trash, and the bytes
    freed in all."""

    purged: list[str]
    freed: int


class Snapshots:
    """The operations on the snapshots of one store. `kernel_only`: see only the snapshots a
    Jupyter server took of its kernels (32 hex digits of id, with connection info): the
    store may hold others, e.g. put there with the CLI, which lack what a kernel restore
    needs. Blocking (store I/O): a server calls them off its event loop."""

    def __init__(self, store: SnapshotStore, *, kernel_only: bool = False) -> None:
        self.store = store
        self.kernel_only = kernel_only

    # ------------------------------------------------------------------ reading
    def _shown(self, info: SnapshotInfo) -> bool:
        return not self.kernel_only or (_is_hex_id(info.id) and "connection" in info.metadata)

    def _valid(self, snapshot_id: object) -> bool:
        if self.kernel_only:
            return isinstance(snapshot_id, str) and _is_hex_id(snapshot_id)
        try:
            check_id(snapshot_id)
        except InvalidName:
            return False
        return True

    def _deleted(self, snapshot_id: str) -> float | None:
        """When `snapshot_id` went to the trash, None if it is not there."""
        try:
            marker = json.loads(self.store.backend.get(_trash_key(snapshot_id)))
            return float(marker["deleted"])
        except NotStored:
            return None
        except (ValueError, KeyError, TypeError):  # not a marker of ours: trashed, as if
            return time.time()  # just now, so that no purge takes it (undelete can)

    def get(self, snapshot_id: str, *, trashed: bool = False) -> Snapshot:
        """A snapshot outside the trash (`trashed`: only in the trash)."""
        deleted = self._deleted(snapshot_id) if self._valid(snapshot_id) else None
        if self._valid(snapshot_id) and (deleted is not None) == trashed:
            try:
                info = self.store.get(snapshot_id)
            except NotStored:
                info = None
            except CorruptData as err:
                if self.kernel_only:  # cannot be told for one of ours
                    info = None
                else:
                    raise Damaged(f"snapshot {snapshot_id} is damaged: {err}") from None
            if info is not None and self._shown(info):
                return Snapshot(info, deleted, self._labels(snapshot_id).get(snapshot_id))
        if trashed:
            raise NotFound(f"no deleted snapshot {snapshot_id}")
        if deleted is not None:
            raise NotFound(f"no snapshot {snapshot_id} (it is in the trash: undelete takes "
                           "it back)")
        raise NotFound(f"no snapshot {snapshot_id}")

    def list(self, where: Mapping[str, Any] | None = None, *,
             trashed: bool = False) -> list[Snapshot]:
        """Snapshots whose metadata matches `where` (all without it), newest first, outside
        the trash (`trashed`: those in it)."""
        markers = self._trash()
        labels = self._labels()
        return [Snapshot(info, self._deleted(info.id) if info.id in markers else None,
                         labels.get(info.id))
                for info in self.store.list(where or {})
                if self._shown(info) and (info.id in markers) == trashed]

    def exists(self, snapshot_id: str) -> bool:
        """Whether a record (trashed or not) has this id: the id is taken."""
        return self._valid(snapshot_id) and self.store.exists(snapshot_id)

    def notebook(self, snapshot_id: str) -> dict[str, Any]:
        """The notebook (nbformat JSON) stored with a snapshot."""
        snapshot = self.get(snapshot_id)
        if snapshot.metadata.get("has_notebook"):
            try:
                return json.loads(self.store.backend.get(notebook_key(snapshot_id)))
            except (NotStored, ValueError):
                pass
        raise NotFound(f"no notebook stored with snapshot {snapshot_id}")

    def check(self, snapshot_id: str) -> Verdict:
        """What differs between this host and the one a snapshot was made on, from its
        image manifest alone (nothing is checked out)."""
        self.get(snapshot_id)
        try:
            manifest = self.store.manifest(snapshot_id)
        except NotStored:  # deleted meanwhile
            raise NotFound(f"no snapshot {snapshot_id}") from None
        except (CorruptData, ValueError) as err:
            raise Damaged(f"snapshot {snapshot_id} is damaged: {err}") from None
        try:
            schema.validate(manifest)
        except schema.Invalid as err:
            raise Damaged(f"snapshot {snapshot_id} holds an invalid image: {err}") from None
        return Verdict(snapshot_id, verdict(manifest))

    def _labels(self, snapshot_id: str = "") -> dict[str, str]:
        """The labels given by `relabel`, by snapshot id (of one snapshot, or of all)."""
        keys: dict[str, list[str]] = {}
        for key, _ in self.store.backend.list(_label_prefix(snapshot_id) if snapshot_id else "labels/"):
            owner = key.split("/")[1]
            if self._valid(owner):
                keys.setdefault(owner, []).append(key)
        found = {}
        for owner, theirs in keys.items():
            for key in sorted(theirs, reverse=True):  # (one deleted meanwhile: the next)
                try:
                    label = json.loads(self.store.backend.get(key))["label"]
                except (NotStored, ValueError, KeyError, TypeError):
                    continue
                if isinstance(label, str):
                    found[owner] = label
                    break
        return found

    # ------------------------------------------------------------------ restore
    def open_image(self, snapshot_id: str) -> StoreImage:
        """The snapshot, opened for the engine to restore straight from the store's chunks;
        the caller closes it once the restore returned."""
        self.get(snapshot_id)
        try:
            return self.store.open_image(snapshot_id)
        except NotStored:  # deleted meanwhile
            raise NotFound(f"no snapshot {snapshot_id}") from None
        except CorruptData as err:
            raise Damaged(f"snapshot {snapshot_id} is damaged: {err}") from None

    def checkout(self, snapshot_id: str, target_dir: str,
                 progress: Progress | None = None) -> Snapshot:
        """Write the snapshot as the engine image directory `target_dir` (for a restore
        where the engine needs one); `progress(done, total)` follows the bytes written."""
        snapshot = self.get(snapshot_id)
        try:
            self.store.checkout(snapshot_id, target_dir, progress=progress)
        except NotStored:  # deleted meanwhile
            raise NotFound(f"no snapshot {snapshot_id}") from None
        except CorruptData as err:
            raise Damaged(f"snapshot {snapshot_id} is damaged: {err}") from None
        return snapshot

    # ------------------------------------------------------------------ writing
    def put(self, image_dir: str, metadata: Mapping[str, Any] | None = None, *,
            label: str = "", snapshot_id: str | None = None, progress: Progress | None = None,
            notebook: Mapping[str, Any] | None = None, consume: bool = False,
            sink: ChunkSink | None = None) -> Snapshot:
        """Store the engine image in `image_dir` as a new snapshot, with `notebook` (nbformat
        JSON) beside it when given; `sink`: the stream its blobs went into instead of files
        (SnapshotStore.streaming). Conflict when the id is taken."""
        if notebook is not None:  # first, and only if the id is ours: a record never lacks it
            try:
                self.store.backend.put(notebook_key(check_id(snapshot_id)),
                                       json.dumps(notebook).encode(), exclusive=True)
            except AlreadyExists:
                raise Conflict(f"snapshot {snapshot_id} already exists") from None
        try:
            info = self.store.put_image(image_dir, {**(metadata or {}),
                                                    "has_notebook": notebook is not None},
                                        label=label, snapshot_id=snapshot_id,
                                        progress=progress, consume=consume, sink=sink)
        except BaseException as err:
            if notebook is not None and not isinstance(err, AlreadyExists):
                self.store.backend.delete(notebook_key(snapshot_id))
            if isinstance(err, AlreadyExists):
                raise Conflict(f"snapshot {snapshot_id} already exists") from None
            raise
        return Snapshot(info)

    def relabel(self, snapshot_id: str, label: str) -> Snapshot:
        """Give a snapshot another label (see the module docstring); older label objects go."""
        snapshot = self.get(snapshot_id)
        prefix = _label_prefix(snapshot_id)
        key = f"{prefix}{time.time_ns():020d}-{secrets.token_hex(4)}.json"
        self.store.backend.put(key, json.dumps({"label": label}).encode(), exclusive=True)
        for older, _ in list(self.store.backend.list(prefix)):
            if older < key:  # (a newer one, written meanwhile by another server, stays)
                self.store.backend.delete(older)
        return Snapshot(snapshot.info, snapshot.deleted, label)

    def delete(self, snapshot_id: str) -> Snapshot:
        """Move a snapshot to the trash (see the module docstring)."""
        snapshot = self.get(snapshot_id)
        now = time.time()
        try:
            self.store.backend.put(_trash_key(snapshot_id),
                                   json.dumps({"deleted": now}).encode(), exclusive=True)
        except AlreadyExists:  # trashed meanwhile
            raise NotFound(f"no snapshot {snapshot_id}") from None
        return Snapshot(snapshot.info, now)

    def delete_many(self, snapshot_ids: list[str] | None = None,
                    older_than: float | None = None,
                    where: Mapping[str, Any] | None = None) -> BulkDelete:
        """Move to the trash the snapshots named, or those taken more than `older_than`
        seconds ago (of those matching `where`, or all)."""
        if snapshot_ids is None:
            cutoff = time.time() - (older_than or 0)
            snapshot_ids = [s.id for s in self.list(where)
                            if s.created() is not None and s.created() < cutoff]
        result = BulkDelete()
        for snapshot_id in snapshot_ids:
            try:
                self.delete(snapshot_id)
                result.deleted.append(snapshot_id)
            except NotFound:
                result.missing.append(snapshot_id)
        return result

    def undelete(self, snapshot_id: str) -> Snapshot:
        """Take a snapshot back out of the trash (NotFound when it is not there, e.g.
        purged already)."""
        snapshot = self.get(snapshot_id, trashed=True)
        if not self.store.backend.delete(_trash_key(snapshot_id)):
            raise NotFound(f"no deleted snapshot {snapshot_id}")  # taken back meanwhile
        return Snapshot(snapshot.info)

    def delete_now(self, snapshot_id: str, *, timeout: float | None = None) -> int:
        """Delete a snapshot for good, in the trash or not, with its notebook: the bytes
        freed (the chunks no other snapshot uses). Waits `timeout` seconds at most for the
        store's lock (LockTimeout) while a put or checkout runs."""
        if not self._valid(snapshot_id):
            raise NotFound(f"no snapshot {snapshot_id}")
        try:
            info = self.store.get(snapshot_id)
        except NotStored:
            raise NotFound(f"no snapshot {snapshot_id}") from None
        except CorruptData:
            info = None  # the store removes what it can of it
        if info is not None and not self._shown(info):
            raise NotFound(f"no snapshot {snapshot_id}")
        try:
            freed = self.store.delete(snapshot_id, timeout=timeout)
        except NotStored:  # deleted meanwhile
            raise NotFound(f"no snapshot {snapshot_id}") from None
        self.store.backend.delete(notebook_key(snapshot_id))
        for key, _ in list(self.store.backend.list(_label_prefix(snapshot_id))):
            self.store.backend.delete(key)
        self.store.backend.delete(_trash_key(snapshot_id))
        return freed

    def purge_trash(self, older_than: float, *, timeout: float | None = 0) -> Collected:
        """Delete for good the snapshots trashed more than `older_than` seconds ago; those
        whose store lock stays busy past `timeout` wait for the next purge."""
        purged, freed = [], 0
        for snapshot_id in self._trash():
            deleted = self._deleted(snapshot_id)
            if deleted is None or time.time() - deleted < older_than:
                continue  # taken back meanwhile, or not long enough there
            try:
                freed += self.delete_now(snapshot_id, timeout=timeout)
            except LockTimeout:
                log.debug("purging %s: the store is busy; the next purge tries again",
                          snapshot_id)
                continue
            except NotFound:
                if self.store.exists(snapshot_id):  # not a kernel snapshot (kernel_only):
                    continue  # the CLI's gc purges it
                self.store.backend.delete(_trash_key(snapshot_id))  # only the marker was left
            purged.append(snapshot_id)
        return Collected(purged, freed)

    def gc(self, trash_seconds: float = TRASH_SECONDS, *,
           timeout: float | None = None) -> Collected:
        """Purge the trash of what has been there `trash_seconds`, then free every chunk no
        snapshot uses (leftovers of puts that died or deletes that were interrupted)."""
        purged = self.purge_trash(trash_seconds, timeout=timeout)
        return Collected(purged.purged, purged.freed + self.store.gc(timeout=timeout))

    def _trash(self) -> set[str]:
        """The ids of the snapshots in the trash (of any kind: `kernel_only` filters the
        snapshots they name)."""
        found = set()
        for key, _ in self.store.backend.list("trash/"):
            snapshot_id = key[len("trash/"):].removesuffix(".json")
            if key.endswith(".json") and self._valid(snapshot_id):
                found.add(snapshot_id)
        return found


def _is_hex_id(snapshot_id: str) -> bool:
    """A server's snapshot id: uuid4().hex."""
    return len(snapshot_id) == 32 and all(c in "0123456789abcdef" for c in snapshot_id)


def _trash_key(snapshot_id: str) -> str:
    return f"trash/{snapshot_id}.json"


def _label_prefix(snapshot_id: str) -> str:
    return f"labels/{snapshot_id}/"


def notebook_key(snapshot_id: str) -> str:
    return f"notebooks/{snapshot_id}.json"
