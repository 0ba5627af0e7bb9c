"""Snapshots that travel: two Jupyter servers on two "hosts" (each with its own host name in
a UTS namespace of its own, its own snapshot and runtime directories) share one store in a
real S3-compatible object store (SeaweedFS). A kernel checkpointed on A comes back on B
after A is gone, and B's next snapshot of it stores only what changed."""
from __future__ import annotations

import shutil

from conftest import new_bucket
from jupyter_server_harness import KernelSocket, Server
from test_jupyter_server import checkpoint, restore

STATE = """
import socket, numpy as np
x = 'made on host A'
gen = iter(range(10)); next(gen)
data = np.random.default_rng(3).random(4_000_000)  # 32 MB that does not compress
total = float(data.sum())
print(socket.gethostname())
"""


def test_checkpoint_on_one_host_restore_on_another(tmp_path, seaweedfs):
    store = f"s3://{new_bucket(seaweedfs)}/team"
    notebooks = tmp_path / "home"  # shared by both hosts, as a network home directory is
    notebooks.mkdir()

    def host(name: str) -> Server:
        local = tmp_path / name
        return Server(notebooks, local / "ckpt", env={"JUPYTER_CKPT_STORE": store},
                      hostname=name, runtime_dir=local / "runtime")

    a = host("host-a").start()
    try:
        kernel_id = a.start_notebook_kernel()
        ks = KernelSocket(a, kernel_id)
        status, out, _ = ks.execute(STATE)
        assert status == "ok" and out.strip() == "host-a", out
        model = checkpoint(a, kernel_id, "on A")
        ks.close()
    finally:
        a.stop()  # shuts its kernel down
    shutil.rmtree(tmp_path / "host-a")  # A is gone for good, with its local state

    b = host("host-b").start()
    try:
        listed = b.request("GET", "api/ckpt/snapshots")[1]
        assert [m["id"] for m in listed] == [model["id"]], listed
        assert restore(b, model["id"])["kernel_id"] == kernel_id
        ks = KernelSocket(b, kernel_id)
        ks.wait_for_output()
        out = ks.execute("print(x, next(gen), socket.gethostname(), float(data.sum()) == total)")[1]
        assert out.split() == ["made", "on", "host", "A", "1", "host-b", "True"], out

        # B's snapshot of the same kernel shares A's chunks in the store
        again = checkpoint(b, kernel_id, "on B")
        assert again["size_bytes"] > 32e6
        assert again["stored_bytes"] < 0.25 * again["size_bytes"], again
        ks.close()
    finally:
        b.stop()
