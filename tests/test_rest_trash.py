"""Deleting a snapshot over REST moves it to the trash: gone from every listing and from
restore at once, taken back by POST snapshots/ID/undelete, and deleted for good from the
store once it has been there CheckpointConfig.trash_seconds."""
from __future__ import annotations

import time

from jupyter_server_harness import KernelSocket, Server
from test_jupyter_server import checkpoint

TRASH_SECONDS = 2


def _until(probe, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_delete_undelete_and_purge(tmp_path):
    server = Server(tmp_path, tmp_path / "ckpt",
                    args=[f"--CheckpointConfig.trash_seconds={TRASH_SECONDS}"]).start()
    try:
        kernel_id = server.start_notebook_kernel()
        ks = KernelSocket(server, kernel_id)
        assert ks.execute("x = 41")[0] == "ok"
        kept = checkpoint(server, kernel_id, "kept")
        model = checkpoint(server, kernel_id, "deleted, then undone")
        ks.close()
        sid = model["id"]
        record = tmp_path / "ckpt" / "store" / "snapshots" / f"{sid}.json"

        assert server.request("POST", f"api/ckpt/snapshots/{sid}/undelete")[0] == 404  # not deleted
        assert server.request("DELETE", f"api/ckpt/snapshots/{sid}")[0] == 204
        assert server.request("GET", f"api/ckpt/snapshots/{sid}")[0] == 404
        assert server.request("DELETE", f"api/ckpt/snapshots/{sid}")[0] == 404
        listed = server.request("GET", "api/ckpt/snapshots?notebook_path=demo.ipynb")[1]
        assert [m["id"] for m in listed] == [kept["id"]]
        assert server.request("POST", f"api/ckpt/snapshots/{sid}/restore", {})[0] == 404
        assert server.request("GET", f"api/ckpt/snapshots/{sid}/check")[0] == 404

        status, error = server.request("POST", f"api/ckpt/snapshots/{sid}/undelete", {"now": 1})
        assert status == 400 and error["field"] == "now", error
        status, error = server.request("POST", "api/ckpt/snapshots/nope/undelete")
        assert status == 400 and error["field"] == "snapshot_id", error
        status, back = server.request("POST", f"api/ckpt/snapshots/{sid}/undelete")
        assert status == 200 and back == model, back
        listed = server.request("GET", "api/ckpt/snapshots?notebook_path=demo.ipynb")[1]
        assert [m["id"] for m in listed] == [sid, kept["id"]]
        # taken back: restorable again
        assert server.request("POST", f"api/ckpt/snapshots/{sid}/restore", {})[0] == 200

        assert server.request("DELETE", f"api/ckpt/snapshots/{sid}")[0] == 204
        _until(lambda: not record.exists(), "the purge of the deleted snapshot")
        _until(lambda: not (tmp_path / "ckpt" / "store" / "trash" / f"{sid}.json").exists(),
               "its trash marker to go")
        assert server.request("POST", f"api/ckpt/snapshots/{sid}/undelete")[0] == 404
        assert server.request("GET", f"api/ckpt/snapshots/{kept['id']}")[0] == 200
    finally:
        server.stop()
