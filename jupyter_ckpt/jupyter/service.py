"""What the REST API and the magics ask for: checkpoint a running kernel, list and delete
snapshots, and bring a snapshot back as a kernel registered with the server.

A checkpoint is an engine dump followed by storing the image in the user's snapshot store
(the catalog), both on the engine thread, never on the event loop. A restore opens the
snapshot in the store first (its manifest checked), so a snapshot that cannot be read costs
nothing, and the engine then reads memory straight from the store's chunks: lazily where
allowed (CheckpointConfig.lazy_restore, CAP_SYS_PTRACE), the kernel answering while the rest
streams in. Each restore's status ("ready", then "all memory in", or "failed") is kept for
GET /api/ckpt/kernels/ID/restore. A checkpoint of a kernel whose memory is still streaming
in waits for it.

A restore goes through the kernel manager's ordinary start_kernel() with the provisioner in
adopt mode, so sessions, activity tracking, culling and restarts treat the kernel like any
other. It is registered under the snapshot's kernel id when that id is free (an open notebook
reconnects by itself), or under the id the caller names (its current kernel is shut down
first), or, when the original still runs, as a fork: a new id, a new PID namespace, new ports.
"""
from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import engine
from ..snapshots_api import Conflict, NotFound
from ..store.snapshots import ChunkSink
from . import validation
from .catalog import SnapshotCatalog, public
from .provisioner import PENDING_RESTORES, CkptProvisioner, RestoreRequest, kill_restored
from .worker import EngineWorker

log = logging.getLogger(__name__)


@dataclass
class RestoreStatus:
    """How far a restore is: "restoring", "ready" (the kernel answered; lazily, its memory
    still streaming in), "all memory in", or "failed" (lazily: serving memory failed and
    the kernel was killed)."""

    kernel_id: str
    snapshot_id: str
    lazy: bool
    started: float = field(default_factory=time.monotonic)
    status: str = "restoring"
    message: str = ""
    seconds_to_ready: float | None = None
    seconds_to_all_in: float | None = None
    memory_in: asyncio.Event = field(default_factory=asyncio.Event)

    def ready(self) -> None:
        self.seconds_to_ready = round(time.monotonic() - self.started, 3)
        if self.status == "restoring":  # (not when memory failed, or was all in, already)
            self.status = "ready"

    def all_in(self, error: str = "") -> None:
        self.status, self.message = ("failed", error) if error else ("all memory in", "")
        self.seconds_to_all_in = round(time.monotonic() - self.started, 3)
        self.memory_in.set()

    def model(self) -> dict[str, Any]:
        return {"kernel_id": self.kernel_id, "snapshot_id": self.snapshot_id, "lazy": self.lazy,
                "status": self.status, "message": self.message,
                "seconds_to_ready": self.seconds_to_ready,
                "seconds_to_all_in": self.seconds_to_all_in}


