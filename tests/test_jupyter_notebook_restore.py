"""What a notebook needs around a restore, against a real Jupyter Server and real kernels:
a snapshot taken while a cell runs says which cell, and that cell resumes in the restored
kernel with its output addressed to the original request (so the notebook can put it in
that cell); the notebook's cells and outputs are stored with a snapshot; and the server says
which snapshot a kernel was restored from."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

from conftest import wait_until
from jupyter_server_harness import KernelSocket, Server
from unprivileged import NOBODY

# a cell that runs until the test lets it finish, then prints what it computed
WAITING_CELL = """
import os, time
started = 'running'
while not os.path.exists({gate!r}):
    time.sleep(0.02)
print('finished', 6 * 7)
"""


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, tmp_path / "ckpt").start()
    yield srv
    srv.stop()


def seen_running(server: Server, kernel_id: str, request: str) -> None:
    """The server heard the kernel start the cell: it reads the kernel's iopub on a
    subscription of its own, which may lag the test's websocket."""
    wait_until(lambda: (server.request("GET", f"api/ckpt/kernels/{kernel_id}")[1]["running_cell"]
                        or {}).get("msg_id") == request, what="the server to see the cell running")


def wait_for(ks: KernelSocket, match, timeout: float = 60) -> dict:
    """The first message from the kernel for which `match(msg)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no such message from the kernel")
        msg = ks.receive(left)
        if match(msg):
            return msg


def parent_of(msg: dict) -> str | None:
    return (msg.get("parent_header") or {}).get("msg_id")


def subscribed(ks: KernelSocket, timeout: float = 60) -> None:
    """Wait until the server's IOPub subscription to a (restored) kernel is through: the
    kernel answers a kernel_info_request on its control channel (its shell is busy) with an
    IOPub status that reaches us."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = ks.send("control", "kernel_info_request", {})
        try:
            wait_for(ks, lambda m: m["channel"] == "iopub" and parent_of(m) == request, 3)
            return
        except TimeoutError:
            continue
    raise TimeoutError("the restored kernel's IOPub never reached us")


def checkpoint(server: Server, kernel_id: str, body: dict) -> dict:
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", body)
    assert status == 201, f"{model}\n{server.log()}"
    return model


