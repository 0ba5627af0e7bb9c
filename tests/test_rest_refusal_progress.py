"""Refusals, progress and cancel over REST against a real Jupyter Server and real kernels: a
refused checkpoint says what the user can do (advice per refused kind, the technical line
beside it), a restore reports the bytes it has checked out, and a cancelled checkpoint rolls
back with the kernel running on unharmed and nothing stored."""
from __future__ import annotations

import os
import threading
import time

import pytest

from jupyter_server_harness import KERNEL_STATE, KernelSocket, Server

# an io_uring instance, as liburing makes one (io_uring_setup with 4 entries)
IO_URING = """
import ctypes
params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
ring = ctypes.CDLL(None, use_errno=True).syscall(425, 4, params)
print(ring)
"""
CHECK = """
t0 = ticks[0]; time.sleep(0.3)
print(number, square(7), next(gen), float(big.sum()) == big_sum, f.tell(), ticks[0] > t0)
"""


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, tmp_path / "ckpt").start()
    yield srv
    srv.stop()


def in_background(call):
    """Run `call` on a thread; the returned function waits for and returns its result."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()

    def wait(timeout: float = 300):
        thread.join(timeout)
        assert result, "the request did not finish"
        return result[0]

    wait.finished = lambda: not thread.is_alive()  # type: ignore[attr-defined]
    return wait


def test_a_refused_checkpoint_says_what_to_do(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    status, out, _ = ks.execute(IO_URING)
    assert status == "ok" and int(out) > 2, out
    ring = int(out)
    status, body = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
    assert status == 409 and body["reason"] == "Refused", body
    assert body["kind"] == "io_uring"
    assert "liburing" in body["advice"] and "Close" in body["advice"], body["advice"]
    [refusal] = body["refusals"]
    assert refusal["kind"] == "io_uring" and refusal["where"] == f"fd {ring}"
    assert refusal["detail"] in body["message"] and f"fd {ring}: io_uring" in refusal["detail"]
    assert refusal["advice"] == body["advice"]
    assert server.request("GET", "api/ckpt/snapshots")[1] == []
    status, out, _ = ks.execute("%checkpoint")  # the magic says what to do too
    assert status == "error" and "liburing" in out and f"fd {ring}: io_uring" in out, out
    # the kernel ran on; doing what the advice says makes the snapshot possible
    status, out, _ = ks.execute(f"import os; os.close({ring}); print('closed')")
    assert status == "ok" and out.strip() == "closed", out
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
    assert status == 201, model
    ks.close()


@pytest.fixture
def eager_server(tmp_path):
    """A server that restores all memory before the kernel runs (lazily, the bytes come as
    the kernel touches them, reported by the restore status instead)."""
    srv = Server(tmp_path, tmp_path / "ckpt", args=["--CheckpointConfig.lazy_restore=False"]).start()
    yield srv
    srv.stop()


def test_restore_reports_the_bytes_it_moves(eager_server):
    server = eager_server
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute(KERNEL_STATE)[0] == "ok"
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
    assert status == 201, model
    seen = []
    done = in_background(lambda: server.request("POST", f"api/ckpt/snapshots/{model['id']}/restore", {}))
    while not done.finished():
        for op in server.request("GET", "api/ckpt/operations")[1]:
            if op["kind"] == "restore" and op["snapshot_id"] == model["id"]:
                assert not op["cancellable"]
                seen.append((op["phase"], op["bytes_done"], op["bytes_total"]))
        time.sleep(0.05)  # (polling without a pause starves the server's event loop)
    restored = done()
    assert restored[0] == 200, restored
    # straight from the store: the bytes of memory fetched and written (a checkout into a
    # scratch image, where the server cannot restore from the store, reports those instead)
    moved = [(d, t) for phase, d, t in seen if phase in ("memory", "checking out") and t]
    assert moved, seen
    assert all(0 <= d <= t for d, t in moved), seen
    assert any(0 < d for d, _ in moved), seen
    fork = KernelSocket(server, restored[1]["kernel_id"])
    fork.wait_for_output()
    fork.close()
    ks.close()


def test_a_cancelled_checkpoint_leaves_the_kernel_running_and_stores_nothing(server, tmp_path):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute(KERNEL_STATE)[0] == "ok"
    pid = int(ks.execute("print(os.getpid())")[1])
    for _ in range(3):  # the checkpoint may finish before the cancel reaches it: again
        done = in_background(lambda: server.request(
            "POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {"label": "cancel me"}))
        cancelled = None
        while cancelled is None:
            ops = [op for op in server.request("GET", "api/ckpt/operations")[1]
                   if op["kind"] == "checkpoint" and op["kernel_id"] == kernel_id]
            if ops:
                assert ops[0]["cancellable"] and not ops[0]["cancelled"], ops
                cancelled = server.request("DELETE", f"api/ckpt/operations/{ops[0]['id']}")
            elif server.request("GET", "api/ckpt/snapshots")[1]:
                cancelled = (404, None)  # done before we saw it
        status, body = done()
        if cancelled[0] == 202:
            assert cancelled[1]["cancelled"], cancelled
            break
        assert cancelled[0] == 404 and status == 201, (cancelled, status, body)
        assert server.request("DELETE", f"api/ckpt/snapshots/{body['id']}")[0] == 204
    else:
        pytest.fail("every checkpoint finished before its cancel")
    assert status == 409 and body["reason"] == "Cancelled", body
    assert "nothing was stored" in body["message"]
    assert server.request("GET", "api/ckpt/snapshots")[1] == []
    assert server.request("GET", "api/ckpt/operations")[1] == []
    assert not os.listdir(tmp_path / "ckpt" / "tmp"), "no scratch image left behind"
    status, out, _ = ks.execute(CHECK)  # the same process, its state and thread intact
    assert status == "ok", out
    assert out.split() == ["42", "49", "9", "True", "4", "True"], out
    assert int(ks.execute("print(os.getpid())")[1]) == pid
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
    assert status == 201, model  # nothing of the cancelled one is in the way
    ks.close()


def test_cancel_requests_are_checked(server):
    for bad in ("abc", "0", "-1", "1" * 40, "1%00"):
        status, body = server.request("DELETE", f"api/ckpt/operations/{bad}")
        assert status == 400 and body["field"] == "operation_id", (bad, body)
    status, body = server.request("DELETE", "api/ckpt/operations/123456")
    assert status == 404 and "no running operation" in body["message"], body
