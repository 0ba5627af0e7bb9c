"""Plain jupyter_client users opt in with the kernelspec; notebooks record their snapshots."""
import json
import os
import subprocess
import sys

import jupyter_client
import nbformat

from jupyter_ckpt import engine
from jupyter_ckpt.jupyter import notebook_meta
from jupyter_ckpt.jupyter.provisioner import CkptProvisioner


def test_kernelspec_selects_the_checkpointable_provisioner(tmp_path):
    prefix = tmp_path / "prefix"
    out = subprocess.run([sys.executable, "-m", "jupyter_ckpt", "kernelspec", "install",
                          "--prefix", str(prefix)], capture_output=True, text=True, check=True)
    spec_dir = prefix / "share" / "jupyter" / "kernels" / "python3-ckpt"
    assert str(spec_dir) in out.stdout
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (checkpointable)"

    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter")}
    os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]
    try:
        km = jupyter_client.KernelManager(kernel_name="python3-ckpt")
        km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        del os.environ["JUPYTER_PATH"]
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        assert isinstance(km.provisioner, CkptProvisioner)
        reply = kc.execute_interactive("%lsmagic", timeout=60)  # magics loaded automatically
        assert reply["content"]["status"] == "ok"
        assert engine.check(km.provisioner.pid) == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_notebook_metadata_round_trip(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("x = 1"))
    snap = {"id": "a" * 32, "label": "first", "created": "2026-11-29T00:00:00Z",
            "execution_count": 3, "size_bytes": 123}
    notebook_meta.record(nb, snap)
    notebook_meta.record(nb, {**snap, "label": "renamed"})  # same id: replaced, not duplicated
    notebook_meta.record(nb, {**snap, "id": "b" * 32})
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    loaded = nbformat.read(path, as_version=4)
    nbformat.validate(loaded)
    assert [s["id"] for s in notebook_meta.snapshots(loaded)] == ["a" * 32, "b" * 32]
    assert notebook_meta.snapshots(loaded)[0]["label"] == "renamed"
    assert "size_bytes" not in notebook_meta.snapshots(loaded)[0]
    notebook_meta.forget(loaded, "a" * 32)
    assert [s["id"] for s in notebook_meta.snapshots(loaded)] == ["b" * 32]
    plain = nbformat.v4.new_notebook()
    assert notebook_meta.snapshots(plain) == []  # optional: absent is fine
