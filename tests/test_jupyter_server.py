"""The Jupyter integration against a real Jupyter Server with real kernels, driven over the
REST API and the kernel websocket (issue 4's acceptance checks)."""
from __future__ import annotations

import os
import time

import pytest

from jupyter_server_harness import KERNEL_STATE, KernelSocket, Server

CHECK = """
t0 = ticks[0]; time.sleep(0.3)
print(number, square(7), next(gen), float(big.sum()) == big_sum, f.tell(), f.read(),
      ticks[0] > t0, db.execute("select sum(v) from t").fetchone()[0], os.getpid())
"""


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, tmp_path / "ckpt").start()
    yield srv
    srv.stop()


def kernel_pid(ks: KernelSocket) -> int:
    return int(ks.execute("import os; print(os.getpid())")[1])


def checkpoint(server: Server, kernel_id: str, label: str = "") -> dict:
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {"label": label})
    assert status == 201, f"{model}\n{server.log()}"
    return model


def restore(server: Server, snapshot_id: str, **body) -> dict:
    status, result = server.request("POST", f"api/ckpt/snapshots/{snapshot_id}/restore", body)
    assert status == 200, f"{result}\n{server.log()}"
    return result


def test_checkpoint_shutdown_restore_keeps_every_object(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    status, out, count = ks.execute(KERNEL_STATE)
    assert status == "ok", out
    model = checkpoint(server, kernel_id, "after setup")
    assert model["label"] == "after setup" and model["notebook_path"] == "demo.ipynb"
    assert model["execution_count"] == count and model["size_bytes"] > 200_000_000, server.log()
    assert server.request("GET", f"api/ckpt/snapshots/{model['id']}") == (200, model)
    assert server.request("GET", "api/ckpt/snapshots?notebook_path=demo.ipynb")[1][0]["id"] == model["id"]

    status, _ = server.request("DELETE", f"api/kernels/{kernel_id}")  # the kernel is gone
    assert status == 204
    ks.close()
    result = restore(server, model["id"])
    assert result["kernel_id"] == kernel_id and not result["fork"], "the id was free: reuse it"

    ks = KernelSocket(server, kernel_id)
    ks.wait_for_output()
    status, out, new_count = ks.execute(CHECK)
    assert status == "ok", out
    assert out.split()[:8] == ["42", "49", "9", "True", "4", "456789", "True", "7"]
    assert new_count > count
    time.sleep(2)  # ipykernel exits within a second if its parent looks wrong
    assert ks.execute("print('still here')")[1].strip() == "still here"
    ks.close()


def test_restore_while_original_runs_is_an_independent_fork(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    ks.execute("value = 'before'")
    session = "print(get_ipython().history_manager.session_number)"
    history_session = ks.execute(session)[1]
    model = checkpoint(server, kernel_id)
    result = restore(server, model["id"])
    assert result["fork"] and result["kernel_id"] != kernel_id
    fork = KernelSocket(server, result["kernel_id"])
    fork.wait_for_output()
    fork.execute("value = 'fork'")
    ks.execute("value = 'original'")
    assert fork.execute("print(value)")[1].strip() == "fork"
    assert ks.execute("print(value)")[1].strip() == "original"
    assert kernel_pid(fork) == kernel_pid(ks), "inside its own PID namespace the fork keeps its PID"
    own = "import os; start = lambda path: open(path).read().split()[21]\n" \
          "print(os.readlink('/proc/self') == str(os.getpid())" \
          " and start(f'/proc/{os.getpid()}/stat') == start('/proc/self/stat'))"  # as psutil reads
    assert fork.execute(own)[1].strip() == "True", "the fork's /proc/<its pid> is another process"
    # both write IPython history: the fork starts a session of its own, so the original
    # never meets the fork's rows in its session (IPython would print an error into a cell)
    assert ks.execute(session)[1] == history_session, "the original's history session moved"
    assert fork.execute(session)[1] != history_session, "the fork writes into the original's session"
    again = checkpoint(server, result["kernel_id"], "a checkpoint of the fork")
    assert again["kernel_id"] == result["kernel_id"]
    kernels = {k["id"] for k in server.request("GET", "api/kernels")[1]}
    assert {kernel_id, result["kernel_id"]} <= kernels
    fork.close()
    ks.close()


def test_checkpoint_magic_continues_the_cell_in_the_restored_kernel(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    status, out, _ = ks.execute(
        "snap = %checkpoint from-a-cell\n"
        "where = 'restored' if snap.restored else 'original'\n"
        "print(snap.id, where)")
    assert status == "ok", out
    snapshot_id, where = out.split()
    assert where == "original"
    assert server.request("GET", f"api/ckpt/snapshots/{snapshot_id}")[1]["label"] == "from-a-cell"
    result = restore(server, snapshot_id)  # the original runs on: a fork
    fork = KernelSocket(server, result["kernel_id"])
    fork.wait_for_output()
    assert fork.execute("print(where, snap.id)")[1].split() == ["restored", snapshot_id]
    assert ks.execute("print(where)")[1].strip() == "original"
    listing = ks.execute("%checkpoints")[1]
    assert snapshot_id in listing
    fork.close()
    ks.close()


def test_restore_after_the_server_itself_restarted(tmp_path):
    first = Server(tmp_path, tmp_path / "ckpt").start()
    try:
        kernel_id = first.start_notebook_kernel()
        ks = KernelSocket(first, kernel_id)
        ks.execute("x = 'survives a server restart'\ngen = iter(range(10)); next(gen)")
        model = checkpoint(first, kernel_id)
        ks.close()
    finally:
        first.stop()  # shuts its kernels down
    second = Server(tmp_path, tmp_path / "ckpt").start()
    try:
        assert [m["id"] for m in second.request("GET", "api/ckpt/snapshots")[1]] == [model["id"]]
        result = restore(second, model["id"])
        assert result["kernel_id"] == kernel_id
        ks = KernelSocket(second, kernel_id)
        ks.wait_for_output()
        time.sleep(2)  # its parent check would have ended it by now
        assert ks.execute("print(x, next(gen))")[1].strip() == "survives a server restart 1"
        ks.close()
    finally:
        second.stop()


def test_bad_requests_get_clear_errors_and_change_nothing(server, tmp_path):
    kernel_id = server.start_notebook_kernel()
    model = checkpoint(server, kernel_id)
    before = server.request("GET", "api/ckpt/snapshots")[1]

    for path in ("api/ckpt/snapshots/0123456789abcdef0123456789abcdef",
                 "api/ckpt/snapshots/0123456789abcdef0123456789abcdef/restore"):
        method = "POST" if path.endswith("restore") else "GET"
        status, body = server.request(method, path, {} if method == "POST" else None)
        assert status == 404 and "no snapshot" in body["message"]
    status, _ = server.request("GET", "/base/api/ckpt/snapshots/..%2F..%2F..%2Fetc%2Fpasswd", raw_path=True)
    assert status == 400  # (test_rest_validation.py checks every such input)
    status, _ = server.request("DELETE", "api/ckpt/snapshots/not-an-id")
    assert status == 400
    status, body = server.request("POST", "api/ckpt/kernels/00000000-0000-0000-0000-000000000000/snapshots", {})
    assert status == 404 and "no running kernel" in body["message"]
    status, body = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {"label": 5})
    assert status == 400
    assert server.request("GET", "api/ckpt/snapshots", token=None)[0] == 403
    assert server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {}, token="wrong")[0] == 403

    # a snapshot another user stored (its record and chunk list are theirs) is refused,
    # before anything is checked out or the kernel it would replace is shut down
    records = list((tmp_path / "ckpt" / "store" / "snapshots").glob(f"{model['id']}.*"))
    assert len(records) == 2, records  # <id>.json and <id>.<nonce>.chunks
    for record in records:
        os.chown(record, 12345, 12345)
    status, body = server.request("POST", f"api/ckpt/snapshots/{model['id']}/restore",
                                  {"kernel_id": kernel_id})
    assert status == 422 and "belongs to uid 12345" in body["message"], body
    assert server.request("GET", "api/ckpt/snapshots")[1] == before
    assert kernel_id in {k["id"] for k in server.request("GET", "api/kernels")[1]}
    assert not server.request("GET", "api/ckpt/operations")[1]
    assert not os.listdir(tmp_path / "ckpt" / "tmp"), "no scratch image left behind"


def test_second_checkpoint_stores_only_what_changed(server, tmp_path):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    status, out, _ = ks.execute(
        "import numpy as np\n"
        "data = np.random.default_rng(3).random(6_000_000)  # 48 MB that barely compress")
    assert status == "ok", out
    first = checkpoint(server, kernel_id, "first")
    ks.execute("data[:1000] = 0; small = list(range(1000)); total = float(data.sum())")
    second = checkpoint(server, kernel_id, "second")
    assert first["size_bytes"] > 48_000_000 and second["size_bytes"] > 48_000_000
    assert first["stored_bytes"] > 40_000_000, first
    # the array is not stored again; what is new is mostly the interpreter's heap, whose
    # pages a cell's reference counting touches all over (about 10 MB here)
    assert second["stored_bytes"] < first["stored_bytes"] / 3, (first, second)
    listing = server.request("GET", "api/ckpt/snapshots")[1]
    assert [m["id"] for m in listing] == [second["id"], first["id"]]
    assert listing[0] == second and "connection" not in second
    assert not os.listdir(tmp_path / "ckpt" / "tmp"), "the dumped images were removed"

    # deleting the first keeps the chunks the second shares with it
    assert server.request("DELETE", f"api/ckpt/snapshots/{first['id']}")[0] == 204
    assert server.request("GET", f"api/ckpt/snapshots/{first['id']}")[0] == 404
    result = restore(server, second["id"])  # the original runs on: a fork
    fork = KernelSocket(server, result["kernel_id"])
    fork.wait_for_output()
    assert fork.execute("print(float(data.sum()) == total, len(small))")[1].split() == ["True", "1000"]
    assert not os.listdir(tmp_path / "ckpt" / "tmp"), "the checkout was removed"
    fork.close()
    ks.close()


def snapshot_of(server: Server, snapshot_id: str) -> dict:
    status, model = server.request("GET", f"api/ckpt/snapshots/{snapshot_id}")
    assert status == 200, model
    return model


MAGIC_CHECKPOINT = "snap = %checkpoint {label}\nprint(snap.id, snap.restored)"


def test_magics_work_in_a_kernel_restored_after_a_server_restart(tmp_path):
    first = Server(tmp_path, tmp_path / "ckpt").start()
    try:
        kernel_id = first.start_notebook_kernel()
        ks = KernelSocket(first, kernel_id)
        ks.execute("x = 'before the restart'")
        model = checkpoint(first, kernel_id)
        ks.close()
    finally:
        first.stop()
    second = Server(tmp_path, tmp_path / "ckpt").start()  # another port, the same token
    try:
        assert restore(second, model["id"])["kernel_id"] == kernel_id
        ks = KernelSocket(second, kernel_id)
        ks.wait_for_output()
        status, out, _ = ks.execute(MAGIC_CHECKPOINT.format(label="after-restart"))
        assert status == "ok", out
        snapshot_id, restored = out.split()
        assert restored == "False"
        assert snapshot_of(second, snapshot_id)["kernel_id"] == kernel_id
        status, out, _ = ks.execute("%checkpoints")
        assert status == "ok", out
        assert snapshot_id in out and model["id"] in out, out
        ks.close()
    finally:
        second.stop()


def test_checkpoint_magic_in_a_fork_snapshots_the_fork(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    ks.execute("x = 1")
    model = checkpoint(server, kernel_id)
    result = restore(server, model["id"])
    assert result["fork"]
    fork = KernelSocket(server, result["kernel_id"])
    fork.wait_for_output()
    status, out, _ = fork.execute(MAGIC_CHECKPOINT.format(label="in-the-fork"))
    assert status == "ok", out
    snapshot_id, restored = out.split()
    assert restored == "False"
    assert snapshot_of(server, snapshot_id)["kernel_id"] == result["kernel_id"]
    fork.close()
    ks.close()


def test_checkpoint_magic_continuing_in_a_fork_knows_the_fork(server):
    """The rest of the cell that ran %checkpoint runs again in a restored kernel, maybe
    before its server told it where it is: a second %checkpoint there snapshots the fork."""
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    status, out, _ = ks.execute(
        "snap = %checkpoint\n"
        "if snap.restored:\n"
        "    second = %checkpoint second\n"
        "print(snap.id)")
    assert status == "ok", out
    result = restore(server, out.strip())
    assert result["fork"]
    deadline = time.monotonic() + 120
    while True:  # the fork's cell output goes to no client: its snapshot shows it ran
        listing = server.request("GET", "api/ckpt/snapshots")[1]
        second = [m for m in listing if m["label"] == "second"]
        if second or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [m["kernel_id"] for m in second] == [result["kernel_id"]], server.log()
    ks.close()


def test_checkpoints_magic_lists_the_notebooks_snapshots(server):
    a = server.start_notebook_kernel("a.ipynb")
    b = server.start_notebook_kernel("b.ipynb")
    of_a, of_b = checkpoint(server, a, "of a"), checkpoint(server, b, "of b")
    ks = KernelSocket(server, a)
    status, out, _ = ks.execute("%checkpoints")
    assert status == "ok", out
    assert of_a["id"] in out and of_b["id"] not in out, out
    ks.close()


def test_checkpoint_magic_records_the_number_of_its_cell(server):
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    status, out, count = ks.execute(MAGIC_CHECKPOINT.format(label="first-cell"))
    assert status == "ok" and count == 1, (out, count)
    assert snapshot_of(server, out.split()[0])["execution_count"] == count
    status, out, count = ks.execute(MAGIC_CHECKPOINT.format(label="second-cell"))
    assert snapshot_of(server, out.split()[0])["execution_count"] == count == 2
    ks.close()
