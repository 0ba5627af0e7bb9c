"""Automatic snapshots before each cell, and "undo last cell".

Opt-in (CheckpointConfig.auto_snapshot, or each user's Lab setting through PUT
/api/ckpt/auto). Done in the server, so that it works for every kernel and every frontend:
the kernel websocket's connection class is replaced by a subclass that holds back a cell's
execute_request (one that is not silent and stores history), snapshots the kernel, and
forwards the request as soon as the kernel is released from the snapshot's freeze (memory is
then copied; what follows, comparing with the parent and storing, runs beside the cell; the
next cell waits for it if it is not done by then). Every message the client sends after the
held one waits behind it, so their order is kept. Whether or not automatic snapshots are on,
the connection tells the provisioner of each execute_request that stores no history before
the kernel gets it: such a request is no cell, whose count or run a snapshot should record.

A cell must never be blocked or lost because of its snapshot: a refused or failed one is
logged, said once per kernel and reason in the cell's output (a stderr line), and the cell
runs. Cells queued behind a running one (Run All) get no snapshot: holding them until the one
before ends would change what the kernel does with a queue after an error (it aborts what
it already holds, not what arrives later).

Each automatic snapshot records in its metadata `auto`: the id of the cell it precedes (when
the client names it, as JupyterLab does), the request's msg_id, and `previous`, the automatic
snapshot that preceded the cell run before it on this kernel's line. "Undo last cell" restores
the latest one taken on the kernel, or, for a kernel restored from an automatic snapshot that
ran no cell since, that snapshot's `previous`: all in the store, so it holds after a server
restart. The notebook as it was just before the cell (sent by the Lab extension when the cell
is scheduled, POST /api/ckpt/kernels/ID/auto/notebook) is stored with the snapshot.

Retention keeps the newest `auto_keep` automatic snapshots of a notebook (of a kernel when it
serves none) and deletes older ones, and the oldest beyond `auto_quota` bytes stored by them;
manual snapshots are never touched.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from jupyter_server.auth.decorator import authorized
from jupyter_server.services.kernels.connection.base import (deserialize_binary_message,
                                                             deserialize_msg_from_ws_v1)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web

from .. import engine
from . import validation as check
from .handlers import _Base
from .provisioner import CkptProvisioner
from .service import CheckpointService, Conflict, NotFound
from .validation import BadRequest

log = logging.getLogger(__name__)

# the engine reports these once the kernel runs again (engine.dump; then the store's)
_THAWED_PHASES = frozenset({"comparing with parent", "committing", "storing"})
NOTEBOOK_WAIT_S = 2.0  # how long storing waits for the notebook a Lab client is sending
# how long a cell waits for the snapshot before the previous cell to be stored (the engine
# thread does one operation at a time; that snapshot is also the new one's `previous`)
STORING_WAIT_S = 30.0
_NOTEBOOKS_KEPT = 8
_ANSWERED_KEPT = 16  # notebooks waiting per kernel (cells scheduled, not yet snapshotted)
_V1 = "v1.kernel.websocket.jupyter.org"


@dataclass
class ExecuteRequest:
    msg_id: str
    cell_id: str | None
    header: dict[str, Any]
    in_history: bool  # neither silent nor with store_history false: a cell


class AutoSnapshots:
    """The server's automatic snapshots: settings, the snapshot before each cell, undo."""

    def __init__(self, service: CheckpointService, enabled: bool, keep: int, quota: int):
        self.service = service
        self.default = enabled
        self.override: bool | None = None  # a user's choice (PUT /api/ckpt/auto)
        self.keep, self.quota = keep, quota
        # per kernel: (its provisioner, its pid, the latest automatic snapshot taken on it)
        self._last: dict[str, tuple[Any, int, str]] = {}
        self._reported: set[tuple[str, str]] = set()  # (kernel id, reason) said to a client
        self._notebooks: dict[str, collections.OrderedDict[str, dict[str, Any]]] = {}
        self._notebook_clients: set[str] = set()  # kernels whose client sends notebooks
        self._arrived = threading.Condition()
        self._storing: dict[str, asyncio.Future[dict[str, Any]]] = {}  # by kernel id
        self.connections: dict[str, weakref.WeakSet[Any]] = collections.defaultdict(weakref.WeakSet)
        # per kernel, the msg_ids of the latest execute_requests answered through them
        self.answered: dict[str, collections.deque[str]] = collections.defaultdict(
            lambda: collections.deque(maxlen=_ANSWERED_KEPT))

    @property
    def enabled(self) -> bool:
        return self.default if self.override is None else self.override

    def settings(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "server_default": self.default,
                "override": self.override, "keep": self.keep, "quota_bytes": self.quota}

    # ------------------------------------------------------------------ before a cell
    def _provisioner(self, kernel_id: str) -> CkptProvisioner | None:
        if kernel_id not in self.service.kernels:
            return None
        provisioner = self.service.kernels.get_kernel(kernel_id).provisioner
        return provisioner if isinstance(provisioner, CkptProvisioner) else None

    def busy(self, kernel_id: str) -> bool:
        """Whether the kernel runs a cell or has one queued: one sent through our websockets
        and not answered, or one the kernel's IOPub says runs (from another client; the
        provisioner hears its end a moment after our websockets hear its reply)."""
        if any(connection.outstanding for connection in self.connections[kernel_id]):
            return True
        provisioner = self._provisioner(kernel_id)
        running = provisioner.running_cell if provisioner is not None else None
        return running is not None and running["msg_id"] not in self.answered[kernel_id]

    async def before_cell(self, kernel_id: str, request: ExecuteRequest) -> str | None:
        """Snapshot the kernel before `request` runs; return once its freeze is over (or the
        snapshot failed): None, or the line to show the client about a failure."""
        provisioner = self._provisioner(kernel_id)
        if provisioner is None or not provisioner.pid:
            return None
        storing = self._storing.get(kernel_id)
        if storing is not None and not storing.done():  # the previous cell's, still stored
            await asyncio.wait({storing}, timeout=STORING_WAIT_S)
        if self.service.worker.active():  # the cell would wait for another engine operation
            log.info("jupyter-ckpt: kernel %s: no automatic snapshot before cell %s: another "
                     "snapshot operation runs", kernel_id, request.msg_id)
            return None
        loop = asyncio.get_running_loop()
        thawed = asyncio.Event()

        def on_phase(phase: str) -> None:  # (on the engine thread)
            if phase in _THAWED_PHASES:
                loop.call_soon_threadsafe(thawed.set)

        auto = {"cell_id": request.cell_id, "msg_id": request.msg_id,
                "previous": await self.undo_target(kernel_id)}
        started = time.monotonic()
        task = asyncio.ensure_future(self.service.checkpoint(
            kernel_id, auto=auto, notebook=self._notebook_for(kernel_id, request.cell_id),
            on_phase=on_phase))
        waiter = asyncio.ensure_future(thawed.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        log.debug("jupyter-ckpt: kernel %s: cell %s held %.1f ms for its snapshot", kernel_id,
                  request.msg_id, (time.monotonic() - started) * 1000)
        if task.done():
            return self._finished(kernel_id, provisioner, task)
        self._storing[kernel_id] = task
        task.add_done_callback(lambda done: self._finished(kernel_id, provisioner, done))
        return None

    def _finished(self, kernel_id: str, provisioner: CkptProvisioner,
                  task: asyncio.Future[dict[str, Any]]) -> str | None:
        """Record a stored snapshot and prune, or log a failure: the line for the client the
        first time this reason is seen on this kernel."""
        if self._storing.get(kernel_id) is task:
            del self._storing[kernel_id]
        error = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if error is None:
            model = task.result()
            self._last[kernel_id] = (provisioner, provisioner.pid, model["id"])
            asyncio.ensure_future(self.prune(model))
            return None
        reason = str(error) or type(error).__name__
        log.warning("jupyter-ckpt: kernel %s: no automatic snapshot before this cell (it runs "
                    "anyway): %s", kernel_id, reason)
        if (kernel_id, reason) in self._reported:
            return None
        self._reported.add((kernel_id, reason))
        kind = "refused" if isinstance(error, (engine.Refused, engine.Unsupported)) else "failed"
        return (f"jupyter-ckpt: the automatic snapshot before this cell {kind} (the cell runs "
                f"anyway; \"Undo last cell\" cannot go back past it): {reason}")

    # ------------------------------------------------------------------ notebooks
    def notebook_arrived(self, kernel_id: str, cell_id: str, notebook: dict[str, Any]) -> None:
        """A client's notebook as it is just before cell `cell_id` runs."""
        with self._arrived:
            self._notebook_clients.add(kernel_id)
            waiting = self._notebooks.setdefault(kernel_id, collections.OrderedDict())
            waiting[cell_id] = notebook
            waiting.move_to_end(cell_id)
            while len(waiting) > _NOTEBOOKS_KEPT:
                waiting.popitem(last=False)
            self._arrived.notify_all()

    def _notebook_for(self, kernel_id: str,
                      cell_id: str | None) -> Callable[[], dict[str, Any] | None] | None:
        """What storing the snapshot calls (on the engine thread, once the kernel runs again)
        for the notebook of cell `cell_id`: waits for it a moment if this kernel's client is
        one that sends notebooks (it sends it as the cell is scheduled)."""
        if cell_id is None:
            return None

        def take() -> dict[str, Any] | None:
            deadline = time.monotonic() + NOTEBOOK_WAIT_S
            with self._arrived:
                while True:
                    waiting = self._notebooks.get(kernel_id) or {}
                    if cell_id in waiting:
                        return waiting.pop(cell_id)
                    left = deadline - time.monotonic()
                    if kernel_id not in self._notebook_clients or left <= 0:
                        return None
                    self._arrived.wait(left)

        return take

    # ------------------------------------------------------------------ undo
    async def undo_target(self, kernel_id: str) -> str | None:
        """The automatic snapshot taken just before the last cell this kernel ran (see the
        module docstring), if it is still stored and that cell was the only one since (its
        execution count one below the kernel's: a cell run without a snapshot, e.g. while
        automatic snapshots were off, leaves nothing to undo to)."""
        provisioner = self._provisioner(kernel_id)
        if provisioner is None:
            return None
        storing = self._storing.get(kernel_id)
        if storing is not None:  # the latest may be that one
            await asyncio.wait({storing})
        count = provisioner.execution_count or 0
        last = self._last.get(kernel_id)
        try:
            if last is not None and last[0] is provisioner and last[1] == provisioner.pid:
                candidate: str | None = last[2]
            elif provisioner.restored_from is not None:
                origin = await self._get(provisioner.restored_from)
                if (origin.get("execution_count") or 0) != count:  # cells ran since
                    return None
                candidate = (origin.get("auto") or {}).get("previous")
            else:
                return None
            if candidate is None:
                return None
            # (deleted by retention or by hand: NotFound)
            before = (await self._get(candidate)).get("execution_count") or 0
        except NotFound:
            return None
        return candidate if before + 1 == count else None

    async def _get(self, snapshot_id: str) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.service.get, snapshot_id)

    async def undo(self, kernel_id: str) -> dict[str, Any]:
        """Restore the kernel (under its id) to just before its last cell."""
        target = await self.undo_target(kernel_id)
        if target is None:
            raise Conflict(f"kernel {kernel_id} has no automatic snapshot before its last cell")
        result = await self.service.restore(target, kernel_id)
        return {**result, "snapshot": self.service.get(target)}

    # ------------------------------------------------------------------ retention
    async def prune(self, newest: dict[str, Any]) -> None:
        try:
            gone = await asyncio.get_running_loop().run_in_executor(None, self._prune, newest)
        except Exception as err:  # the next snapshot prunes again
            log.warning("jupyter-ckpt: pruning automatic snapshots: %s", err)
            return
        if gone:
            log.info("jupyter-ckpt: automatic snapshots deleted (auto_keep %d, auto_quota %d "
                     "bytes): %s", self.keep, self.quota, " ".join(gone))

    def _prune(self, newest: dict[str, Any]) -> list[str]:
        """Delete the automatic snapshots of `newest`'s notebook (or kernel) beyond
        auto_keep and auto_quota, oldest first; the ids deleted. Blocking."""
        catalog = self.service.catalog
        path = newest.get("notebook_path")
        autos = [m for m in self.service.list(path) if m.get("auto")
                 and (path is not None or m.get("kernel_id") == newest.get("kernel_id"))]
        doomed, stored = [], 0
        for index, meta in enumerate(autos):  # newest first
            stored += meta.get("stored_bytes") or 0
            if index >= self.keep or (index > 0 and self.quota and stored > self.quota):
                doomed.append(meta["id"])
        for snapshot_id in doomed:
            try:
                catalog.delete_now(snapshot_id)
            except NotFound:
                pass
            except Exception as err:  # (the store's lock is busy): the trash purges it later
                log.info("jupyter-ckpt: automatic snapshot %s goes through the trash: %s",
                         snapshot_id, err)
                self.service.snapshots.delete(snapshot_id)
        return doomed


