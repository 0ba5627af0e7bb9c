"""Kernels other than ipykernel, against a real Jupyter Server: IRkernel (R, from the
system's r-base-core and r-cran-irkernel) and xeus-python (a C++ kernel, from PyPI). Each is
checkpointed over REST, the server is restarted (its kernels die with it), the snapshot is
restored by the new server, and the kernel's own code checks that its state came back."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_server_harness import (PYTHON_CHECK, PYTHON_EXPECTED, KernelSocket, Server,
                                    python_state)

R_STATE = """
number <- 42
square <- function(v) v * v
counter <- local({ n <- 0; function() { n <<- n + 1; n } })
invisible(counter()); invisible(counter())
set.seed(7); big <- runif(5e6)  # 40 MB
big_sum <- sum(big)
writeLines(c("one", "two", "three"), "r-data.txt")
con <- file("r-data.txt", open = "r")
first <- readLines(con, n = 1)
cat(Sys.getpid(), "\\n")
"""
R_CHECK = 'cat(number, square(7), counter(), sum(big) == big_sum, first, readLines(con, n = 1), "\\n")'
R_EXPECTED = ["42", "49", "3", "TRUE", "one", "two"]

XPYTHON_STATE = python_state(5_000_000, "xpython-data.txt") + "print(os.getpid())\n"  # 40 MB


@pytest.fixture(scope="module")
def r_kernels(tmp_path_factory) -> Path:
    """A Jupyter data directory holding IRkernel's kernelspec ("ir"), registered the way
    IRkernel's documentation says (IRkernel::installspec) with this environment's jupyter."""
    if shutil.which("R") is None:
        pytest.fail("R is not installed: apt-get install r-base-core r-cran-irkernel "
                    "(.ci/run installs them)")
    data = tmp_path_factory.mktemp("jupyter-data")
    env = {**os.environ, "JUPYTER_DATA_DIR": str(data),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    done = subprocess.run(["R", "--vanilla", "--quiet", "-e", "IRkernel::installspec(user = TRUE)"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (data / "kernels" / "ir" / "kernel.json").is_file(), done.stdout + done.stderr
    return data


def checkpoint(server: Server, kernel_id: str) -> dict:
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {"label": "state"})
    assert status == 201, f"{model}\n{server.log()}"
    return model


def survives_a_server_restart(tmp_path: Path, kernel: str, env: dict[str, str], state: str,
                              check: str, alive: str) -> str:
    """Set `state` up in a new `kernel` (its last word of output: the kernel's pid),
    checkpoint it, restart the server, restore it: what `check` prints in the restored
    kernel (`alive` prints "alive")."""
    first = Server(tmp_path, tmp_path / "ckpt", env=env).start()
    try:
        kernel_id = first.start_notebook_kernel(f"{kernel}.ipynb", kernel=kernel)
        ks = KernelSocket(first, kernel_id)
        status, out, _ = ks.execute(state)
        assert status == "ok", out
        pid = int(out.split()[-1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # ipykernel's extension is not for it
            assert b"--ext=jupyter_ckpt" not in f.read().split(b"\0")
        model = checkpoint(first, kernel_id)
        assert model["kernel_name"] == kernel and model["notebook_path"] == f"{kernel}.ipynb"
        ks.close()
    finally:
        first.stop()  # shuts its kernels down
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    second = Server(tmp_path, tmp_path / "ckpt", env=env).start()
    try:
        status, result = second.request("POST", f"api/ckpt/snapshots/{model['id']}/restore", {})
        assert status == 200, f"{result}\n{second.log()}"
        assert result["kernel_id"] == kernel_id and not result["fork"]
        ks = KernelSocket(second, kernel_id)
        ks.wait_for_output(code=alive)
        status, out, _ = ks.execute(check)
        assert status == "ok", out
        kernels = {k["id"]: k for k in second.request("GET", "api/kernels")[1]}
        assert kernels[kernel_id]["name"] == kernel
        time.sleep(2)  # a kernel whose parent looks wrong would have exited by now
        assert "alive" in ks.execute(alive)[1], second.log()
        ks.close()
        log = (tmp_path / f"server-{second.port}.log").read_text(errors="replace")
        assert "Traceback" not in log, log
        # it was not sent ipykernel's control message (which it does not know, so the
        # restore waited for an answer that never came)
        assert "jupyter_ckpt_rebind_request" not in log and "did not confirm" not in log, log
        return out
    finally:
        second.stop()


def test_irkernel_comes_back_after_a_server_restart(tmp_path, r_kernels):
    out = survives_a_server_restart(tmp_path, "ir", {"JUPYTER_PATH": str(r_kernels)}, R_STATE,
                                    R_CHECK, 'cat("alive\\n")')
    assert out.split() == R_EXPECTED, out


def test_xeus_python_comes_back_after_a_server_restart(tmp_path):
    out = survives_a_server_restart(tmp_path, "xpython", {}, XPYTHON_STATE, PYTHON_CHECK,
                                    "print('alive')")
    assert out.split() == PYTHON_EXPECTED, out
