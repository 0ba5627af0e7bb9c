"""REST API under /api/ckpt, behind Jupyter Server's authentication and authorization."""
from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .. import engine
from .service import CheckpointService, Conflict, NotFound

AUTH_RESOURCE = "kernels"
_KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
_SNAPSHOT_ID = r"(?P<snapshot_id>[0-9a-f]{32})"


class _Base(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> CheckpointService:
        return self.settings["jupyter_ckpt_service"]

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "request body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return data

    async def guarded(self, call):
        try:
            return await call()
        except NotFound as err:
            raise web.HTTPError(404, str(err)) from None
        except (Conflict, engine.Refused, engine.RestoreConflict) as err:
            raise web.HTTPError(409, str(err)) from None
        except engine.ImageError as err:
            raise web.HTTPError(422, str(err)) from None
        except engine.CkptError as err:
            raise web.HTTPError(500, str(err)) from None

    def write_json(self, status: int, model: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(model))


class KernelSnapshotsHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        body = self.body()
        label = body.get("label") or ""
        count = body.get("execution_count")
        if not isinstance(label, str) or (count is not None and not isinstance(count, int)):
            raise web.HTTPError(400, "label must be a string and execution_count an integer")

        async def call():
            return await self.service.checkpoint(kernel_id, label, body.get("id"), count)

        self.write_json(201, await self.guarded(call))


class SnapshotsHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(200, self.service.list(self.get_argument("notebook_path", None)))


class SnapshotHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self, snapshot_id: str) -> None:
        async def call():
            return self.service.get(snapshot_id)

        self.write_json(200, await self.guarded(call))

    @web.authenticated
    @authorized
    async def delete(self, snapshot_id: str) -> None:
        async def call():
            self.service.delete(snapshot_id)

        await self.guarded(call)
        self.set_status(204)
        self.finish()


class RestoreHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self, snapshot_id: str) -> None:
        kernel_id = self.body().get("kernel_id")
        if kernel_id is not None and (not isinstance(kernel_id, str) or "/" in kernel_id):
            raise web.HTTPError(400, "kernel_id must be a kernel id")

        async def call():
            return await self.service.restore(snapshot_id, kernel_id)

        self.write_json(200, await self.guarded(call))


class OperationsHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(200, self.service.worker.active())


def handlers(base_url: str) -> list[tuple[str, type]]:
    from jupyter_server.utils import url_path_join as join

    api = join(base_url, "api", "ckpt")
    return [
        (join(api, "kernels", _KERNEL_ID, "snapshots"), KernelSnapshotsHandler),
        (join(api, "snapshots") + "/?", SnapshotsHandler),
        (join(api, "snapshots", _SNAPSHOT_ID), SnapshotHandler),
        (join(api, "snapshots", _SNAPSHOT_ID, "restore"), RestoreHandler),
        (join(api, "operations"), OperationsHandler),
    ]
