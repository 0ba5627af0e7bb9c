"""Bad REST input against a real Jupyter Server: each is answered 400 with a JSON message
naming the field and why, before anything changes (snapshots, runtime files, processes);
and a restore that fails after the engine made the kernel leaves no process behind."""
from __future__ import annotations

import uuid
from urllib.parse import quote, urlencode

import pytest

from jupyter_server_harness import KernelSocket, Server


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, tmp_path / "ckpt").start()
    yield srv
    srv.stop()


def state(server: Server) -> tuple:
    """What a refused request must not change."""
    return (server.request("GET", "api/ckpt/snapshots")[1],
            sorted(k["id"] for k in server.request("GET", "api/kernels")[1]),
            server.runtime_files(), server.descendants())


def test_bad_input_is_refused_by_field_before_anything_changes(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute("x = 1")[0] == "ok"
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {"label": "ok"})
    assert status == 201, model
    snapshots = f"api/ckpt/kernels/{kernel_id}/snapshots"
    restore = f"api/ckpt/snapshots/{model['id']}/restore"
    # (method, path, JSON body or raw bytes, the field the answer must name, a word of why)
    cases = [
        ("POST", restore, {"kernel_id": "k" * 3000}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel_id": "a\x00b"}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel_id": ".."}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel_id": "."}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel_id": "a b"}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel_id": str(uuid.uuid4()).upper()}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel_id": 123}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel_id": ["a"]}, "kernel_id", "not a kernel id"),
        ("POST", restore, {"kernel": kernel_id}, "kernel", "not a field"),
        ("POST", restore, ["a"], "body", "JSON object"),
        ("POST", restore, b"{not json", "body", "not JSON"),
        ("POST", restore, b"[" * 100_000, "body", "not JSON"),
        ("POST", snapshots, {"id": 123}, "id", "not a snapshot id"),
        ("POST", snapshots, {"id": ["a"]}, "id", "not a snapshot id"),
        ("POST", snapshots, {"id": "../" + "0" * 29}, "id", "not a snapshot id"),
        ("POST", snapshots, {"label": "x" * 10_000_000}, "label", "at most 200"),
        ("POST", snapshots, {"label": "y" * 201}, "label", "at most 200"),
        ("POST", snapshots, {"label": "two\nlines"}, "label", "control character"),
        ("POST", snapshots, {"label": "nul\x00"}, "label", "control character"),
        ("POST", snapshots, {"label": 5}, "label", "must be a string"),
        ("POST", snapshots, {"execution_count": "3"}, "execution_count", "must be an integer"),
        ("POST", snapshots, {"execution_count": True}, "execution_count", "must be an integer"),
        ("POST", snapshots, {"execution_count": -1}, "execution_count", "out of range"),
        ("POST", snapshots, "label", "body", "JSON object"),
        ("POST", snapshots, {"notebook": [1]}, "notebook", "must be a notebook"),
        ("POST", snapshots, {"notebook": {"nbformat": 3, "cells": []}}, "notebook", "nbformat 4"),
        ("POST", snapshots, {"notebook": {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                                          "cells": [{"cell_type": "code"}]}},
         "notebook", "not a valid nbformat 4 notebook"),
        ("POST", snapshots, {"notebook": {"nbformat": 4, "cells": ["x" * 70_000_000]}},
         "notebook", "at most"),
        ("POST", snapshots, {"pending_cells": {"a": "b"}}, "pending_cells", "must be a list"),
        ("POST", snapshots, {"pending_cells": [{"msg_id": "m"}]}, "pending_cells[0]",
         '"msg_id" and "cell_id"'),
        ("POST", snapshots, {"pending_cells": [{"msg_id": "m", "cell_id": "a b"}]},
         "pending_cells[0].cell_id", "not a cell id"),
        ("POST", snapshots, {"pending_cells": [{"msg_id": "m", "cell_id": "c" * 65}]},
         "pending_cells[0].cell_id", "not a cell id"),
        ("POST", snapshots, {"pending_cells": [{"msg_id": "m\n", "cell_id": "c"}]},
         "pending_cells[0].msg_id", "control character"),
        ("POST", snapshots, {"pending_cells": [{"msg_id": 1, "cell_id": "c"}] * 10_001},
         "pending_cells", "at most 10000"),
        ("POST", "api/ckpt/kernels/..%2F..%2Fetc/snapshots", {}, "kernel_id", "not a kernel id"),
        ("POST", "api/ckpt/kernels/a%20b/snapshots", {}, "kernel_id", "not a kernel id"),
        ("GET", "api/ckpt/snapshots?" + urlencode({"notebook_path": "a\x01.ipynb"}), None,
         "notebook_path", "control character"),
        ("GET", "api/ckpt/snapshots?" + urlencode({"notebook_path": "n" * 5000}), None,
         "notebook_path", "at most 4096"),
        ("GET", "api/ckpt/snapshots?kernel_id=..", None, "kernel_id", "not a kernel id"),
        ("GET", "api/ckpt/snapshots/not-an-id", None, "snapshot_id", "not a snapshot id"),
        ("GET", "api/ckpt/snapshots/..%2F..%2Fetc%2Fpasswd", None, "snapshot_id", "not a snapshot id"),
        ("DELETE", "api/ckpt/snapshots/" + "A" * 32, None, "snapshot_id", "not a snapshot id"),
        ("POST", "api/ckpt/snapshots/" + quote("x" * 40) + "/restore", {}, "snapshot_id",
         "not a snapshot id"),
    ]
    before = state(server)
    for method, path, body, field, why in cases:
        raw = body if isinstance(body, bytes) else None
        status, answer = server.request(method, path, None if raw else body, data=raw)
        case = f"{method} {path[:80]} {str(body)[:80]}"
        assert status == 400, f"{case}: {status} {str(answer)[:300]}\n{server.log()}"
        assert answer["field"] == field, (case, answer)
        assert answer["message"].startswith(f"{field}: ") and why in answer["message"], (case, answer)
        assert len(answer["message"]) < 300, (case, "the message must not echo a huge value")
    assert state(server) == before
    assert ks.execute("print(x)")[1].strip() == "1", "the kernel runs on"
    ks.close()


def test_a_restore_that_fails_after_the_engine_leaves_no_process(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute("x = 1")[0] == "ok"
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
    assert status == 201, model
    # the connection file of the kernel-to-be cannot be written (a directory is in its
    # place): the restore fails after the engine brought the kernel back, with the original
    # running, so in a new PID namespace with a stand-in parent and an init
    target = str(uuid.uuid4())
    (server.workdir / "runtime" / f"kernel-{target}.json").mkdir(parents=True)
    before = state(server)
    status, answer = server.request("POST", f"api/ckpt/snapshots/{model['id']}/restore",
                                    {"kernel_id": target})
    assert status == 500 and target in answer["message"], answer
    assert "Is a directory" in answer["message"], answer
    assert state(server) == before, "the failed restore left something behind"
    assert ks.execute("print(x)")[1].strip() == "1", "the original runs on"
    ks.close()
