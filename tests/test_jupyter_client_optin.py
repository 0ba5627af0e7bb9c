"""Plain jupyter_client users opt in with the kernelspec; notebooks record their snapshots."""
import asyncio
import json
import subprocess
import sys

import jupyter_client
import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager

from jupyter_ckpt import engine
from jupyter_ckpt.jupyter import notebook_meta
from jupyter_ckpt.jupyter.provisioner import CkptProvisioner


@pytest.fixture
def ckpt_kernelspec(tmp_path, monkeypatch):
    """`jupyter-ckpt kernelspec install` into a prefix that jupyter_client searches."""
    prefix = tmp_path / "prefix"
    out = subprocess.run([sys.executable, "-m", "jupyter_ckpt", "kernelspec", "install",
                          "--prefix", str(prefix)], capture_output=True, text=True, check=True)
    spec_dir = prefix / "share" / "jupyter" / "kernels" / "python3-ckpt"
    assert str(spec_dir) in out.stdout
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return spec_dir


def test_kernelspec_selects_the_checkpointable_provisioner(ckpt_kernelspec):
    spec = json.loads((ckpt_kernelspec / "kernel.json").read_text())
    assert spec["display_name"] == "Python 3 (checkpointable)"
    km = jupyter_client.KernelManager(kernel_name="python3-ckpt")
    km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        assert isinstance(km.provisioner, CkptProvisioner)
        # our magics were loaded automatically: %checkpoint is there, and it is ours
        owner = "type(get_ipython().find_line_magic('checkpoint').__self__).__qualname__"
        reply = kc.execute_interactive("", user_expressions={"owner": owner}, timeout=60)
        assert reply["content"]["status"] == "ok"
        answer = reply["content"]["user_expressions"]["owner"]
        assert answer.get("data", {}).get("text/plain") == "'CheckpointMagics'", answer
        assert engine.check(km.provisioner.pid, tcp_close=True) == []  # (ZeroMQ reconnects)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_execution_count_is_followed_and_can_be_asked(ckpt_kernelspec):
    """Snapshots record the count the IOPub watcher follows; when the watcher saw no cell
    (none ran yet), the service asks the kernel itself."""
    async def scenario() -> None:
        km = AsyncKernelManager(kernel_name="python3-ckpt")
        await km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            assert await km.provisioner.ask_execution_count() is None  # no cell ran yet
            for code in ("a = 1", "b = 2", "c = a + b"):
                reply = await kc.execute_interactive(code, timeout=60)
                assert reply["content"]["status"] == "ok"
            # (the provisioner's own IOPub watcher may not have seen the last idle yet: it
            # does not ask a kernel it believes busy)
            for _ in range(200):
                count = await km.provisioner.ask_execution_count(timeout=30)
                if count is not None:
                    break
                await asyncio.sleep(0.05)
            assert count == 3
            reply = await kc.execute_interactive("print(c)", timeout=60)
            assert reply["content"]["execution_count"] == 4  # the silent asks took no number
            for _ in range(100):
                if km.provisioner.execution_count == 4:
                    break
                await asyncio.sleep(0.05)
            assert km.provisioner.execution_count == 4
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    asyncio.run(scenario())


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
