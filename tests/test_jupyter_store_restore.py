"""Checkpoint into the store and restore straight from it through a real Jupyter Server, on
a local store and on a bucket of a real SeaweedFS: lazily, the restored kernel answers its
first cell while its memory is still streaming in (the background pass held back), the REST
status says "ready" and then "all memory in", and every object is intact afterwards. A chunk
whose content does not match its name is refused by name: the kernel is killed before it
can compute with a wrong page, or, restoring eagerly, never starts."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import new_bucket, wait_until
from jupyter_server_harness import KERNEL_STATE, KernelSocket, Server
from test_jupyter_server import CHECK, checkpoint, restore

from jupyter_ckpt.engine import lazy
from jupyter_ckpt.store import open_store


def store_url(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return f"s3://{new_bucket(request.getfixturevalue('seaweedfs'))}/store"


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path) -> str:
    return store_url(request, tmp_path)


def status_of(server: Server, kernel_id: str) -> dict:
    status, model = server.request("GET", f"api/ckpt/kernels/{kernel_id}/restore")
    assert status == 200, model
    return model


def kernel_with_state(server: Server) -> tuple[str, dict]:
    kernel_id = server.start_notebook_kernel()
    ks = KernelSocket(server, kernel_id)
    status, out, _ = ks.execute(KERNEL_STATE)
    assert status == "ok", out
    model = checkpoint(server, kernel_id)
    ks.close()
    assert server.request("DELETE", f"api/kernels/{kernel_id}")[0] == 204
    return kernel_id, model


def check_state(ks: KernelSocket) -> None:
    """The kernel still holds what KERNEL_STATE made (CHECK prints it)."""
    status, out, _ = ks.execute(CHECK)
    assert status == "ok", out
    assert out.split()[:8] == ["42", "49", "9", "True", "4", "456789", "True", "7"]


def no_scratch(tmp_path: Path) -> Path:
    """Make the server's scratch directory unusable (a file in its place): a restore that
    still works wrote no image there."""
    root = tmp_path / "ckpt" / "tmp"
    shutil.rmtree(root)
    root.write_text("a restore must not need scratch space")
    return root


def scratch_again(root: Path) -> None:
    root.unlink()
    root.mkdir(mode=0o700)


def test_lazy_restore_from_the_store_answers_first_then_streams_the_rest(url, tmp_path):
    held = tmp_path / "let-memory-in"  # the background pass waits for this file
    server = Server(tmp_path, tmp_path / "ckpt", env={
        "JUPYTER_CKPT_STORE": url, lazy.PAUSE_ENV: str(held)}).start()
    try:
        kernel_id, model = kernel_with_state(server)
        blocked = no_scratch(tmp_path)
        result = restore(server, model["id"])
        assert result["kernel_id"] == kernel_id
        assert result["restore"]["lazy"] and result["restore"]["status"] == "ready", result
        ks = KernelSocket(server, kernel_id)
        ks.wait_for_output()  # the first cell, answered while memory is held back
        assert status_of(server, kernel_id)["status"] == "ready"
        held.touch()
        wait_until(lambda: status_of(server, kernel_id)["status"] != "ready", 120,
                   "all memory to be in")
        final = status_of(server, kernel_id)
        assert final["status"] == "all memory in", final
        assert final["seconds_to_all_in"] >= final["seconds_to_ready"] > 0
        check_state(ks)
        ks.close()
        scratch_again(blocked)
        # the restored kernel checkpoints again, into the store, sharing its chunks
        again = checkpoint(server, kernel_id)
        assert again["stored_bytes"] < model["stored_bytes"] / 4, (again, model)
    finally:
        server.stop()


@pytest.mark.parametrize("lazy_restore", [True, False], ids=["lazy", "eager"])
def test_corrupt_chunk_is_refused_by_name(tmp_path, lazy_restore):
    held = tmp_path / "let-memory-in"
    store = tmp_path / "store"
    server = Server(tmp_path, tmp_path / "ckpt", env={
        "JUPYTER_CKPT_STORE": str(store), lazy.PAUSE_ENV: str(held)},
        args=[f"--CheckpointConfig.lazy_restore={lazy_restore}"]).start()
    try:
        kernel_id, model = kernel_with_state(server)
        backend = open_store(str(store)).backend
        key, _ = max(backend.list("chunks/"), key=lambda k: k[1])  # the big random array's
        name = key.rsplit("/", 1)[-1]
        data = bytearray(backend.get(key))
        data[len(data) // 2] ^= 0xFF
        backend.put(key, bytes(data))
        if not lazy_restore:
            status, error = server.request("POST", f"api/ckpt/snapshots/{model['id']}/restore", {})
            assert status == 422 and f"chunk {name}" in error["message"], error
            assert kernel_id not in [k["id"] for k in server.request("GET", "api/kernels")[1]]
            return
        result = restore(server, model["id"])  # (the chunk may be met before it answers)
        assert result["restore"]["status"] in ("ready", "failed"), result
        printed = ""
        try:
            ks = KernelSocket(server, kernel_id)
            printed = ks.execute("print(float(big.sum()) == big_sum)", timeout=20)[1]
            ks.close()
        except Exception:  # noqa: BLE001 - a killed kernel fails its client in many ways
            pass
        assert "True" not in printed, "the kernel computed with memory from a corrupt chunk"
        wait_until(lambda: status_of(server, kernel_id)["status"] == "failed", 60,
                   "the restore to fail")
        final = status_of(server, kernel_id)
        assert final["status"] == "failed" and f"chunk {name}" in final["message"], final
        assert "is damaged" in final["message"], final
        assert "killed pid(s)" in final["message"]
    finally:
        server.stop()


def test_eager_restore_from_the_store_has_all_memory_in_when_it_answers(tmp_path):
    server = Server(tmp_path, tmp_path / "ckpt",
                    args=["--CheckpointConfig.lazy_restore=False"]).start()
    try:
        kernel_id, model = kernel_with_state(server)
        no_scratch(tmp_path)
        result = restore(server, model["id"])
        assert not result["restore"]["lazy"], result
        assert result["restore"]["status"] == "all memory in", result
        ks = KernelSocket(server, kernel_id)
        ks.wait_for_output()
        check_state(ks)
        ks.close()
    finally:
        server.stop()


def test_checkpoint_failing_mid_stream_stores_nothing_and_the_kernel_runs_on(tmp_path):
    """A checkpoint streams the kernel's memory into the store as the dump reads it. One
    failing after pre-copy's first round (the 200 MB array: more than the chunkers queue,
    so chunks are stored by then) leaves no snapshot and no scratch, only chunks that gc
    removes, and the kernel runs on with its state."""
    from jupyter_ckpt.engine import faults

    server = Server(tmp_path, tmp_path / "ckpt",
                    env={faults.ENV: "dump.during-precopy"}).start()
    try:
        kernel_id = server.start_notebook_kernel()
        ks = KernelSocket(server, kernel_id)
        status, out, _ = ks.execute(KERNEL_STATE)
        assert status == "ok", out
        status, body = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
        assert status == 500 and "dump.during-precopy" in body["message"], (status, body)
        assert server.request("GET", "api/ckpt/snapshots")[1] == []
        assert not list((tmp_path / "ckpt" / "tmp").iterdir()), "scratch left behind"
        store = open_store(str(tmp_path / "ckpt" / "store"))
        orphans = store.usage()
        assert orphans.snapshots == 0 and orphans.chunks > 0, orphans
        assert store.gc() == orphans.chunk_bytes
        assert store.usage().chunks == 0
        check_state(ks)
        ks.close()
    finally:
        server.stop()
