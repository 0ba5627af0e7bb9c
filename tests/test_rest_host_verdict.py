"""The host verdict over REST (GET /api/ckpt/snapshots/ID/check): a snapshot made on
another "host" (a server in a UTS namespace of its own, sharing the store) is restorable
there with a line saying where it was made, and refused by name once a library its kernel
mapped is gone."""
from __future__ import annotations

from jupyter_server_harness import KernelSocket, Server
from test_jupyter_server import checkpoint

LOAD_COPY = """
import ctypes, shutil
libm = next(line.split()[-1] for line in open('/proc/self/maps') if '/libm.so' in line)
shutil.copy(libm, {copy!r})
lib = ctypes.CDLL({copy!r})
print(lib.cos.__name__)
"""


def test_host_verdict_of_a_snapshot_made_on_another_host(tmp_path):
    notebooks, store = tmp_path / "home", tmp_path / "store"
    notebooks.mkdir()
    copy = str(tmp_path / "libm-copy.so")

    def host(name: str) -> Server:
        local = tmp_path / name
        local.mkdir()
        return Server(notebooks, local / "ckpt", env={"JUPYTER_CKPT_STORE": str(store)},
                      hostname=name, runtime_dir=local / "runtime")

    a = host("host-a").start()
    try:
        kernel_id = a.start_notebook_kernel()
        ks = KernelSocket(a, kernel_id)
        status, out, _ = ks.execute(LOAD_COPY.format(copy=copy))
        assert status == "ok" and out.strip() == "cos", out
        snapshot = checkpoint(a, kernel_id, "with a library copy")["id"]
        ks.close()
        status, here = a.request("GET", f"api/ckpt/snapshots/{snapshot}/check")
        assert status == 200 and here["restorable"], here
        assert not any("made on host" in line["text"] for line in here["lines"]), here
        assert a.request("GET", "api/ckpt/host")[1]["hostname"] == "host-a"
    finally:
        a.stop()

    b = host("host-b").start()
    try:
        assert b.request("GET", "api/ckpt/host")[1]["hostname"] == "host-b"
        listed = b.request("GET", "api/ckpt/snapshots")[1]
        assert [(m["id"], m["host"]["hostname"]) for m in listed] == [(snapshot, "host-a")]

        status, there = b.request("GET", f"api/ckpt/snapshots/{snapshot}/check")
        assert status == 200 and there["restorable"], there
        assert {"text": "made on host host-a (this is host-b)", "fatal": False} in there["lines"]

        (tmp_path / "libm-copy.so").unlink()  # the library the kernel mapped is gone here
        status, gone = b.request("GET", f"api/ckpt/snapshots/{snapshot}/check")
        assert status == 200 and not gone["restorable"], gone
        first = gone["lines"][0]
        assert first["fatal"] and first["text"].startswith(f"mapped file {copy}"), gone
        assert [line for line in gone["lines"] if not line["fatal"]] == [
            line for line in there["lines"] if not line["fatal"]]

        status, error = b.request("GET", "api/ckpt/snapshots/not-an-id/check")
        assert status == 400 and error["field"] == "snapshot_id", error
        status, error = b.request("GET", f"api/ckpt/snapshots/{'0' * 32}/check")
        assert status == 404 and error["reason"] == "NotFound", error
        assert b.request("GET", "api/ckpt/operations")[1] == []
    finally:
        b.stop()
