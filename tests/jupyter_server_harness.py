"""A real Jupyter Server in a subprocess, and a kernel client speaking the websocket protocol
(what a browser does), for the Jupyter-layer tests."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Sequence

from tornado.websocket import websocket_connect

from jupyter_ckpt.engine.lazy_keeper import descendants
from unprivileged import NOBODY, become_nobody

TOKEN = "ckpt-test-token"
BASE = "/base/"


def python_state(floats: int, data_file: str) -> str:
    """Code that gives a Python kernel a bit of everything a notebook holds, for a test to
    checkpoint it: numbers, a lambda, a half-consumed generator, an array of `floats` random
    doubles, a thread that keeps counting, a file (`data_file`) open at an offset. Shared by
    the tests of every Python kernel, so that PYTHON_CHECK checks them all alike."""
    return f"""
import os, threading, time
import numpy as np
number = 42
square = lambda v: v * v
gen = (i * i for i in range(1000))
first = [next(gen) for _ in range(3)]
big = np.random.default_rng(7).random({floats})
big_sum = float(big.sum())
ticks = [0]
def tick():
    while True:
        ticks[0] += 1
        time.sleep(0.01)
threading.Thread(target=tick, daemon=True).start()
f = open({data_file!r}, "w+")
f.write("0123456789")
f.seek(4)
"""


# Run in a kernel given python_state(), once restored: it prints PYTHON_EXPECTED if the state
# came back (the thread counts on, the file reads on from its offset).
PYTHON_CHECK = """
t0 = ticks[0]; time.sleep(0.3)
print(number, square(7), next(gen), float(big.sum()) == big_sum, f.tell(), f.read(), ticks[0] > t0)
"""
PYTHON_EXPECTED = ["42", "49", "9", "True", "4", "456789", "True"]

# What the Jupyter-layer tests put in an ipykernel before checkpointing it: python_state() with
# a 200 MB array, and a sqlite connection.
KERNEL_STATE = python_state(25_000_000, "data.txt") + """import sqlite3
db = sqlite3.connect("state.db")
db.execute("create table if not exists t (v)")
db.execute("insert into t values (7)")
db.commit()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, workdir: Path, ckpt_dir: Path, as_nobody: bool = False,
                 env: dict[str, str] | None = None, hostname: str | None = None,
                 runtime_dir: Path | None = None, args: Sequence[str] = ()):
        """`as_nobody`: the server runs as an unprivileged user (see unprivileged.py).
        `hostname`: it runs in a UTS namespace of its own with that host name, as on
        another machine; `env` adds to its environment; `runtime_dir` defaults to
        workdir/runtime; `args` are more command-line options of the server."""
        self.workdir, self.ckpt_dir = workdir, ckpt_dir
        self.as_nobody = as_nobody
        self.extra_env, self.hostname = env or {}, hostname
        self.args = list(args)
        self.runtime_dir = runtime_dir or workdir / "runtime"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{BASE}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        # The config file the package ships (an editable install does not put it in place;
        # test_packaging checks that a built wheel carries it).
        shipped = str(Path(__file__).resolve().parent.parent / "etc" / "jupyter")
        config_path = os.pathsep.join(filter(None, [shipped, os.environ.get("JUPYTER_CONFIG_PATH")]))
        # Without pytest's marker, so kernels capture fds 1 and 2 as they do for users.
        env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
               "JUPYTER_CONFIG_PATH": config_path, "JUPYTER_CKPT_DIR": str(self.ckpt_dir),
               "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
               "IPYTHONDIR": str(self.workdir / "ipython"), **self.extra_env}
        if self.as_nobody:
            env["HOME"] = str(self.workdir)
        log = open(self.workdir / f"server-{self.port}.log", "ab")
        if self.as_nobody:  # the kernels hold it too: a restore as that user reopens it
            os.fchown(log.fileno(), NOBODY, NOBODY)
        host = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.hostname] if self.hostname else []
        self.proc = subprocess.Popen(
            host + [sys.executable, "-m", "jupyter_server", f"--port={self.port}", "--ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.base_url={BASE}",
             f"--ServerApp.root_dir={self.workdir}", "--allow-root", "--no-browser", *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.workdir,
            preexec_fn=become_nobody if self.as_nobody else None)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.request("GET", "api/status")
                return self
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {self.log()}")
                time.sleep(0.2)

    def log(self) -> str:
        return (self.workdir / f"server-{self.port}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
                raw_path: bool = False, data: bytes | None = None) -> tuple[int, Any]:
        """`body` is sent as JSON, or `data` as it is."""
        url = (self.url + path) if not raw_path else f"http://127.0.0.1:{self.port}{path}"
        if data is None and body is not None:
            data = json.dumps(body).encode()
        req = urllib.request.Request(url, method=method, data=data)
        if token:
            req.add_header("Authorization", f"token {token}")
        try:
            with urllib.request.urlopen(req, timeout=300) as resp:
                data = resp.read()
                return resp.status, json.loads(data) if data else None
        except urllib.error.HTTPError as err:
            data = err.read()
            try:
                return err.code, json.loads(data)
            except ValueError:
                return err.code, data.decode(errors="replace")

    def descendants(self) -> set[int]:
        """PIDs of every process below the server (its kernels, and the stand-in parents and
        namespace inits of restored ones)."""
        return set(descendants([self.proc.pid])) - {self.proc.pid}

    def runtime_files(self) -> set[str]:
        runtime = self.runtime_dir
        return set(os.listdir(runtime)) if runtime.exists() else set()

    def start_notebook_kernel(self, path: str = "demo.ipynb", kernel: str = "python3") -> str:
        # with a name, as JupyterLab sends it (the kernel's JPY_SESSION_NAME is then absolute)
        status, session = self.request("POST", "api/sessions", {
            "path": path, "name": os.path.basename(path), "type": "notebook",
            "kernel": {"name": kernel}})
        assert status == 201, session
        return session["kernel"]["id"]


class KernelSocket:
    """Execute code in a kernel over /api/kernels/ID/channels, like JupyterLab does."""

    def __init__(self, server: Server, kernel_id: str):
        self.loop = asyncio.new_event_loop()
        self.session = uuid.uuid4().hex
        url = f"ws://127.0.0.1:{server.port}{BASE}api/kernels/{kernel_id}/channels?token={TOKEN}"
        self.ws = self.loop.run_until_complete(self._connect(url))

    @staticmethod
    async def _connect(url: str):
        return await websocket_connect(url)

    def close(self) -> None:
        async def close() -> None:  # tornado writes the close frame on the running loop
            self.ws.close()

        self.loop.run_until_complete(close())
        self.loop.close()

    def execute(self, code: str, timeout: float = 120) -> tuple[str, str, int | None]:
        """(status, text printed, execution count) of one execute_request."""
        return self.loop.run_until_complete(asyncio.wait_for(self._execute(code), timeout))

    async def _execute(self, code: str) -> tuple[str, str, int | None]:
        msg_id = uuid.uuid4().hex
        await self.ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        out: list[str] = []
        reply = None
        idle = False
        while reply is None or not idle:
            raw = await self.ws.read_message()
            if raw is None:
                raise ConnectionError("kernel websocket closed")
            msg = json.loads(raw)
            if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])  # (IPython may warn on stderr)
            elif kind == "error":
                out.append("\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return reply["status"], "".join(out), reply.get("execution_count")

    def send(self, channel: str, msg_type: str, content: dict[str, Any],
             metadata: dict[str, Any] | None = None) -> str:
        """Send one message on `channel` without waiting for anything; its msg_id."""
        msg_id = uuid.uuid4().hex
        message = json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": metadata or {}, "channel": channel, "buffers": [],
            "content": content})

        async def write() -> None:  # tornado writes on the running loop
            await self.ws.write_message(message)

        self.loop.run_until_complete(write())
        return msg_id

    def receive(self, timeout: float) -> dict[str, Any]:
        """The next message from the kernel (TimeoutError after `timeout` seconds)."""
        async def read() -> dict[str, Any]:
            raw = await self.ws.read_message()
            if raw is None:
                raise ConnectionError("kernel websocket closed")
            return json.loads(raw)

        return self.loop.run_until_complete(asyncio.wait_for(read(), timeout))

    def wait_for_output(self, timeout: float = 60, code: str = "print('alive')") -> None:
        """A restored kernel's IOPub needs a moment until the server's subscription is
        through: output (and the idle status that ends an execution) published before is
        lost, so each attempt gets a few seconds. `code` prints "alive" in the kernel's
        language."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if "alive" in self.execute(code, timeout=5)[1]:
                    return
            except TimeoutError:
                pass
            time.sleep(0.2)
        raise TimeoutError("restored kernel produced no output")
