"""The snapshot operations shared by the CLI and the Jupyter server (snapshots_api): the
trash is the store's, so `jupyter-ckpt snapshots` and the REST API agree on it — `rm`
moves a snapshot to the trash, `ls` hides it (`ls --trashed` shows it), `undelete` takes it
back, `gc` purges what has been there long enough, and deleting for good takes the stored
notebook with it. The images are real dumps of a running program; the server is real."""
from __future__ import annotations

import json
import uuid

import pytest

from conftest import run_cli
from jupyter_server_harness import Server
from test_jupyter_server import checkpoint
from test_store import images, url  # noqa: F401  (fixtures)

from jupyter_ckpt import engine
from jupyter_ckpt.engine.errors import Blocker
from jupyter_ckpt.jupyter.handlers import error_model
from jupyter_ckpt.jupyter.validation import BadRequest
from jupyter_ckpt.snapshots_api import Conflict, Damaged, NotFound, Snapshots
from jupyter_ckpt.store import LockTimeout, StoreError, open_store

NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _ids(*args: str) -> list[str]:
    return [s["id"] for s in json.loads(run_cli("snapshots", "ls", "--json", *args).stdout)]


def _error(*args: str) -> str:
    """The one line on stderr of a `jupyter-ckpt` command that must fail."""
    result = run_cli(*args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    return line


def test_cli_rm_goes_to_the_trash_gc_purges_it(images, url, tmp_path):
    store = ("--store", url)
    kept = run_cli("snapshots", "put", images["b"], "--label", "kept", *store).stdout.strip()
    snapshots = Snapshots(open_store(url))  # as the server stores one: a notebook beside it
    sid = snapshots.put(str(images["a1"]), {"notebook_path": "demo.ipynb"}, label="gone",
                        snapshot_id="a1-with-notebook", notebook=NOTEBOOK).id
    backend = snapshots.store.backend
    assert backend.exists(f"notebooks/{sid}.json")

    assert "to the trash" in run_cli("snapshots", "rm", sid, *store).stdout
    assert _ids(*store) == [kept]
    [trashed] = json.loads(run_cli("snapshots", "ls", "--json", "--trashed", *store).stdout)
    assert trashed["id"] == sid and trashed["deleted"] > 0, trashed
    [line] = run_cli("snapshots", "ls", "--trashed", *store).stdout.splitlines()
    assert line.startswith(sid) and "  deleted 20" in line, line
    for verb in (("restore", sid, "--detach"), ("check", sid), ("verify", sid),
                 ("get", sid, tmp_path / "out"), ("copy", sid, "--to", tmp_path / "copy"),
                 ("rm", sid)):
        assert "in the trash" in _error("snapshots", *verb, *store), verb
    assert not (tmp_path / "out").exists()

    assert run_cli("snapshots", "undelete", sid, *store).stdout.strip() == f"undeleted {sid}"
    assert _ids(*store) == [sid, kept]
    assert "no deleted snapshot" in _error("snapshots", "undelete", sid, *store)

    run_cli("snapshots", "rm", sid, *store)
    out = run_cli("snapshots", "gc", *store).stdout  # not there long enough: kept
    assert "purged" not in out and _ids("--trashed", *store) == [sid], out
    out = run_cli("snapshots", "gc", "--trash-seconds", "0", *store).stdout
    assert f"purged {sid} from the trash" in out, out
    assert _ids("--trashed", *store) == [] and _ids(*store) == [kept]
    for key in (f"snapshots/{sid}.json", f"notebooks/{sid}.json", f"trash/{sid}.json"):
        assert not backend.exists(key), key
    assert "no deleted snapshot" in _error("snapshots", "undelete", sid, *store)
    assert "intact" in run_cli("snapshots", "verify", kept, *store).stdout

    # deleting for good at once takes the notebook too
    again = snapshots.put(str(images["a2"]), label="now", snapshot_id="a2-with-notebook",
                          notebook=NOTEBOOK).id
    assert "freed" in run_cli("snapshots", "rm", "--now", again, *store).stdout
    assert not backend.exists(f"notebooks/{again}.json")
    assert "freed" in run_cli("snapshots", "rm", "--now", kept, *store).stdout
    assert _ids(*store) == [] and snapshots.store.usage().chunks == 0


def test_a_servers_purge_leaves_the_trash_it_cannot_see_to_gc(images, tmp_path):
    """The server sees only kernel snapshots: one put on the command line (even with an id
    like a kernel snapshot's) and trashed stays in the trash through the server's purge,
    which neither deletes it nor takes it back, and goes with the CLI's gc."""
    store = open_store(str(tmp_path / "store"))
    sid = Snapshots(store).put(str(images["a1"]), snapshot_id=uuid.uuid4().hex).id
    run_cli("snapshots", "rm", sid, "--store", tmp_path / "store")
    server_side = Snapshots(store, kernel_only=True)
    assert server_side.list() == [] and server_side.purge_trash(0).purged == []
    assert _ids("--trashed", "--store", tmp_path / "store") == [sid]
    assert Snapshots(store).gc(0).purged == [sid] and not store.exists(sid)


def test_the_cli_and_the_server_share_one_trash(tmp_path):
    server = Server(tmp_path, tmp_path / "ckpt").start()
    store = ("--store", str(tmp_path / "ckpt" / "store"))
    try:
        kernel_id = server.start_notebook_kernel()
        a = checkpoint(server, kernel_id, "a")["id"]
        b = checkpoint(server, kernel_id, "b")["id"]

        run_cli("snapshots", "rm", a, *store)  # deleted on the command line: gone for the server
        assert server.request("GET", f"api/ckpt/snapshots/{a}")[0] == 404
        assert [m["id"] for m in server.request("GET", "api/ckpt/snapshots")[1]] == [b]
        assert server.request("POST", f"api/ckpt/snapshots/{a}/restore", {})[0] == 404
        assert server.request("POST", f"api/ckpt/snapshots/{a}/undelete")[0] == 200

        assert server.request("DELETE", f"api/ckpt/snapshots/{b}")[0] == 204  # and the reverse
        assert _ids(*store) == [a] and _ids("--trashed", *store) == [b]
        assert "in the trash" in _error("snapshots", "restore", b, *store)
        run_cli("snapshots", "undelete", b, *store)
        assert server.request("GET", f"api/ckpt/snapshots/{b}")[0] == 200

        run_cli("snapshots", "rm", a, *store)
        assert a in run_cli("snapshots", "gc", "--trash-seconds", "0", *store).stdout
        assert server.request("POST", f"api/ckpt/snapshots/{a}/undelete")[0] == 404
        assert [m["id"] for m in server.request("GET", "api/ckpt/snapshots")[1]] == [b]
    finally:
        server.stop()


@pytest.mark.parametrize("err, status, reason", [
    (BadRequest("label", "is too long"), 400, "BadRequest"),
    (NotFound("no snapshot x"), 404, "NotFound"),
    (Conflict("snapshot x already exists"), 409, "Conflict"),
    (LockTimeout("the store is busy"), 409, "LockTimeout"),
    (engine.Refused([Blocker(1, "fd 3", "io_uring", "not supported")]), 409,
     "Refused"),
    (Damaged("snapshot x is damaged:\nchunk y is corrupt"), 422, "Damaged"),
    (engine.ImageError("bad image"), 422, "ImageError"),
    (engine.CkptError("restoring failed"), 500, "CkptError"),
    (StoreError("cannot reach the endpoint"), 500, "StoreError"),
    (KeyError("connection"), 500, "KeyError"),
])
def test_one_error_mapper_answers_every_kind_in_one_line(err, status, reason):
    code, model = error_model(err)
    assert (code, model["reason"]) == (status, reason), model
    assert model["message"] and "\n" not in model["message"], model
