"""REST API under /api/ckpt, behind Jupyter Server's authentication and authorization.

Every input is checked (see validation.py) before the service is asked anything, and every
error reaches the client through one mapper (`ERRORS`, `error_model`) as JSON with a
one-line message and the exception's name as `reason`."""
from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .. import engine
from ..snapshots_api import Conflict, Damaged, Foreign, NotFound, SnapshotError
from ..store import BadImage, CorruptData, LockTimeout, StoreError
from . import validation as check
from .advice import refusals
from .service import CheckpointService
from .validation import BadRequest
from .worker import Cancelled, NotCancellable

log = logging.getLogger(__name__)

AUTH_RESOURCE = "kernels"
# Ids are matched loosely here and checked in the handlers, so a malformed one gets a 400
# that says what is wrong with it instead of a bare 404.
_KERNEL_ID = r"(?P<kernel_id>[^/]+)"
_SNAPSHOT_ID = r"(?P<snapshot_id>[^/]+)"

# Every exception a handler can meet -> HTTP status, first match wins. The bases come last:
# CkptError (the engine's), SnapshotError (snapshots_api), StoreError (the store's, e.g.
# an unreachable bucket), and anything else, a bug, logged with its traceback.
ERRORS: tuple[tuple[tuple[type[Exception], ...], int], ...] = (
    ((BadRequest,), 400),
    ((NotFound,), 404),
    ((Conflict, Cancelled, NotCancellable, LockTimeout, engine.Refused, engine.Unsupported,
      engine.RestoreConflict), 409),
    ((Damaged, Foreign, engine.ImageError, CorruptData, BadImage), 422),
    ((engine.CkptError, SnapshotError, StoreError), 500),
    ((Exception,), 500),
)


def error_model(err: Exception) -> tuple[int, dict[str, Any]]:
    """The status and JSON body answering `err` (see ERRORS): its message on one line, its
    class as `reason`, and what else its kind carries (the field of a bad input; for a
    refusal, what the user can do, beside the technical line: advice.py)."""
    status = next(status for kinds, status in ERRORS if isinstance(err, kinds))
    message = " ".join(str(err).splitlines()) or type(err).__name__
    model: dict[str, Any] = {"message": message, "reason": type(err).__name__}
    if isinstance(err, BadRequest):
        model["field"] = err.field
    if isinstance(err, (engine.Refused, engine.Unsupported)):
        model["refusals"] = refusals(err.blockers)
        model["kind"] = model["refusals"][0]["kind"]
        model["advice"] = model["refusals"][0]["advice"]
    return status, model


class _Base(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> CheckpointService:
        return self.settings["jupyter_ckpt_service"]

    async def respond(self, status: int, call: Callable[[], Awaitable[Any]]) -> None:
        """Run `call` and answer `status` with its result as JSON (None: no body), or the
        status and message of the error it raised."""
        try:
            result = await call()
        except Exception as err:
            code, model = error_model(err)
            expected = any(isinstance(err, kinds) for kinds, _ in ERRORS[:-1])
            log.log(logging.WARNING if expected else logging.ERROR,
                    "jupyter-ckpt: %s %s: %d %s", self.request.method, self.request.path[:200],
                    code, model["message"], exc_info=not expected)
            self._write(code, model)
            return
        self._write(status, result)

    def query(self, name: str) -> str | None:
        """A query argument as sent (tornado's get_argument would blank control characters
        out, so that the check could not see them), or None."""
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(name, "is given more than once")
        try:
            return values[0].decode()
        except UnicodeDecodeError:
            raise BadRequest(name, "is not UTF-8") from None

    def _write(self, status: int, model: Any) -> None:
        self.set_status(status)
        if model is None:
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model))


class KernelSnapshotsHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        async def call():
            body = check.json_object(self.request.body, {
                "label": check.label, "id": check.optional(check.snapshot_id),
                "execution_count": check.execution_count, "notebook": check.notebook,
                "pending_cells": check.pending_cells})
            return await self.service.checkpoint(self.service.kernel_id(kernel_id), body["label"],
                                                 body["id"], body["execution_count"],
                                                 body["notebook"], body["pending_cells"])

        await self.respond(201, call)


class KernelHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        async def call():
            return self.service.kernel(self.service.kernel_id(kernel_id))

        await self.respond(200, call)


class SnapshotsHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        async def call():
            path = self.query("notebook_path")
            kernel_id = self.query("kernel_id")
            if path is not None and kernel_id is not None:
                raise BadRequest("kernel_id", "give notebook_path or kernel_id, not both")
            if kernel_id is not None:
                return await self.service.list_for_kernel(self.service.kernel_id(kernel_id))
            return self.service.list(None if path is None else check.notebook_path(path))

        await self.respond(200, call)