class CheckpointService:
    def __init__(self, kernel_manager: Any, session_manager: Any, catalog: SnapshotCatalog,
                 worker: EngineWorker, lazy_restore: bool = True,
                 trash_seconds: float = 600):
        self.kernels = kernel_manager
        self.sessions = session_manager
        self.catalog = catalog
        self.snapshots = catalog.snapshots  # the operations the CLI shares (snapshots_api)
        self.worker = worker
        self.lazy_restore = lazy_restore
        self.trash_seconds = trash_seconds  # how long a deleted snapshot can be undeleted
        self.restores: dict[str, RestoreStatus] = {}  # by kernel id, the latest restore's

    def kernel_id(self, value: object, field: str = "kernel_id") -> str:
        """`value` if it names a running kernel or is an id such as the server gives its
        kernels (validation.BadRequest otherwise)."""
        if isinstance(value, str) and value in self.kernels:
            return value
        return validation.kernel_id(value, field)

    # ------------------------------------------------------------------ checkpoint
    async def checkpoint(self, kernel_id: str, label: str = "", snapshot_id: str | None = None,
                         execution_count: int | None = None,
                         notebook: dict[str, Any] | None = None,
                         pending_cells: dict[str, str] | None = None,
                         auto: dict[str, Any] | None = None,
                         on_phase: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Snapshot a kernel. `notebook` (nbformat JSON, the client's live model, or a
        function giving it once the dump is done) is stored with it; `pending_cells` maps the
        msg_id of each execute_request the client waits on to its cell's id, so that the
        snapshot names the cell of the one running now. `auto` marks an automatic snapshot
        (autosnap.py) and `on_phase` hears each phase of the engine thread's work."""
        if kernel_id not in self.kernels:
            raise NotFound(f"no running kernel {kernel_id}")
        km = self.kernels.get_kernel(kernel_id)
        provisioner = km.provisioner
        if not isinstance(provisioner, CkptProvisioner):
            raise Conflict(f"kernel {kernel_id} is not checkpointable: kernelspec "
                           f"{km.kernel_name!r} runs it with {type(provisioner).__name__}, not "
                           "ckpt-provisioner (see CheckpointConfig.every_kernel)")
        if not provisioner.pid:
            raise Conflict(f"kernel {kernel_id} has no running process to checkpoint")
        if snapshot_id is not None and (not SnapshotCatalog.valid_id(snapshot_id)
                                        or self.catalog.exists(snapshot_id)):
            raise Conflict("invalid or already used snapshot id")
        restoring = self.restores.get(kernel_id)
        if restoring is not None:  # memory still streaming in cannot be dumped (userfaultfd)
            await restoring.memory_in.wait()
        snapshot_id = snapshot_id or SnapshotCatalog.new_id()
        if execution_count is None:
            execution_count = provisioner.execution_count
        if execution_count is None:
            execution_count = await provisioner.ask_execution_count()
        connection = km.get_connection_info()
        connection["key"] = connection["key"].decode() if isinstance(connection["key"], bytes) \
            else connection["key"]
        meta = {
            "label": label,  # unlabelled: clients name it by its time and In [n]
            "kernel_id": kernel_id, "kernel_name": km.kernel_name,
            "notebook_path": await self._notebook_path(kernel_id),
            "execution_count": execution_count,
            "running_cell": _running_cell(provisioner.running_cell, pending_cells or {}),
            "parent": provisioner.position,
            "server_pid": os.getpid(),
            "connection": {k: v for k, v in connection.items() if k != "session"},
            "auto": auto,
        }
        pid = provisioner.pid

        def work(op):
            def report(phase: str, done: int, total: int) -> None:
                op.report(phase, done, total)
                if on_phase is not None:
                    on_phase(phase)

            def dump(image: str, sink: ChunkSink) -> dict[str, Any]:
                # (ZeroMQ reconnects; the store makes the snapshot durable, not this scratch)
                stats = engine.dump(pid, image, progress=report, tcp_close=True, durable=False,
                                    sink=sink)
                return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "freeze_ms": stats.get("freeze_ms"),
                        "bytes_logical": stats.get("bytes_logical"),
                        "host": engine.summarize(image)["host"]}

            def storing(done: int, total: int) -> None:
                report("storing", done, total)

            return self.catalog.add(snapshot_id, meta, dump, progress=storing, notebook=notebook)

        with provisioner.engine_working():  # (Conflict: the same id, asked for twice at once)
            snapshot = await self.worker.run("checkpoint", kernel_id, snapshot_id, work)
        provisioner.position = snapshot_id  # the parent of the kernel's next snapshot
        return public(snapshot)

    async def _notebook_path(self, kernel_id: str) -> str | None:
        if self.sessions is None:
            return None
        for session in await self.sessions.list_sessions():
            if (session.get("kernel") or {}).get("id") == kernel_id:
                return session.get("path")
        return None

    # ------------------------------------------------------------------ snapshots
    def list(self, notebook_path: str | None = None) -> list[dict[str, Any]]:
        """Kernel snapshots, newest first, of one notebook or all."""
        where = None if notebook_path is None else {"notebook_path": notebook_path}
        return [public(s) for s in self.snapshots.list(where)]

    async def list_for_kernel(self, kernel_id: str) -> list[dict[str, Any]]:
        """The snapshots of the notebook kernel `kernel_id` serves now (all of them when it
        serves none): what %checkpoints shows in that kernel."""
        if kernel_id not in self.kernels:
            raise NotFound(f"no running kernel {kernel_id}")
        path = await self._notebook_path(kernel_id)
        return self.list(path)

    def get(self, snapshot_id: str) -> dict[str, Any]:
        return public(self.snapshots.get(snapshot_id))

    async def check(self, snapshot_id: str) -> dict[str, Any]:
        """The host verdict of a snapshot (engine/hostcheck.py): whether it can be restored
        on this host, and one line per difference with this host, fatal ones first. On the
        engine thread: it reads the store and /proc, which must not block the event loop."""
        def work(op):
            op.report("checking", 0, 0)
            return self.snapshots.check(snapshot_id)

        verdict = await self.worker.run("check", None, snapshot_id, work)
        return {"restorable": verdict.restorable,
                "lines": [{"text": d.what, "fatal": d.fatal} for d in verdict.differences]}

    @staticmethod
    def host() -> dict[str, Any]:
        """This server's host, as snapshots record theirs (metadata `host`): a client
        tells the snapshots made elsewhere by it."""
        return {"hostname": platform.node(), "kernel": platform.release()}

    def notebook(self, snapshot_id: str) -> dict[str, Any]:
        """The notebook's cells and outputs as they were when the snapshot was taken."""
        return self.catalog.notebook(snapshot_id)

    def kernel(self, kernel_id: str) -> dict[str, Any]:
        """What the server knows of a running kernel's past: the snapshot it was restored
        from (None for a kernel started afresh), its position (that snapshot, or the
        latest it took since: the parent of its next one) and the cell it runs now."""
        if kernel_id not in self.kernels:
            raise NotFound(f"no running kernel {kernel_id}")
        provisioner = self.kernels.get_kernel(kernel_id).provisioner
        if not isinstance(provisioner, CkptProvisioner):
            return {"kernel_id": kernel_id, "restored_from": None, "position": None,
                    "running_cell": None}
        return {"kernel_id": kernel_id, "restored_from": provisioner.restored_from,
                "position": provisioner.position, "running_cell": provisioner.running_cell}

    def relabel(self, snapshot_id: str, label: str) -> dict[str, Any]:
        """Give a snapshot another label ("" for none)."""
        return public(self.snapshots.relabel(snapshot_id, label))

    def delete(self, snapshot_id: str) -> None:
        """Move a snapshot to the trash: `undelete` takes it back until it is purged."""
        self.snapshots.delete(snapshot_id)

    def delete_many(self, snapshot_ids: list[str] | None = None,
                    older_than: float | None = None,
                    notebook_path: str | None = None) -> dict[str, list[str]]:
        """Move to the trash the snapshots named, or those taken more than `older_than`
        seconds ago (of one notebook, or all): which went, and which named are not there."""
        where = None if notebook_path is None else {"notebook_path": notebook_path}
        result = self.snapshots.delete_many(snapshot_ids, older_than, where)
        return {"deleted": result.deleted, "missing": result.missing}

    def undelete(self, snapshot_id: str) -> dict[str, Any]:
        try:
            return public(self.snapshots.undelete(snapshot_id))
        except NotFound:
            raise NotFound(f"no deleted snapshot {snapshot_id} (it is purged after "
                           f"{self.trash_seconds:g} s)") from None

    async def purge_trash(self) -> None:
        """Delete for good what has been in the trash for trash_seconds (off the event
        loop: it frees chunks in the store)."""
        try:
            purged = await asyncio.get_running_loop().run_in_executor(
                None, self.snapshots.purge_trash, self.trash_seconds)
        except Exception as err:  # the next purge tries again
            log.warning("jupyter-ckpt: purging deleted snapshots: %s", err)
            return
        if purged.purged:
            log.info("jupyter-ckpt: deleted snapshots purged: %s", " ".join(purged.purged))

    # ------------------------------------------------------------------ restore
    async def restore(self, snapshot_id: str, kernel_id: str | None = None) -> dict[str, Any]:
        meta = self.snapshots.get(snapshot_id).metadata
        started = time.monotonic()
        can = engine.capabilities()
        # the image first: a snapshot that cannot be read costs no running kernel
        image = await self._open(snapshot_id, kernel_id or meta["kernel_id"], can["direct"])
        try:
            return await self._restore(snapshot_id, meta, image, kernel_id,
                                       self.lazy_restore and can["lazy"], started)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._release, image)

    def _release(self, image: Any) -> None:
        if isinstance(image, str):
            self.catalog.release(image)
        else:
            image.close()  # (a lazy restore's page server keeps what it still reads)

    async def _open(self, snapshot_id: str, kernel_id: str, direct: bool) -> Any:
        """The snapshot opened in the store for the engine to read (`direct`), else checked
        out into a scratch image directory; on the engine thread (so it shows in
        /operations, and never blocks the event loop)."""
        def work(op):
            if direct:
                op.report("opening", 0, 0)
                return self.catalog.open_image(snapshot_id)
            op.report("checking out", 0, 0)
            return self.catalog.checkout(
                snapshot_id, progress=lambda done, total: op.report("checking out", done, total))

        return await self.worker.run("restore", kernel_id, snapshot_id, work)

    def restore_status(self, kernel_id: str) -> dict[str, Any]:
        status = self.restores.get(kernel_id)
        if status is None:
            raise NotFound(f"no restore of kernel {kernel_id} since the server started")
        return status.model()

    async def _watch_memory(self, status: RestoreStatus, restored: engine.Restored) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, restored.wait_pages)
        except engine.CkptError as err:
            log.error("jupyter-ckpt: kernel %s: %s", status.kernel_id, err)
            status.all_in(str(err))
        else:
            status.all_in()

    async def _restore(self, snapshot_id: str, meta: dict[str, Any], image: Any,
                       kernel_id: str | None, lazy: bool, started: float) -> dict[str, Any]:
        if kernel_id is not None and kernel_id in self.kernels:
            await self.kernels.shutdown_kernel(kernel_id, now=True)
        target = kernel_id or meta["kernel_id"]
        fork = target in self.kernels
        if fork:
            target = str(uuid.uuid4())
        ports = [meta["connection"][name] for name in ("shell_port", "iopub_port", "stdin_port",
                                                       "hb_port", "control_port")]
        request = RestoreRequest(
            snapshot_id=snapshot_id, image=image, connection=meta["connection"],
            # after a server restart the kernel's parent (the old server) is gone: a stand-in
            # parent with its PID, in a new PID namespace, keeps ipykernel from exiting
            pid_ns=True if fork or meta.get("server_pid") != os.getpid() else None,
            rebind_ports=fork or not all(_port_free(meta["connection"]["ip"], p) for p in ports),
            worker=self.worker, execution_count=meta.get("execution_count"),
            running_cell=meta.get("running_cell"), lazy=lazy)
        status = RestoreStatus(target, snapshot_id, lazy, started)
        PENDING_RESTORES[target] = request
        try:
            await self.kernels.start_kernel(kernel_id=target, kernel_name=meta["kernel_name"])
        except BaseException as err:
            await self._abandon(target, request)
            if isinstance(err, engine.CkptError) or not isinstance(err, Exception):
                raise
            cause = err.__cause__ or err.__context__
            if isinstance(cause, engine.CkptError):
                raise cause from None
            raise engine.CkptError(f"restoring snapshot {snapshot_id} as kernel {target}: "
                                   f"{type(err).__name__}: {err}") from err
        finally:
            PENDING_RESTORES.pop(target, None)
        self.restores[target] = status
        restored = request.restored
        if restored is not None and restored.pages is not None:
            asyncio.ensure_future(self._watch_memory(status, restored))
        km = self.kernels.get_kernel(target)
        if isinstance(km.provisioner, CkptProvisioner) and km.provisioner.running_cell:
            await km.provisioner.connect_while_resuming()
        if isinstance(km.provisioner, CkptProvisioner) and km.provisioner.runs_ipykernel:
            await km.provisioner.tell_kernel_where()  # the kernel answers: it is ready
        status.ready()
        if restored is None or restored.pages is None:
            status.all_in()
        return {"kernel_id": target, "fork": fork, "snapshot_id": snapshot_id,
                "restore": status.model()}

    async def _abandon(self, kernel_id: str, request: RestoreRequest) -> None:
        """After a failed start: end the restored kernel, whether or not the kernel manager
        got as far as registering it, so that nothing the restore made runs on unmanaged.
        (A registered one is the kernel manager's to end: it may have reaped its processes
        already, whose PIDs must then not be signalled.)"""
        if kernel_id in self.kernels:
            await self.kernels.shutdown_kernel(kernel_id, now=True)
        elif request.restored is not None:
            await asyncio.get_running_loop().run_in_executor(None, kill_restored, request.restored)


def _running_cell(running: dict[str, Any] | None,
                  pending_cells: dict[str, str]) -> dict[str, Any] | None:
    """What a snapshot records of the cell the kernel ran when it was taken (its output
    after a restore has that execute_request as parent), with the client's id of that cell
    (None when the client did not send it: the request came from elsewhere)."""
    if running is None:
        return None
    return {**running, "cell_id": pending_cells.get(running["msg_id"])}


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
            return True
        except OSError:
            return False