# ---------------------------------------------------------------------- the websocket
class AutoSnapshotConnection:
    """Mixed into the server's kernel websocket connection class (see install)."""

    outstanding: set[str]  # msg_ids of execute_requests sent on, not answered yet
    _held: collections.deque[Any] | None = None

    @property
    def _auto(self) -> AutoSnapshots | None:
        return self.websocket_handler.settings.get("jupyter_ckpt_auto")

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        if self._held is not None:  # behind a cell waiting for its snapshot
            self._held.append(incoming_msg)
            return
        self._pass(incoming_msg)

    def _pass(self, incoming_msg: Any) -> None:
        auto = self._auto
        request = self._execute_request(incoming_msg)
        if request is not None and not request.in_history:
            provisioner = getattr(self.kernel_manager, "provisioner", None)
            if isinstance(provisioner, CkptProvisioner):
                provisioner.outside_history(request.msg_id)
            request = None
        if request is None or auto is None or not auto.enabled:
            super().handle_incoming_message(incoming_msg)
            return
        if not hasattr(self, "outstanding"):
            self.outstanding = set()
            auto.connections[self.kernel_id].add(self)
        if auto.busy(self.kernel_id):  # queued behind a running cell: no snapshot
            self.outstanding.add(request.msg_id)
            super().handle_incoming_message(incoming_msg)
            return
        self._held = collections.deque([incoming_msg])
        task = asyncio.ensure_future(auto.before_cell(self.kernel_id, request))
        task.add_done_callback(lambda done: self._release(done, request))

    def _release(self, done: asyncio.Future[str | None], request: ExecuteRequest) -> None:
        """Send on the held cell, and what came after it (until a cell to snapshot)."""
        try:
            said = done.result()
        except Exception as err:  # never lose the cell
            log.error("jupyter-ckpt: kernel %s: automatic snapshot: %s", self.kernel_id, err)
            said = None
        if said and self.channels:
            self.write_stderr(said, request.header)
        held, self._held = self._held, None
        first = held.popleft()
        self.outstanding.add(request.msg_id)
        super().handle_incoming_message(first)
        while held and self._held is None:
            self._pass(held.popleft())
        if held:  # a later cell is held now: the rest waits behind it
            self._held.extend(held)

    def _execute_request(self, incoming_msg: Any) -> ExecuteRequest | None:
        """The message as an execute_request (a cell to snapshot before when in_history),
        or None."""
        try:
            if self.subprotocol == _V1:
                channel, parts = deserialize_msg_from_ws_v1(incoming_msg)
                if channel != "shell":
                    return None
                header = self.session.unpack(parts[0])
                if header.get("msg_type") != "execute_request":
                    return None
                metadata, content = self.session.unpack(parts[2]), self.session.unpack(parts[3])
            else:
                msg = deserialize_binary_message(incoming_msg) if isinstance(incoming_msg, bytes) \
                    else json.loads(incoming_msg)
                if msg.get("channel") not in ("shell", None):
                    return None
                header, metadata, content = msg["header"], msg.get("metadata") or {}, msg["content"]
                if header.get("msg_type") != "execute_request":
                    return None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None  # the server's own handling says what is wrong with it
        silent = bool(content.get("silent"))
        cell_id = metadata.get("cellId")
        return ExecuteRequest(str(header.get("msg_id")),
                              cell_id if isinstance(cell_id, str) else None, header,
                              not silent and bool(content.get("store_history", not silent)))

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        if getattr(self, "outstanding", None):
            self._note_reply(stream, outgoing_msg)
        super().handle_outgoing_message(stream, outgoing_msg)

    def _note_reply(self, stream: Any, outgoing_msg: list[Any]) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        if channel != "shell":
            return
        try:
            _, parts = self.session.feed_identities(outgoing_msg)
            if self.session.unpack(parts[1]).get("msg_type") == "execute_reply":
                msg_id = self.session.unpack(parts[2]).get("msg_id")
                if msg_id in self.outstanding:
                    self.outstanding.discard(msg_id)
                    self._auto.answered[self.kernel_id].append(msg_id)
        except (ValueError, IndexError, TypeError, AttributeError):
            pass

    def disconnect(self) -> None:
        if getattr(self, "outstanding", None):
            self.outstanding.clear()  # (a cell still running shows as the running cell)
        super().disconnect()

    def on_kernel_restarted(self) -> None:
        if getattr(self, "outstanding", None):
            self.outstanding.clear()  # a restarted kernel answers none of them
        super().on_kernel_restarted()