class BulkDeleteHandler(_Base):
    """Move several snapshots to the trash: those in `ids`, or those taken more than
    `older_than_seconds` ago (of `notebook_path` when given). Each can be undeleted."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        async def call():
            body = check.json_object(self.request.body, {
                "ids": check.optional(check.snapshot_ids),
                "older_than_seconds": check.optional(check.age_seconds),
                "notebook_path": check.optional(check.notebook_path)})
            if (body["ids"] is None) == (body["older_than_seconds"] is None):
                raise BadRequest("ids", "give ids or older_than_seconds (one of them)")
            if body["ids"] is not None and body["notebook_path"] is not None:
                raise BadRequest("notebook_path", "goes with older_than_seconds, not with ids")
            return self.service.delete_many(body["ids"], body["older_than_seconds"],
                                            body["notebook_path"])

        await self.respond(200, call)


class SnapshotHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, snapshot_id: str) -> None:
        async def call():
            return self.service.get(check.snapshot_id(snapshot_id))

        await self.respond(200, call)

    @web.authenticated
    @authorized
    async def patch(self, snapshot_id: str) -> None:
        """Give the snapshot another label: {"label": "..."} ("" for none)."""
        async def call():
            snapshot = check.snapshot_id(snapshot_id)
            body = check.json_object(self.request.body, {"label": check.new_label})
            return self.service.relabel(snapshot, body["label"])

        await self.respond(200, call)

    @web.authenticated
    @authorized
    async def delete(self, snapshot_id: str) -> None:
        async def call():
            self.service.delete(check.snapshot_id(snapshot_id))

        await self.respond(204, call)


class UndeleteHandler(_Base):
    """Take a deleted snapshot back out of the trash (404 once it is purged)."""

    @web.authenticated
    @authorized
    async def post(self, snapshot_id: str) -> None:
        async def call():
            snapshot = check.snapshot_id(snapshot_id)
            check.json_object(self.request.body, {})
            return self.service.undelete(snapshot)

        await self.respond(200, call)


class SnapshotNotebookHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, snapshot_id: str) -> None:
        async def call():
            return self.service.notebook(check.snapshot_id(snapshot_id))

        await self.respond(200, call)


class SnapshotCheckHandler(_Base):
    """The host verdict: can this server restore the snapshot, and what differs from the
    host it was made on (one line each, `fatal` when it stops the restore)."""

    @web.authenticated
    @authorized
    async def get(self, snapshot_id: str) -> None:
        async def call():
            return await self.service.check(check.snapshot_id(snapshot_id))

        await self.respond(200, call)


class HostHandler(_Base):
    """This server's host name and kernel release, as snapshots record the host they were
    made on."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        async def call():
            return self.service.host()

        await self.respond(200, call)


class RestoreHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self, snapshot_id: str) -> None:
        async def call():
            snapshot = check.snapshot_id(snapshot_id)
            body = check.json_object(self.request.body, {"kernel_id": check.optional(
                lambda value, field: self.service.kernel_id(value, field))})
            return await self.service.restore(snapshot, body["kernel_id"])

        await self.respond(200, call)


class RestoreStatusHandler(_Base):
    """How far the latest restore of a kernel is: "ready" once it answers, "all memory in"
    once a lazy restore's memory is all there (see service.RestoreStatus)."""

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        async def call():
            return self.service.restore_status(self.service.kernel_id(kernel_id))

        await self.respond(200, call)


class OperationsHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        async def call():
            return self.service.worker.active()

        await self.respond(200, call)


class OperationHandler(_Base):
    @web.authenticated
    @authorized
    async def delete(self, operation_id: str) -> None:
        """Cancel a running checkpoint: 202 with the operation; its POST then answers 409
        (reason Cancelled) once the engine rolled back."""
        async def call():
            op = self.service.worker.cancel(check.operation_id(operation_id))
            if op is None:
                raise NotFound(f"no running operation {operation_id}")
            return op

        await self.respond(202, call)


def handlers(base_url: str) -> list[tuple[str, type]]:
    from jupyter_server.utils import url_path_join as join

    from .autosnap import rest_handlers as auto_handlers

    api = join(base_url, "api", "ckpt")
    return [
        (join(api, "kernels", _KERNEL_ID, "snapshots"), KernelSnapshotsHandler),
        (join(api, "kernels", _KERNEL_ID), KernelHandler),
        (join(api, "kernels", _KERNEL_ID, "restore"), RestoreStatusHandler),
        (join(api, "snapshots") + "/?", SnapshotsHandler),
        (join(api, "snapshots", "delete"), BulkDeleteHandler),  # (before the ids' pattern)
        (join(api, "snapshots", _SNAPSHOT_ID), SnapshotHandler),
        (join(api, "snapshots", _SNAPSHOT_ID, "restore"), RestoreHandler),
        (join(api, "snapshots", _SNAPSHOT_ID, "notebook"), SnapshotNotebookHandler),
        (join(api, "snapshots", _SNAPSHOT_ID, "check"), SnapshotCheckHandler),
        (join(api, "snapshots", _SNAPSHOT_ID, "undelete"), UndeleteHandler),
        (join(api, "host"), HostHandler),
        (join(api, "operations"), OperationsHandler),
        (join(api, "operations", r"(?P<operation_id>[^/]+)"), OperationHandler),
        *auto_handlers(api, _KERNEL_ID),
    ]
