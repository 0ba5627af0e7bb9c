"""A real, unmodified ipykernel started by jupyter_client is dumped, killed and restored, and
a client on the same connection file finds its state again.

The engine is called in-process, so the restored kernel is a child of this test process,
which is also the parent it was started by (ipykernel exits when its parent PID changes).
"""
from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import jupyter_client
import psutil
import pytest

from conftest import run_cli
from jupyter_server_harness import PYTHON_CHECK, PYTHON_EXPECTED, python_state
from jupyter_ckpt import engine


class Kernel:
    def __init__(self, workdir):
        log = open(workdir / "kernel.log", "ab")
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(stdout=log, stderr=log, cwd=str(workdir))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.pid = self.km.provisioner.process.pid

    def run(self, code: str, timeout: float = 60) -> tuple[str, str, int]:
        out: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return reply["content"]["status"], "".join(out), reply["content"]["execution_count"]

    def wait_for_output(self, timeout: float = 60) -> None:
        """After a restore the client's IOPub subscription has to reconnect first: what the
        kernel publishes before that is lost, and an execution whose idle status was lost
        never ends, so each attempt gets a few seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if "alive" in self.run("print('alive')", timeout=5)[1]:
                    return
            except TimeoutError:
                pass
            time.sleep(0.2)
        pytest.fail("restored kernel never produced output")

    def close(self, pid: int) -> None:
        self.kc.stop_channels()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        self.km.cleanup_resources()


def test_ipykernel_dump_kill_restore(tmp_path):
    kernel = Kernel(tmp_path)
    try:
        status, out, count = kernel.run(python_state(2_000_000, str(tmp_path / "data.txt")))
        assert status == "ok", out
        started = psutil.Process(kernel.pid).create_time()
        tids = sorted(os.listdir(f"/proc/{kernel.pid}/task"))

        assert engine.check(kernel.pid, tcp_close=True) == []  # (ZeroMQ reconnects)
        engine.dump(kernel.pid, str(tmp_path / "image"), kill=True, tcp_close=True)
        kernel.km.provisioner.process.wait(timeout=30)  # we are its parent: reap it

        restored = engine.restore(str(tmp_path / "image"))
        assert restored.pid == kernel.pid
        assert sorted(os.listdir(f"/proc/{kernel.pid}/task")) == tids
        assert psutil.Process(kernel.pid).create_time() != started
        assert psutil.Process(kernel.pid).ppid() == os.getpid()

        kernel.wait_for_output()
        status, out, new_count = kernel.run(PYTHON_CHECK)
        assert status == "ok", out
        assert out.split() == PYTHON_EXPECTED, out
        assert new_count > count
    finally:
        kernel.close(kernel.pid)


def test_cli_restore_detached_into_a_pid_namespace_keeps_the_kernel_alive(tmp_path):
    """From the CLI, `restore --detach` would leave the kernel without the parent it checks
    for (it exits); with --pid-ns the stand-in parent carries that PID and outlives the CLI."""
    kernel = Kernel(tmp_path)
    outer = kernel.pid
    try:
        kernel.run("x = 42")
        run_cli("dump", kernel.pid, tmp_path / "image", "--kill", "--tcp-close")
        kernel.km.provisioner.process.wait(timeout=30)
        result = run_cli("restore", tmp_path / "image", "--detach", "--pid-ns")
        outer = int(result.stdout.split()[-1])
        time.sleep(3)  # ipykernel looks at its parent every second
        assert psutil.Process(outer).status() != psutil.STATUS_ZOMBIE, "the kernel shut itself down"
        kernel.wait_for_output()
        inside = kernel.run(f"import os; print(x, os.getpid() == {kernel.pid})")[1].split()
        assert inside == ["42", "True"], "inside its namespace the kernel has its own PID"
    finally:
        kernel.close(outer)


def test_a_kernel_started_from_a_terminal(tmp_path):
    """ipykernel keeps copies of the terminal it was started on (at fds like 41 and 44); they
    are standard streams like fds 0-2, so a kernel of `jupyter lab` run in a terminal can be
    checkpointed, and the copies lead to the restorer's terminal again."""
    driver = Path(__file__).parent / "programs" / "kernel_on_a_terminal.py"
    child, master = pty.fork()
    if child == 0:  # (under pytest, ipykernel would leave fds 1 and 2 alone)
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        os.execve(sys.executable, [sys.executable, str(driver), str(tmp_path)], env)
    output = b""
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the driver and the kernel let go of the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if b"RESULT done" in output:
                break
    finally:
        os.kill(child, signal.SIGKILL) if b"RESULT done" not in output else None
        os.waitpid(child, 0)
        os.close(master)
    results = [line.split(" ", 1)[1] for line in output.decode(errors="replace").splitlines()
               if line.startswith("RESULT ")]
    text = output.decode(errors="replace")[-3000:]
    assert results and results[-1] == "done", text
    copies = next(r for r in results if r.startswith("copies ["))
    assert copies != "copies []", "ipykernel kept no copy of its terminal: the test proves nothing"
    assert "blockers 0 []" in results, text
    assert "x 42" in results, text
    assert f"copies after {copies.split(' ', 1)[1]}" in results, text
