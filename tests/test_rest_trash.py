"""Deleting a snapshot over REST moves it to the trash: gone from every listing and from
restore at once, taken back by POST snapshots/ID/undelete, and deleted for good from the
store once it has been there CheckpointConfig.trash_seconds."""
from __future__ import annotations

import calendar
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
        status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {
            "label": "deleted, then undone", "notebook": {
                "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}})
        assert status == 201 and model["has_notebook"], model
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
        notebook = tmp_path / "ckpt" / "store" / "notebooks" / f"{sid}.json"
        _until(lambda: not notebook.exists(), "its notebook to go")
        _until(lambda: not (tmp_path / "ckpt" / "store" / "trash" / f"{sid}.json").exists(),
               "its trash marker to go")
        assert server.request("POST", f"api/ckpt/snapshots/{sid}/undelete")[0] == 404
        assert server.request("GET", f"api/ckpt/snapshots/{kept['id']}")[0] == 200
    finally:
        server.stop()


def test_bulk_delete_by_ids_and_by_age(tmp_path):
    server = Server(tmp_path, tmp_path / "ckpt").start()
    try:
        kernel_id = server.start_notebook_kernel()
        old = checkpoint(server, kernel_id, "old")
        taken = calendar.timegm(time.strptime(old["created"], "%Y-%m-%dT%H:%M:%SZ"))
        _until(lambda: time.time() >= taken + 3, "3 s to pass")
        new = checkpoint(server, kernel_id, "new")
        newer = checkpoint(server, kernel_id, "newer")

        def bulk(body):
            return server.request("POST", "api/ckpt/snapshots/delete", body)

        def listed():
            return [m["id"] for m in server.request("GET", "api/ckpt/snapshots")[1]]

        for body, field in (({}, "ids"), ({"ids": [new["id"]], "older_than_seconds": 1}, "ids"),
                            ({"ids": [new["id"], new["id"]]}, "ids"), ({"ids": []}, "ids"),
                            ({"ids": ["x"]}, "ids[0]"), ({"older_than_seconds": -1}, "older_than_seconds"),
                            ({"older_than_seconds": True}, "older_than_seconds"),
                            ({"ids": [new["id"]], "notebook_path": "demo.ipynb"}, "notebook_path")):
            status, error = bulk(body)
            assert status == 400 and error["field"] == field, (body, error)
        assert listed() == [newer["id"], new["id"], old["id"]]  # nothing deleted

        # of another notebook: none; of this one, older than between "old" and "new": "old"
        assert bulk({"older_than_seconds": 0, "notebook_path": "other.ipynb"})[1] == \
            {"deleted": [], "missing": []}
        status, result = bulk({"older_than_seconds": time.time() - (taken + 1.5),
                               "notebook_path": "demo.ipynb"})
        assert status == 200 and result == {"deleted": [old["id"]], "missing": []}, result
        assert listed() == [newer["id"], new["id"]]

        gone = "0" * 32
        assert bulk({"ids": [new["id"], gone]})[1] == {"deleted": [new["id"]], "missing": [gone]}
        assert listed() == [newer["id"]]
        for model in (old, new):  # each can be taken back
            assert server.request("POST", f"api/ckpt/snapshots/{model['id']}/undelete")[0] == 200
        assert listed() == [newer["id"], new["id"], old["id"]]
    finally:
        server.stop()
