"""The REST handlers in a Jupyter Server running in this process (pytest-jupyter's jp_fetch),
beside the server-subprocess tests (test_jupyter_server.py, test_rest_validation.py): each
input check answers 400 naming the field, and each of the service's errors gets its status
from the one error mapper, with the exception's name as `reason`. The kernels are real
ipykernel processes; the checkpoint is a real one."""
from __future__ import annotations

# The plugin's fixtures for this module only: registered as a plugin, its autouse fixtures
# and call hook would apply to every test of the session.
from pytest_jupyter.jupyter_server import *  # noqa: F401,F403

import json
import uuid

import pytest
from jupyter_client.provisioning import KernelProvisionerFactory
from tornado.httpclient import HTTPClientError


@pytest.fixture
def jp_server_config(tmp_path):
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ckpt.jupyter": True}},
            "CheckpointConfig": {"snapshot_dir": str(tmp_path / "ckpt")}}


@pytest.fixture(autouse=True)
def _provisioner_default():
    """Loading the extension makes ours the default provisioner of this process's factory
    (a singleton): put the previous default back for the tests that follow."""
    factory = KernelProvisionerFactory.instance()
    before = factory.default_provisioner_name
    yield
    factory.default_provisioner_name = before


async def _answer(jp_fetch, method: str, *path: str, body=None, params=None) -> tuple[int, object]:
    kwargs = {"method": method, "raise_error": False}
    if body is not None:
        kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body)
    elif method == "POST":
        kwargs["body"] = b""
    if params:
        kwargs["params"] = params
    try:
        response = await jp_fetch(*path, **kwargs)
    except HTTPClientError as err:  # jp_fetch raises for some codes even so
        response = err.response
    text = response.body.decode() if response.body else ""
    return response.code, json.loads(text) if text else None


def test_input_errors_are_400_naming_the_field(jp_fetch, jp_asyncio_loop):
    jp_asyncio_loop.run_until_complete(_input_errors(jp_fetch))


async def _input_errors(jp_fetch):
    snapshot = "0" * 32
    cases = [
        ("POST", ("api", "ckpt", "snapshots", snapshot, "restore"), {"kernel_id": ".."}, None, "kernel_id"),
        ("POST", ("api", "ckpt", "snapshots", snapshot, "restore"), {"kernel": "x"}, None, "kernel"),
        ("POST", ("api", "ckpt", "snapshots", snapshot, "restore"), b"{not json", None, "body"),
        ("POST", ("api", "ckpt", "snapshots", "X" * 32, "restore"), {}, None, "snapshot_id"),
        ("POST", ("api", "ckpt", "kernels", "a b", "snapshots"), {}, None, "kernel_id"),
        ("POST", ("api", "ckpt", "kernels", str(uuid.uuid4()), "snapshots"), {"label": "l" * 201},
         None, "label"),
        ("POST", ("api", "ckpt", "kernels", str(uuid.uuid4()), "snapshots"), {"execution_count": "1"},
         None, "execution_count"),
        ("GET", ("api", "ckpt", "snapshots"), None, {"notebook_path": "a\x01"}, "notebook_path"),
        ("GET", ("api", "ckpt", "snapshots"), None,
         {"notebook_path": "a.ipynb", "kernel_id": str(uuid.uuid4())}, "kernel_id"),
        ("GET", ("api", "ckpt", "snapshots", "not-an-id"), None, None, "snapshot_id"),
        ("DELETE", ("api", "ckpt", "snapshots", "A" * 32), None, None, "snapshot_id"),
        ("PATCH", ("api", "ckpt", "snapshots", "A" * 32), {"label": "x"}, None, "snapshot_id"),
        ("PATCH", ("api", "ckpt", "snapshots", snapshot), {}, None, "label"),
        ("PATCH", ("api", "ckpt", "snapshots", snapshot), {"label": "l" * 201}, None, "label"),
    ]
    for method, path, body, params, field in cases:
        status, model = await _answer(jp_fetch, method, *path, body=body, params=params)
        assert (status, model["reason"], model["field"]) == (400, "BadRequest", field), (path, model)
        assert model["message"]


def test_unknown_kernels_and_snapshots_are_404(jp_fetch, jp_asyncio_loop):
    jp_asyncio_loop.run_until_complete(_unknown(jp_fetch))


async def _unknown(jp_fetch):
    snapshot, kernel = "1" * 32, str(uuid.uuid4())
    for method, path, body in [
            ("GET", ("api", "ckpt", "snapshots", snapshot), None),
            ("DELETE", ("api", "ckpt", "snapshots", snapshot), None),
            ("PATCH", ("api", "ckpt", "snapshots", snapshot), {"label": "x"}),
            ("POST", ("api", "ckpt", "snapshots", snapshot, "restore"), {}),
            ("POST", ("api", "ckpt", "kernels", kernel, "snapshots"), {}),
    ]:
        status, model = await _answer(jp_fetch, method, *path, body=body)
        assert (status, model["reason"]) == (404, "NotFound"), (path, model)
    status, model = await _answer(jp_fetch, "GET", "api", "ckpt", "snapshots", params={"kernel_id": kernel})
    assert (status, model["reason"]) == (404, "NotFound"), model
    assert await _answer(jp_fetch, "GET", "api", "ckpt", "snapshots") == (200, [])
    assert await _answer(jp_fetch, "GET", "api", "ckpt", "operations") == (200, [])


def test_checkpoint_list_conflict_and_delete_of_a_real_kernel(jp_fetch, jp_serverapp, jp_asyncio_loop):
    jp_asyncio_loop.run_until_complete(_real_kernel(jp_fetch, jp_serverapp))


async def _real_kernel(jp_fetch, jp_serverapp):
    status, kernel = await _answer(jp_fetch, "POST", "api", "kernels", body={"name": "python3"})
    assert status == 201, kernel
    try:
        snapshots = ("api", "ckpt", "kernels", kernel["id"], "snapshots")
        status, snap = await _answer(jp_fetch, "POST", *snapshots, body={"label": "first"})
        assert status == 201, snap
        assert snap["label"] == "first" and snap["kernel_id"] == kernel["id"]
        assert snap["parent"] is None
        status, relabelled = await _answer(jp_fetch, "PATCH", "api", "ckpt", "snapshots",
                                           snap["id"], body={"label": "renamed"})
        assert status == 200 and relabelled == {**snap, "label": "renamed"}, relabelled
        status, second = await _answer(jp_fetch, "POST", *snapshots, body={})
        assert status == 201 and second["parent"] == snap["id"], second
        assert await _answer(jp_fetch, "DELETE", "api", "ckpt", "snapshots", second["id"]) == (204, None)
        status, listed = await _answer(jp_fetch, "GET", "api", "ckpt", "snapshots",
                                       params={"kernel_id": kernel["id"]})
        assert status == 200 and [(s["id"], s["label"]) for s in listed] == [(snap["id"], "renamed")]
        # the same id again: the service's Conflict, mapped to 409
        status, model = await _answer(jp_fetch, "POST", *snapshots, body={"id": snap["id"]})
        assert (status, model["reason"]) == (409, "Conflict"), model
        assert await _answer(jp_fetch, "DELETE", "api", "ckpt", "snapshots", snap["id"]) == (204, None)
        status, model = await _answer(jp_fetch, "GET", "api", "ckpt", "snapshots", snap["id"])
        assert (status, model["reason"]) == (404, "NotFound"), model
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel["id"], now=True)
