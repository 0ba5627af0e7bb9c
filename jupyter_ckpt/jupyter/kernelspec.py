"""The "Python 3 (checkpointable)" kernelspec: ipykernel launched by ckpt-provisioner, so
plain jupyter_client users (no Jupyter Server extension) can opt in per kernel."""
from __future__ import annotations

import json
import os
import sys
import tempfile

from jupyter_client.kernelspec import KernelSpecManager


def spec() -> dict:
    return {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (checkpointable)",
        "language": "python",
        "metadata": {"kernel_provisioner": {"provisioner_name": "ckpt-provisioner"}},
    }


def install(name: str = "python3-ckpt", user: bool = False, prefix: str | None = None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(spec(), f, indent=1)
        return KernelSpecManager().install_kernel_spec(tmp, name, user=user, prefix=prefix)