def install(settings: dict[str, Any]) -> bool:
    """Put the mixin into the server's kernel websocket connection class: False (and no
    automatic snapshots) when it is not the ZMQ one (a gateway's kernels are elsewhere)."""
    base = settings.get("kernel_websocket_connection_class")
    if not (isinstance(base, type) and issubclass(base, ZMQChannelsWebsocketConnection)):
        return False
    settings["kernel_websocket_connection_class"] = type(
        f"AutoSnapshot{base.__name__}", (AutoSnapshotConnection, base), {})
    return True


# ---------------------------------------------------------------------- REST
class _AutoBase(_Base):
    @property
    def auto(self) -> AutoSnapshots:
        return self.settings["jupyter_ckpt_auto"]


def _enabled(value: Any, field: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise BadRequest(field, f"must be true, false or null, not {type(value).__name__}")
    return value


class AutoSettingsHandler(_AutoBase):
    """Whether automatic snapshots are on: GET; PUT {"enabled": true|false|null} overrides
    the server's default (null: back to it)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        async def call():
            return self.auto.settings()

        await self.respond(200, call)

    @web.authenticated
    @authorized
    async def put(self) -> None:
        async def call():
            self.auto.override = check.json_object(self.request.body,
                                                   {"enabled": _enabled})["enabled"]
            return self.auto.settings()

        await self.respond(200, call)


class AutoNotebookHandler(_AutoBase):
    """The client's notebook just before cell `cell_id` runs, stored with its snapshot."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        async def call():
            kernel = self.auto.service.kernel_id(kernel_id)
            body = check.json_object(self.request.body,
                                     {"cell_id": check.cell_id, "notebook": check.notebook})
            if kernel not in self.auto.service.kernels:
                raise NotFound(f"no running kernel {kernel}")
            if body["notebook"] is None:
                raise BadRequest("notebook", "is missing")
            self.auto.notebook_arrived(kernel, body["cell_id"], body["notebook"])

        await self.respond(204, call)


class UndoHandler(_AutoBase):
    """GET: the automatic snapshot "Undo last cell" would restore ({"snapshot": null} when
    none); POST: restore it, the kernel keeping its id."""

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        async def call():
            kernel = self.auto.service.kernel_id(kernel_id)
            if kernel not in self.auto.service.kernels:
                raise NotFound(f"no running kernel {kernel}")
            target = await self.auto.undo_target(kernel)
            return {"snapshot": None if target is None else self.auto.service.get(target)}

        await self.respond(200, call)

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        async def call():
            kernel = self.auto.service.kernel_id(kernel_id)
            check.json_object(self.request.body, {})
            if kernel not in self.auto.service.kernels:
                raise NotFound(f"no running kernel {kernel}")
            return await self.auto.undo(kernel)

        await self.respond(200, call)


def rest_handlers(api: str, kernel: str) -> list[tuple[str, type]]:
    """The routes under `api` (/api/ckpt), `kernel` being the pattern of a kernel id."""
    from jupyter_server.utils import url_path_join as join

    return [(join(api, "auto"), AutoSettingsHandler),
            (join(api, "kernels", kernel, "auto", "notebook"), AutoNotebookHandler),
            (join(api, "kernels", kernel, "undo"), UndoHandler)]