def run_waiting_cell(ks: KernelSocket, gate: Path) -> tuple[str, int]:
    """Start WAITING_CELL; (its request's msg_id, its execution count) once it runs."""
    request = ks.send("shell", "execute_request", {
        "code": WAITING_CELL.format(gate=str(gate)), "silent": False, "store_history": True,
        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    started = wait_for(ks, lambda m: m["msg_type"] == "execute_input" and parent_of(m) == request)
    return request, started["content"]["execution_count"]


def test_a_snapshot_taken_during_a_cell_marks_it_and_the_cell_resumes(server, tmp_path):
    gate = tmp_path / "gate"
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute("x = 1")[0] == "ok"
    assert server.request("GET", f"api/ckpt/kernels/{kernel_id}")[1] == {
        "kernel_id": kernel_id, "restored_from": None, "position": None, "running_cell": None}
    request, count = run_waiting_cell(ks, gate)
    seen_running(server, kernel_id, request)

    # the client says which of its cells each pending request runs: the snapshot names the one
    # the kernel runs now
    model = checkpoint(server, kernel_id, {"pending_cells": [
        {"msg_id": "queued-after-it", "cell_id": "cell-next"},
        {"msg_id": request, "cell_id": "cell-waiting"}]})
    assert model["running_cell"] == {"execution_count": count, "msg_id": request,
                                     "cell_id": "cell-waiting"}, server.log()
    assert model["execution_count"] == count and model["parent"] is None
    assert server.request("GET", f"api/ckpt/snapshots/{model['id']}")[1]["running_cell"] == \
        model["running_cell"]

    assert server.request("DELETE", f"api/kernels/{kernel_id}")[0] == 204
    ks.close()
    status, result = server.request("POST", f"api/ckpt/snapshots/{model['id']}/restore", {})
    assert status == 200 and result["kernel_id"] == kernel_id, f"{result}\n{server.log()}"
    state = server.request("GET", f"api/ckpt/kernels/{kernel_id}")[1]
    assert state["restored_from"] == model["id"]
    assert state["running_cell"]["msg_id"] == request, "the restored kernel runs the cell"

    # the cell resumes where it was: let it finish, and its output comes addressed to the
    # request made before the snapshot (JupyterLab matches it to the cell by that msg_id)
    ks = KernelSocket(server, kernel_id)
    subscribed(ks)
    gate.touch()
    out = wait_for(ks, lambda m: m["msg_type"] == "stream" and parent_of(m) == request)
    assert out["content"]["text"] == "finished 42\n"
    wait_for(ks, lambda m: m["msg_type"] == "status" and parent_of(m) == request
             and m["content"]["execution_state"] == "idle")
    deadline = time.monotonic() + 10
    while server.request("GET", f"api/ckpt/kernels/{kernel_id}")[1]["running_cell"] is not None:
        assert time.monotonic() < deadline, "the server still thinks the cell runs"
        time.sleep(0.05)
    assert ks.execute("print(x, started)")[1].split() == ["1", "running"]

    # an idle snapshot of the restored kernel: no running cell, and it knows its parent
    later = checkpoint(server, kernel_id, {})
    assert later["running_cell"] is None and later["parent"] == model["id"]
    ks.close()


def test_a_restarted_kernel_runs_no_cell_and_comes_from_no_snapshot(server, tmp_path):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    request, _ = run_waiting_cell(ks, tmp_path / "never")
    seen_running(server, kernel_id, request)
    taken = checkpoint(server, kernel_id, {})  # the kernel's position, until the restart
    assert server.request("GET", f"api/ckpt/kernels/{kernel_id}")[1]["position"] == taken["id"]
    status, _ = server.request("POST", f"api/kernels/{kernel_id}/restart")
    assert status == 200, server.log()
    assert server.request("GET", f"api/ckpt/kernels/{kernel_id}")[1] == {
        "kernel_id": kernel_id, "restored_from": None, "position": None, "running_cell": None}
    ks.close()


def notebook_json() -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", execution_count=1),
                nbformat.v4.new_code_cell("print(x)", execution_count=2,
                                          outputs=[nbformat.v4.new_output("stream", text="1\n")]),
                nbformat.v4.new_markdown_cell("# notes")]
    return nbformat.from_dict(nb)


def test_the_notebook_is_stored_with_its_snapshot(server, tmp_path):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute("x = 1")[0] == "ok"
    notebook = notebook_json()
    with_nb = checkpoint(server, kernel_id, {"label": "with cells", "notebook": notebook})
    without = checkpoint(server, kernel_id, {"label": "kernel only"})
    assert with_nb["has_notebook"] is True and without["has_notebook"] is False
    assert server.request("GET", f"api/ckpt/snapshots/{with_nb['id']}/notebook") == (200, notebook)
    status, answer = server.request("GET", f"api/ckpt/snapshots/{without['id']}/notebook")
    assert status == 404 and without["id"] in answer["message"]
    # beside the record, not in the listing (which the panel polls)
    stored = [p for p in Path(tmp_path / "ckpt").rglob(f"{with_nb['id']}.json")
              if p.parent.name == "notebooks"]
    assert len(stored) == 1
    listing = server.request("GET", "api/ckpt/snapshots?notebook_path=demo.ipynb")[1]
    assert listing and all("print(x)" not in str(entry) for entry in listing)

    # a notebook another user put there is not handed out (a client would show it)
    os.chown(stored[0], NOBODY, NOBODY)
    status, answer = server.request("GET", f"api/ckpt/snapshots/{with_nb['id']}/notebook")
    assert status == 422 and f"belongs to uid {NOBODY}" in answer["message"], answer
    os.chown(stored[0], os.getuid(), os.getgid())

    # deleted, it is in the trash (with its notebook, until purged: see test_rest_trash.py)
    assert server.request("DELETE", f"api/ckpt/snapshots/{with_nb['id']}")[0] == 204
    assert server.request("GET", f"api/ckpt/snapshots/{with_nb['id']}/notebook")[0] == 404
    assert server.request("POST", f"api/ckpt/snapshots/{with_nb['id']}/undelete")[0] == 200
    assert server.request("GET", f"api/ckpt/snapshots/{with_nb['id']}/notebook")[0] == 200
    ks.close()


# A server config making the checkpoint provisioner's IOPub subscription join late, as it can
# on a loaded machine: a SUB socket it makes whose first connection is refused (the kernel
# does not listen yet) tries again only after a few seconds. The server's own sockets keep
# ZeroMQ's defaults, so its websockets serve the kernel as soon as it is up.
LATE_SUBSCRIBERS = """
import sys, zmq
from jupyter_ckpt.jupyter import provisioner
_socket = zmq.Context.socket
def _late_joining(self, socket_type, *args, **kwargs):
    sock = _socket(self, socket_type, *args, **kwargs)
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename != provisioner.__file__:
        frame = frame.f_back
    if socket_type == zmq.SUB and frame is not None:
        sock.setsockopt(zmq.RECONNECT_IVL, 4000)
    return sock
zmq.Context.socket = _late_joining
"""


@pytest.fixture
def late_joining_server(tmp_path):
    config = tmp_path / "late-subscribers"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(LATE_SUBSCRIBERS)
    shipped = Path(__file__).resolve().parent.parent / "etc" / "jupyter"
    srv = Server(tmp_path, tmp_path / "ckpt", env={
        "JUPYTER_CONFIG_PATH": os.pathsep.join([str(shipped), str(config)])}).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("kernel", ["python3", "xpython"])
def test_a_snapshot_during_the_first_cell_of_a_new_kernel_marks_it(late_joining_server,
                                                                    tmp_path, kernel):
    # the kernel's very first cell, published right after its start: the server must be
    # subscribed to the kernel's IOPub by the time it reports the kernel started
    server = late_joining_server
    kernel_id = server.start_notebook_kernel(kernel=kernel)
    ks = KernelSocket(server, kernel_id)
    request, count = run_waiting_cell(ks, tmp_path / "gate")
    assert count == 1
    seen_running(server, kernel_id, request)
    model = checkpoint(server, kernel_id, {})
    assert model["running_cell"] == {"execution_count": 1, "msg_id": request, "cell_id": None}
    assert model["execution_count"] == 1
    (tmp_path / "gate").touch()
    wait_for(ks, lambda m: m["msg_type"] == "execute_reply" and parent_of(m) == request)
    ks.close()


def test_a_snapshot_during_the_first_cell_after_a_restore_marks_it(server, tmp_path):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute("x = 1")[0] == "ok"
    idle = checkpoint(server, kernel_id, {})
    assert idle["running_cell"] is None and idle["execution_count"] == 1
    assert server.request("DELETE", f"api/kernels/{kernel_id}")[0] == 204
    ks.close()
    status, result = server.request("POST", f"api/ckpt/snapshots/{idle['id']}/restore", {})
    assert status == 200, f"{result}\n{server.log()}"

    # the restored kernel's first cell: the server subscribed to it anew
    ks = KernelSocket(server, kernel_id)
    request, count = run_waiting_cell(ks, tmp_path / "gate")
    assert count == 2
    seen_running(server, kernel_id, request)
    model = checkpoint(server, kernel_id, {})
    assert model["running_cell"] == {"execution_count": 2, "msg_id": request, "cell_id": None}
    assert model["execution_count"] == 2 and model["parent"] == idle["id"]
    (tmp_path / "gate").touch()
    wait_for(ks, lambda m: m["msg_type"] == "execute_reply" and parent_of(m) == request)
    ks.close()


def test_a_silent_execute_between_cells_leaves_the_recorded_count(server):
    # what ask_execution_count and frontends send: silent requests publish no execute_input
    # (the kernel does not count them), only their busy and idle statuses
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute("x = 1") == ("ok", "", 1)
    request = ks.send("shell", "execute_request", {
        "code": "y = 2", "silent": True, "store_history": False, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True})
    # its reply (shell) and idle status (IOPub) come on two channels, in either order
    seen: dict[str, dict] = {}
    while len(seen) < 2:
        msg = wait_for(ks, lambda m: parent_of(m) == request and (
            m["msg_type"] == "execute_reply" or m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle"))
        seen[msg["msg_type"]] = msg
    assert seen["execute_reply"]["content"]["status"] == "ok"
    model = checkpoint(server, kernel_id, {})
    assert model["execution_count"] == 1 and model["running_cell"] is None
    assert ks.execute("print(y)") == ("ok", "2\n", 2)
    assert checkpoint(server, kernel_id, {})["execution_count"] == 2
    ks.close()


def test_a_request_that_stores_no_history_is_not_a_cell(server, tmp_path):
    # not silent, so the kernel publishes its execute_input, with the count the next cell
    # will have (ipykernel does not use it up): neither the count nor the running cell
    gate = tmp_path / "gate"
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    assert ks.execute("x = 1") == ("ok", "", 1)
    request = ks.send("shell", "execute_request", {
        "code": WAITING_CELL.format(gate=str(gate)), "silent": False, "store_history": False,
        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    started = wait_for(ks, lambda m: m["msg_type"] == "execute_input" and parent_of(m) == request)
    assert started["content"]["execution_count"] == 2
    during = checkpoint(server, kernel_id, {})
    assert during["execution_count"] == 1 and during["running_cell"] is None
    gate.touch()
    wait_for(ks, lambda m: m["msg_type"] == "status" and parent_of(m) == request
             and m["content"]["execution_state"] == "idle")
    assert checkpoint(server, kernel_id, {})["execution_count"] == 1
    assert ks.execute("print(started)") == ("ok", "running\n", 2)
    assert checkpoint(server, kernel_id, {})["execution_count"] == 2
    ks.close()
