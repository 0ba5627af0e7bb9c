"""Automatic snapshots before each cell (CheckpointConfig.auto_snapshot) and "undo last
cell", through a real Jupyter Server and real ipykernel processes, cells sent over the kernel
websocket as a browser sends them: a snapshot precedes each cell and names it, undo brings
the kernel back to just before its last cell (the kernel checks its own state), retention
keeps the newest N, a refused snapshot does not hold the cell back, and a small change costs
little in the store."""
from __future__ import annotations

import time
from typing import Any

import pytest

from jupyter_server_harness import KernelSocket, Server
from test_rest_refusal_progress import IO_URING

NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "code", "id": "c4", "metadata": {}, "source": "x = 4",
                       "outputs": [], "execution_count": None}]}


def run(ks: KernelSocket, code: str, cell_id: str | None = None, silent: bool = False,
        timeout: float = 120) -> dict[str, Any]:
    """Run one cell as JupyterLab does (its cell id in the request's metadata): its reply
    status, stdout and stderr, once the kernel is idle again. A `silent` one is no cell of
    the notebook's history (no execution count, no snapshot before it)."""
    msg_id = ks.send("shell", "execute_request", {
        "code": code, "silent": silent, "store_history": not silent, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True},
        metadata={"cellId": cell_id} if cell_id else None)
    result: dict[str, Any] = {"status": None, "stdout": "", "stderr": ""}
    idle = False
    deadline = time.monotonic() + timeout
    while result["status"] is None or not idle:
        msg = ks.receive(max(0.1, deadline - time.monotonic()))
        if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            result[msg["content"]["name"]] += msg["content"]["text"]
        elif kind == "error":
            result["stderr"] += "\n".join(msg["content"]["traceback"])
        elif kind == "execute_reply":
            result["status"] = msg["content"]["status"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    return result


def check(ks: KernelSocket, code: str, timeout: float = 60) -> str:
    """What `code` prints in a kernel just restored (outside the history, so it leaves the
    last cell as it was). Its IOPub needs a moment until the server's subscription is
    through: output published before is lost, so each attempt gets a few seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out = run(ks, code, silent=True, timeout=5)["stdout"]
        except TimeoutError:
            continue
        if out:
            return out
    raise TimeoutError("restored kernel produced no output")


def autos(server: Server, path: str) -> list[dict[str, Any]]:
    """The automatic snapshots of notebook `path`, newest first, once the server is done
    storing and pruning them (no engine operation left, and the list stable)."""
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline:
        if not server.request("GET", "api/ckpt/operations")[1]:
            listed = [s for s in server.request("GET", "api/ckpt/snapshots",
                                                )[1] if s["auto"] and s["notebook_path"] == path]
            if listed == seen:
                return listed
            seen = listed
        time.sleep(0.2)
    raise TimeoutError(f"automatic snapshots of {path} still changing: {seen}")


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "work", tmp_path / "ckpt", args=[
        "--CheckpointConfig.auto_snapshot=True", "--CheckpointConfig.auto_keep=3"])
    (tmp_path / "work").mkdir()
    s.start()
    yield s
    s.stop()


def test_a_snapshot_before_each_cell_and_undo_goes_back_cell_by_cell(server):
    kernel_id = server.start_notebook_kernel("auto.ipynb")
    ks = KernelSocket(server, kernel_id)
    try:
        for n in (1, 2, 3):
            assert run(ks, f"x = {n}", f"c{n}")["status"] == "ok"
        # the Lab extension sends the notebook as cell c4 is scheduled
        status, _ = server.request("POST", f"api/ckpt/kernels/{kernel_id}/auto/notebook",
                                   {"cell_id": "c4", "notebook": NOTEBOOK})
        assert status == 204
        assert run(ks, "x = 4", "c4")["status"] == "ok"
        listed = autos(server, "auto.ipynb")
        # one before each cell, the oldest beyond auto_keep=3 deleted; each names its cell
        assert [s["auto"]["cell_id"] for s in listed] == ["c4", "c3", "c2"]
        assert [s["execution_count"] for s in listed] == [3, 2, 1]  # before In [4], [3], [2]
        assert [s["auto"]["previous"] for s in listed[:2]] == [listed[1]["id"], listed[2]["id"]]
        assert listed[0]["has_notebook"] and not listed[1]["has_notebook"]
        assert server.request("GET", f"api/ckpt/snapshots/{listed[0]['id']}/notebook")[1] \
            == NOTEBOOK
        assert server.request("GET", f"api/ckpt/kernels/{kernel_id}/undo")[1]["snapshot"]["id"] \
            == listed[0]["id"]
    finally:
        ks.close()

    # undo c4: the kernel is as it was before c4 ran, under its own id
    status, body = server.request("POST", f"api/ckpt/kernels/{kernel_id}/undo", {})
    assert status == 200, body
    assert body["kernel_id"] == kernel_id and body["snapshot"]["id"] == listed[0]["id"]
    ks = KernelSocket(server, kernel_id)
    try:
        assert check(ks, "assert x == 3; print('before c4')") == "before c4\n"
    finally:
        ks.close()
    # and again: the snapshot before c3, which the one before c4 names as its previous
    assert server.request("GET", f"api/ckpt/kernels/{kernel_id}/undo")[1]["snapshot"]["id"] \
        == listed[1]["id"]
    status, body = server.request("POST", f"api/ckpt/kernels/{kernel_id}/undo", {})
    assert status == 200, body
    ks = KernelSocket(server, kernel_id)
    try:
        assert check(ks, "assert x == 2; print('before c3')") == "before c3\n"
        # a cell run after an undo is preceded by a snapshot whose previous is the undo's
        assert run(ks, "x = 30", "c3b")["status"] == "ok"
        newest = autos(server, "auto.ipynb")[0]
        assert newest["auto"]["cell_id"] == "c3b" and newest["auto"]["previous"] == listed[2]["id"]
        assert newest["parent"] == listed[1]["id"]
    finally:
        ks.close()

    # (retention kept three: the one before c2 is gone, so nothing before c3 to undo to)
    assert [s["id"] for s in autos(server, "auto.ipynb")] == [newest["id"]] + \
        [s["id"] for s in listed[:2]]
    # after a server restart (its kernels end), a kernel restored from the snapshot before
    # c4 undoes to the one before c3: the snapshots say it, not the server
    server.stop()
    again = Server(server.workdir, server.ckpt_dir, args=server.args).start()
    try:
        status, body = again.request("POST", f"api/ckpt/snapshots/{listed[0]['id']}/restore", {})
        assert status == 200, body
        assert again.request("GET", f"api/ckpt/kernels/{kernel_id}/undo")[1]["snapshot"]["id"] \
            == listed[1]["id"]
        status, body = again.request("POST", f"api/ckpt/kernels/{kernel_id}/undo", {})
        assert status == 200, body
        ks = KernelSocket(again, kernel_id)
        try:
            assert check(ks, "assert x == 2; print('before c3')") == "before c3\n"
        finally:
            ks.close()
    finally:
        again.stop()


def test_off_by_default_and_a_user_turns_it_on(tmp_path):
    (tmp_path / "work").mkdir()
    server = Server(tmp_path / "work", tmp_path / "ckpt").start()
    try:
        assert server.request("GET", "api/ckpt/auto")[1]["enabled"] is False
        kernel_id = server.start_notebook_kernel("off.ipynb")
        ks = KernelSocket(server, kernel_id)
        try:
            assert run(ks, "x = 1", "c1")["status"] == "ok"
            assert autos(server, "off.ipynb") == []
            assert server.request("GET", f"api/ckpt/kernels/{kernel_id}/undo")[1] == \
                {"snapshot": None}
            assert server.request("POST", f"api/ckpt/kernels/{kernel_id}/undo", {})[0] == 409
            status, body = server.request("PUT", "api/ckpt/auto", {"enabled": True})
            assert status == 200 and body["enabled"] is True and body["server_default"] is False
            assert run(ks, "x = 2", "c2")["status"] == "ok"
            [c2] = autos(server, "off.ipynb")
            assert c2["auto"]["cell_id"] == "c2"
            assert server.request("GET", f"api/ckpt/kernels/{kernel_id}/undo")[1]["snapshot"] \
                ["id"] == c2["id"]
            # a cell run while off has no snapshot before it: nothing to undo to
            assert server.request("PUT", "api/ckpt/auto", {"enabled": False})[0] == 200
            assert run(ks, "x = 3", "c3")["status"] == "ok"
            assert server.request("GET", f"api/ckpt/kernels/{kernel_id}/undo")[1] == \
                {"snapshot": None}
            assert server.request("PUT", "api/ckpt/auto", {"enabled": "yes"})[0] == 400
        finally:
            ks.close()
    finally:
        server.stop()


def test_a_refused_snapshot_does_not_hold_the_cell_back(server):
    kernel_id = server.start_notebook_kernel("refused.ipynb")
    ks = KernelSocket(server, kernel_id)
    try:
        assert run(ks, IO_URING, "ring")["status"] == "ok"  # (a snapshot before it, fine)
        for attempt in (1, 2):
            result = run(ks, f"print('ran {attempt}')", f"after{attempt}")
            assert result["status"] == "ok" and result["stdout"] == f"ran {attempt}\n"
            if attempt == 1:  # said once, in the cell's output, naming what is refused
                assert "automatic snapshot before this cell refused" in result["stderr"]
                assert "io_uring" in result["stderr"], result["stderr"]
            else:
                assert result["stderr"] == ""
        assert [s["auto"]["cell_id"] for s in autos(server, "refused.ipynb")] == ["ring"]
    finally:
        ks.close()


def test_a_small_change_costs_little_in_the_store(server):
    """A cell changing 1% of a 100 MB array: the snapshot after it adds about 1% of the
    array to the store (chunks are stored once) beyond what any cell costs (an empty cell
    also changes the interpreter's heap: its history, counters, caches)."""
    kernel_id = server.start_notebook_kernel("cost.ipynb")
    ks = KernelSocket(server, kernel_id)
    try:
        assert run(ks, "import numpy as np\n"
                       "big = np.random.default_rng(3).random(12_500_000)", "make")["status"] == "ok"
        assert run(ks, "big[:125_000] = np.random.default_rng(4).random(125_000)",
                   "change")["status"] == "ok"
        assert run(ks, "pass", "empty")["status"] == "ok"
        assert run(ks, "pass", "last")["status"] == "ok"
        after_empty, after_change, before_change = autos(server, "cost.ipynb")
        assert [s["auto"]["cell_id"] for s in (after_empty, after_change, before_change)] \
            == ["last", "empty", "change"]
        assert before_change["stored_bytes"] > 100_000_000  # the array: random, incompressible
        # 1 MB changed: stored at the chunks' granularity (32 KiB to 512 KiB), 1.5 to 2 MB
        assert after_change["stored_bytes"] - after_empty["stored_bytes"] < 0.03 * 100_000_000
    finally:
        ks.close()


def test_the_quota_deletes_older_automatic_snapshots_never_a_manual_one(tmp_path):
    (tmp_path / "work").mkdir()
    server = Server(tmp_path / "work", tmp_path / "ckpt", args=[
        "--CheckpointConfig.auto_snapshot=True", "--CheckpointConfig.auto_quota=1"]).start()
    try:
        kernel_id = server.start_notebook_kernel("quota.ipynb")
        ks = KernelSocket(server, kernel_id)
        try:
            assert run(ks, "x = 1", "a")["status"] == "ok"
            status, manual = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots",
                                            {"label": "mine"})
            assert status == 201, manual
            assert run(ks, "x = 2", "b")["status"] == "ok"
            assert run(ks, "x = 3", "c")["status"] == "ok"
            # each stores more than 1 byte: only the newest automatic one stays
            assert [s["auto"]["cell_id"] for s in autos(server, "quota.ipynb")] == ["c"]
            listed = server.request("GET", "api/ckpt/snapshots?notebook_path=quota.ipynb")[1]
            assert manual["id"] in [s["id"] for s in listed]
        finally:
            ks.close()
    finally:
        server.stop()
