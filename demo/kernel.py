"""The demo's view of a kernel: start it, run cells in it, and find it again after a restore.

Two implementations with the same members; demo/run.py uses nothing else:

    start()            launch the kernel; returns its pid
    pid                the kernel process
    execute(code)      run one cell; returns the repr of its value (None if it has none)
    reap()             the kernel died (dump --kill): collect it so its pid is free again
    reconnect()        after a restore: wait until the kernel answers again
    shutdown()         stop the kernel, whoever its parent is now

`MiniKernel` drives demo/minikernel.py over two named FIFOs: no dependencies, nothing but
files and pipes to save. `JupyterKernel` is a real ipykernel started by jupyter_client,
talking ZeroMQ over TCP (`scripts/demo --kernel jupyter`).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


class KernelError(RuntimeError):
    pass


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class MiniKernel:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.requests_path = workdir / "requests.fifo"
        self.replies_path = workdir / "replies.fifo"
        self.log_path = workdir / "kernel.log"
        self.popen: subprocess.Popen | None = None
        self.pid = 0
        self._requests = self._replies = -1
        self._pending = b""

    def start(self) -> int:
        os.mkfifo(self.requests_path, 0o600)
        os.mkfifo(self.replies_path, 0o600)
        # read-write opens of a FIFO never block, and survive the kernel's restart
        self._requests = os.open(self.requests_path, os.O_RDWR | os.O_CLOEXEC)
        self._replies = os.open(self.replies_path, os.O_RDWR | os.O_CLOEXEC)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, str(HERE / "minikernel.py"), str(self.requests_path),
                 str(self.replies_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True)  # as Jupyter starts its kernels
        self.pid = self.popen.pid
        return self.pid

    def execute(self, code: str, timeout: float = 60.0) -> str | None:
        line = json.dumps({"code": code}).encode() + b"\n"
        view = memoryview(line)
        while view:
            view = view[os.write(self._requests, view):]
        reply = json.loads(self._read_line(timeout))
        if not reply["ok"]:
            raise KernelError(reply["error"])
        return reply["result"]

    def _read_line(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            if not alive(self.pid):
                raise KernelError(f"the kernel (pid {self.pid}) died; see {self.log_path}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelError(f"no reply from the kernel (pid {self.pid}) in {timeout:.0f} s")
            ready, _, _ = select.select([self._replies], [], [], min(left, 0.2))
            if ready:
                self._pending += os.read(self._replies, 1 << 16)
        line, self._pending = self._pending.split(b"\n", 1)
        return line

    def reconnect(self) -> None:
        pass  # the FIFOs never went away: the driver kept them open

    def reap(self) -> None:
        if self.popen is not None:
            self.popen.wait(timeout=30)
            self.popen = None

    def shutdown(self) -> None:
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        if self.popen is not None:
            self.reap()
        else:  # restored: our child again only if we are its subreaper
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        for fd in (self._requests, self._replies):
            if fd >= 0:
                os.close(fd)
        self._requests = self._replies = -1


class JupyterKernel:
    """A real ipykernel, started and driven by jupyter_client as a notebook server would.

    Established TCP connections come back from a restore reset; ZeroMQ reconnects on its
    own, so after a restore we only wait for the kernel's output channel to flow again.
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.log_path = workdir / "kernel.log"
        self.pid = 0
        self.km = self.kc = None

    def start(self) -> int:
        import jupyter_client

        self._log = open(self.log_path, "ab")
        self.km = jupyter_client.KernelManager(kernel_name="python3",
                                               connection_file=str(self.workdir / "kernel.json"))
        # independent: no JPY_PARENT_PID. ipykernel exits as soon as its parent pid differs
        # from that one, and a restored process's parent is at first the restorer.
        self.km.start_kernel(stdout=self._log, stderr=self._log, cwd=str(self.workdir),
                             independent=True)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.pid = self.km.provisioner.process.pid
        return self.pid

    def execute(self, code: str, timeout: float = 60.0) -> str | None:
        value: list[str] = []
        errors: list[str] = []

        def on_output(msg: dict) -> None:
            if msg["msg_type"] == "execute_result":
                value.append(msg["content"]["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))

        try:
            reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=on_output)
        except TimeoutError:
            raise KernelError(f"no reply from the kernel (pid {self.pid}) in {timeout:.0f} s") from None
        if reply["content"]["status"] != "ok":
            raise KernelError("".join(errors) or str(reply["content"]))
        return value[-1] if value else None

    def reconnect(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(self.pid):
                raise KernelError(f"the restored kernel (pid {self.pid}) died; see {self.log_path}")
            try:
                if self.execute("'ping'", timeout=2) == "'ping'":
                    return
            except KernelError:
                pass
        raise KernelError(f"the restored kernel (pid {self.pid}) does not answer")

    def reap(self) -> None:
        self.km.provisioner.process.wait(timeout=30)

    def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.km is not None:
            self.km.cleanup_resources()
            self._log.close()
