"""A notebook's snapshots form a tree, through a real Jupyter Server on a local store and on a
bucket of a real SeaweedFS: a kernel's second snapshot has its first as parent, a kernel
restored from a snapshot makes a branch there, and GET kernels/ID says where the kernel is.
Labels can be changed afterwards (PATCH snapshots/ID): kept in the store, where another
catalog on it reads them; a bad request changes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import new_bucket, run_cli
from jupyter_server_harness import KernelSocket, Server
from test_jupyter_server import checkpoint, restore

from jupyter_ckpt.jupyter.catalog import SnapshotCatalog


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return f"s3://{new_bucket(request.getfixturevalue('seaweedfs'))}/store"


def origin(server: Server, kernel_id: str) -> dict:
    status, model = server.request("GET", f"api/ckpt/kernels/{kernel_id}")
    assert status == 200, model
    return model


def relabel(server: Server, snapshot_id: str, body) -> tuple[int, dict]:
    return server.request("PATCH", f"api/ckpt/snapshots/{snapshot_id}", body)


def test_parent_chain_branch_and_position(url, tmp_path):
    server = Server(tmp_path, tmp_path / "ckpt", env={"JUPYTER_CKPT_STORE": url}).start()
    try:
        kernel_id = server.start_notebook_kernel()
        ks = KernelSocket(server, kernel_id)
        assert ks.execute("x = 1")[0] == "ok"
        first = checkpoint(server, kernel_id, "first")
        assert first["parent"] is None
        assert ks.execute("x = 2")[0] == "ok"
        second = checkpoint(server, kernel_id, "second")
        ks.close()
        assert second["parent"] == first["id"]  # the kernel's previous snapshot
        assert origin(server, kernel_id) == {"kernel_id": kernel_id, "restored_from": None,
                                             "position": second["id"], "running_cell": None}

        # back to the first snapshot in the notebook's kernel: the next one branches there
        assert restore(server, first["id"], kernel_id=kernel_id)["kernel_id"] == kernel_id
        here = origin(server, kernel_id)
        assert (here["restored_from"], here["position"]) == (first["id"], first["id"])
        ks = KernelSocket(server, kernel_id)
        status, out, _ = ks.execute("assert x == 1; x = 3")
        assert status == "ok", out
        branch = checkpoint(server, kernel_id, "branch")
        ks.close()
        assert branch["parent"] == first["id"]
        here = origin(server, kernel_id)
        assert (here["restored_from"], here["position"]) == (first["id"], branch["id"])

        status, listed = server.request("GET", "api/ckpt/snapshots?notebook_path=demo.ipynb")
        assert status == 200
        assert {m["id"]: m["parent"] for m in listed} == {
            first["id"]: None, second["id"]: first["id"], branch["id"]: first["id"]}
    finally:
        server.stop()


def test_relabel_is_stored_and_a_bad_request_changes_nothing(url, tmp_path):
    server = Server(tmp_path, tmp_path / "ckpt", env={"JUPYTER_CKPT_STORE": url}).start()
    try:
        kernel_id = server.start_notebook_kernel()
        model = checkpoint(server, kernel_id, "before")
        other = checkpoint(server, kernel_id, "other")
        sid = model["id"]

        status, changed = relabel(server, sid, {"label": "data loaded"})
        assert status == 200 and changed == {**model, "label": "data loaded"}, changed
        status, changed = relabel(server, sid, {"label": "data loaded, cleaned"})
        assert status == 200 and changed["label"] == "data loaded, cleaned", changed

        for body, field in [({}, "label"), ({"label": None}, "label"), ({"label": 5}, "label"),
                            ({"label": "x" * 201}, "label"), ({"label": "a\x07b"}, "label"),
                            ({"label": "ok", "parent": None}, "parent"), ([], "body")]:
            status, error = relabel(server, sid, body)
            assert (status, error["reason"], error["field"]) == (400, "BadRequest", field), error
        status, error = relabel(server, "not-an-id", {"label": "x"})
        assert (status, error["field"]) == (400, "snapshot_id"), error
        status, error = relabel(server, "f" * 32, {"label": "x"})
        assert (status, error["reason"]) == (404, "NotFound"), error

        assert server.request("GET", f"api/ckpt/snapshots/{sid}")[1]["label"] == \
            "data loaded, cleaned"
        listed = server.request("GET", "api/ckpt/snapshots?notebook_path=demo.ipynb")[1]
        assert {m["id"]: m["label"] for m in listed} == {
            sid: "data loaded, cleaned", other["id"]: "other"}

        # in the store itself: another server's catalog on it reads the new label, and only
        # the newest label object is left
        catalog = SnapshotCatalog(str(tmp_path / "elsewhere"), store_url=url)
        assert catalog.snapshots.get(sid).label == "data loaded, cleaned"
        assert len(list(catalog.store.backend.list(f"labels/{sid}/"))) == 1
        # and so does the command line
        listed = run_cli("snapshots", "ls", "--store", url).stdout
        assert any(line.startswith(sid) and "data loaded, cleaned" in line
                   for line in listed.splitlines()), listed

        status, changed = relabel(server, sid, {"label": ""})
        assert status == 200 and changed["label"] == "", changed
        # a deleted snapshot cannot be relabelled
        assert server.request("DELETE", f"api/ckpt/snapshots/{sid}")[0] == 204
        status, error = relabel(server, sid, {"label": "x"})
        assert (status, error["reason"]) == (404, "NotFound"), error
    finally:
        server.stop()
