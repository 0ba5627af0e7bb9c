"""What `pip install jupyter-ckpt` puts in place: the server config that enables the
extension for every Jupyter Server, and the kernel provisioner entry point."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_server_config_and_provisioner(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("jupyter_ckpt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        config = next(n for n in names if n.endswith("etc/jupyter/jupyter_server_config.d/jupyter_ckpt.json"))
        assert json.loads(zf.read(config))["ServerApp"]["jpserver_extensions"]["jupyter_ckpt.jupyter"]
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "ckpt-provisioner = jupyter_ckpt.jupyter.provisioner:CkptProvisioner" in entry_points
    assert "jupyter-ckpt = jupyter_ckpt.cli:main" in entry_points
