"""The server extension's settings: which kernels are checkpointable."""
import os
import subprocess
import sys

import pytest

from jupyter_server_harness import KernelSocket, Server


@pytest.fixture
def ckpt_kernelspec_path(tmp_path):
    """A JUPYTER_PATH holding `python3-ckpt`, the kernelspec that selects ckpt-provisioner."""
    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "jupyter_ckpt", "kernelspec", "install",
                    "--prefix", str(prefix)], capture_output=True, check=True)
    return str(prefix / "share" / "jupyter")


def _start_kernel(server: Server, name: str) -> str:
    status, kernel = server.request("POST", "api/kernels", {"name": name})
    assert status == 201, kernel
    return kernel["id"]


def test_every_kernel_off_leaves_other_kernelspecs_alone(tmp_path, ckpt_kernelspec_path):
    path = os.pathsep.join(filter(None, [ckpt_kernelspec_path, os.environ.get("JUPYTER_PATH")]))
    server = Server(tmp_path, tmp_path / "ckpt", env={"JUPYTER_PATH": path},
                    args=("--CheckpointConfig.every_kernel=False",)).start()
    try:
        plain = _start_kernel(server, "python3")
        status, body = server.request("POST", f"api/ckpt/kernels/{plain}/snapshots", {})
        assert status == 409, body
        assert "not checkpointable" in body["message"] and "python3" in body["message"]
        assert server.request("GET", "api/ckpt/snapshots")[1] == []

        chosen = _start_kernel(server, "python3-ckpt")
        chosen_socket = KernelSocket(server, chosen)
        chosen_socket.execute("x = 41 + 1")
        chosen_socket.close()
        status, model = server.request("POST", f"api/ckpt/kernels/{chosen}/snapshots", {})
        assert status == 201, model
        # the plain kernel still runs as before, untouched
        plain_socket = KernelSocket(server, plain)
        assert plain_socket.execute("print(6 * 7)")[1].strip() == "42"
        plain_socket.close()
    finally:
        server.stop()


def test_every_setting_is_listed_with_the_value_in_force(tmp_path):
    """`jupyter server --help-all` prints the server's own classes before it finds any
    extension, so it can list no extension's settings: `jupyter-ckpt config` lists each of
    CheckpointConfig's, with its help and the value a server started here would use (from
    its config files and the environment)."""
    from jupyter_ckpt.jupyter.config import CheckpointConfig

    (tmp_path / "jupyter_server_config.py").write_text("c.CheckpointConfig.trash_seconds = 42\n")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path),
           "JUPYTER_CKPT_STORE": "s3://team-bucket/snapshots"}
    out = subprocess.run([sys.executable, "-m", "jupyter_ckpt", "config"], env=env,
                         capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    names = CheckpointConfig.class_trait_names(config=True)
    assert {"store_url", "snapshot_dir", "every_kernel", "lazy_restore", "trash_seconds"} <= \
        set(names)
    for name in names:
        trait = CheckpointConfig.class_traits()[name]
        assert f"--CheckpointConfig.{name}=" in out, name
        assert " ".join(trait.help.split()) in flat, name
    assert "--CheckpointConfig.trash_seconds=<Float> " in flat and "Current: 42.0" in flat
    assert "Current: 's3://team-bucket/snapshots'" in flat
