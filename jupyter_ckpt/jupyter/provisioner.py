"""`ckpt-provisioner`: launches kernels the way jupyter_client's LocalProvisioner does (so the
server is their parent and may trace them), and can instead *adopt* a kernel restored from
a snapshot, managing it as if it had started it (poll, signal, interrupt, shutdown).

While the engine works on a kernel this provisioner does not poll it: the engine waits for
ptrace stops of its tracee by PID, and a waitpid() from another thread of the server (as
Popen.poll does) would take those notifications and see a "stopped" kernel as a dead one.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import re
import signal
import time
from dataclasses import dataclass
from typing import Any, Iterator

from jupyter_client.provisioning import KernelProvisionerBase, LocalProvisioner

from .. import engine
from .worker import EngineWorker

log = logging.getLogger(__name__)
REAP_DEADLINE = 5.0  # seconds a failed restore's processes get to be reaped after SIGKILL
# seconds a kernel gets to prove our IOPub subscription live before it is reported started: a
# new one starts its interpreter first, a restored one runs already
SUBSCRIBE_DEADLINE = 60.0
RESTORED_SUBSCRIBE_DEADLINE = 10.0
# seconds the IOPub status of a request the kernel answered may trail that answer before we
# take it as lost (published before our subscription was joined) and ask again
STATUS_AFTER_ANSWER = 0.5

@dataclass
class RestoreRequest:
    """Set by the service before it asks the kernel manager to start `kernel_id`."""

    snapshot_id: str
    image: Any  # an image directory, or a snapshot opened in the store (catalog.open_image)
    connection: dict[str, Any]
    pid_ns: bool | None
    rebind_ports: bool
    worker: EngineWorker
    execution_count: int | None = None
    running_cell: dict[str, Any] | None = None  # the cell the snapshot was taken during
    lazy: bool = False  # the kernel runs while its memory streams in (Restored.pages)
    port_map: dict[int, int] | None = None
    restored: engine.Restored | None = None  # set once the engine made the process


def kill_restored(restored: engine.Restored) -> None:
    """End a restored kernel that will not be managed (its restore failed after the engine
    made it) and what the restore started around it. In a new PID namespace, SIGKILL to the
    namespace's init ends every process in it (the stand-in parent too). Our children among
    them are reaped, within a deadline."""
    victims = [restored.pid, restored.waiter]
    if restored.in_new_pid_namespace:
        victims += _namespace_init(restored.pid)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + REAP_DEADLINE
    pending = set(victims)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pending.discard(pid)
            except ChildProcessError:  # not ours (or reaped): its parent reaps it
                pending.discard(pid)
        if pending:
            time.sleep(0.02)
    if pending:
        log.warning("jupyter-ckpt: processes %s of a failed restore were not reaped within %s s",
                    sorted(pending), REAP_DEADLINE)


def _namespace_init(pid: int) -> list[int]:
    """The PID (as we see it) of the init of `pid`'s PID namespace, if we can see it."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            with open(f"/proc/{entry}/status") as f:
                ns_pids = next(line for line in f if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        if ns_pids[-1] == "1":
            return [int(entry)]
    return []


PENDING_RESTORES: dict[str, RestoreRequest] = {}
# how a kernelspec's argv names ipykernel: `python -m ipykernel_launcher` (or ipykernel)
_IPYKERNEL_MODULE = re.compile(r"ipykernel(_launcher)?(\.py)?\Z")
_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")


class AdoptedProcess:
    """A Popen-like handle on a restored kernel. The restore made it (or its stand-in parent,
    in a new PID namespace) our child, so waitpid works as for a launched one."""

    stdin = stdout = stderr = None

    def __init__(self, restored: engine.Restored):
        self.pid = restored.pid
        self._waiter = restored.waiter
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self._waiter, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"kernel {self.pid} still running")
            time.sleep(0.05)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class CkptProvisioner(LocalProvisioner):  # type: ignore[misc]
    """A LocalProvisioner whose kernels can be checkpointed and restored."""

    _engine_busy = False
    _adopt: engine.Restored | None = None
    _kernel_busy = False
    execution_count: int | None = None
    # the cell the kernel runs now: {"execution_count", "msg_id"} of its execute_request
    running_cell: dict[str, Any] | None = None
    restored_from: str | None = None  # the snapshot this kernel was restored from
    # where the kernel is in its history: the snapshot it was restored from or, once it took
    # one, its latest snapshot (the parent of its next one)
    position: str | None = None

    @contextlib.contextmanager
    def engine_working(self) -> Iterator[None]:
        self._engine_busy = True
        try:
            yield
        finally:
            self._engine_busy = False

    async def poll(self) -> int | None:
        if self._engine_busy:
            return None
        return await super().poll()

    @property
    def runs_ipykernel(self) -> bool:
        """Whether the kernel is ipykernel, which loads our IPython extension (magics, the
        answer to tell_kernel_where). Other kernels, Python ones too (xeus-python), have
        neither: they are checkpointed from the button, the panel and REST."""
        return any(_IPYKERNEL_MODULE.match(os.path.basename(arg))
                   for arg in self.kernel_spec.argv[:3])

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        request = PENDING_RESTORES.pop(self.kernel_id, None)
        if request is None:
            if self.runs_ipykernel:
                kwargs["extra_arguments"] = list(kwargs.get("extra_arguments") or []) + ["--ext=jupyter_ckpt"]
            kwargs = await super().pre_launch(**kwargs)
            kwargs["env"] = {**kwargs.get("env", os.environ), **self._kernel_env()}
            return kwargs
        return await self._pre_launch_restore(request, **kwargs)

    async def _pre_launch_restore(self, request: RestoreRequest, **kwargs: Any) -> dict[str, Any]:
        def work(op):
            return engine.restore(request.image, pid_ns=request.pid_ns,
                                  rebind_listeners=request.rebind_ports, progress=op.report,
                                  lazy=request.lazy)

        restored = await request.worker.run("restore", self.kernel_id, request.snapshot_id, work)
        request.restored = restored  # from here on, a failure must end it (the service does)
        request.port_map = dict(restored.port_map)
        for warning in restored.warnings:
            self.log.warning("jupyter-ckpt: kernel %s: %s", self.kernel_id, warning)
        km = self.parent
        info = dict(request.connection)
        for name in _PORT_NAMES:
            info[name] = restored.port_map.get(info[name], info[name])
        km.load_connection_info(info)
        km.write_connection_file()
        self.connection_info = km.get_connection_info()
        self._adopt = restored
        self.execution_count = request.execution_count
        # a snapshot taken during a cell resumes it: the kernel runs it until it ends
        self.running_cell = request.running_cell
        self.restored_from = self.position = request.snapshot_id
        kwargs.pop("extra_arguments", None)
        return await KernelProvisionerBase.pre_launch(self, cmd=km.format_kernel_cmd(), **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        if self._adopt is None:  # a new kernel (or a restart): no cell, no snapshot behind it
            self.running_cell = None
            self.restored_from = self.position = None
            info = await super().launch_kernel(cmd, **kwargs)
        else:
            restored, self._adopt = self._adopt, None
            self.process = AdoptedProcess(restored)
            self.pid = restored.pid
            try:
                self.pgid = os.getpgid(restored.pid)
            except OSError:
                self.pgid = None
            info = self.connection_info
        self._watch_execution_count()
        return info

    async def post_launch(self, **kwargs: Any) -> None:
        await super().post_launch(**kwargs)
        await self._until_subscribed(RESTORED_SUBSCRIBE_DEADLINE if self.restored_from
                                     else SUBSCRIBE_DEADLINE)

    async def _until_subscribed(self, timeout: float) -> None:
        """Hold the kernel's start until our IOPub subscription is live. ZeroMQ drops what a
        kernel publishes before a subscriber is joined, so without this the first cell's
        execute_input (sent by a client as soon as the kernel is reported started) can be
        missed, and a snapshot taken during that cell would not name it. Asks kernel_info on
        shell and control (a restored kernel may be running a cell on its shell) until an
        IOPub message arrives: any one proves the subscription joined. Gives up, with a
        warning, when the kernel ended or stayed silent for `timeout` seconds. Only for async
        kernel managers (as Jupyter Server's are): a blocking one runs no event loop to hear
        IOPub between its calls anyway."""
        from jupyter_client.asynchronous import AsyncKernelClient

        client = self.parent.client(session=self._private_session())
        if not isinstance(client, AsyncKernelClient):
            return
        client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=True)
        live = self._iopub_live
        deadline = time.monotonic() + timeout
        try:
            while not live.is_set():
                for channel in (client.shell_channel, client.control_channel):
                    channel.send(client.session.msg("kernel_info_request", {}))
                answered = await self._answer_or_iopub(client, deadline)
                if live.is_set():
                    break
                if not answered:
                    self.log.warning("jupyter-ckpt: kernel %s ended or did not answer within "
                                     "%s s: snapshots taken during its first cells may not "
                                     "name them", self.kernel_id, timeout)
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(live.wait(), STATUS_AFTER_ANSWER)
        finally:
            client.stop_channels()

    async def _answer_or_iopub(self, client: Any, deadline: float) -> bool:
        """Wait until the kernel answers on shell or control, or an IOPub message arrives;
        False if neither came before `deadline` or the kernel ended meanwhile."""
        while time.monotonic() < deadline:
            waits = [asyncio.ensure_future(wait) for wait in
                     (client.get_shell_msg(), client.get_control_msg(), self._iopub_live.wait())]
            try:
                done, _ = await asyncio.wait(waits, timeout=min(1.0, deadline - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            if any(not wait.cancelled() and wait.exception() is None for wait in done):
                return True
            if await self.poll() is not None:
                return False
        return False

    async def tell_kernel_where(self, timeout: float = 10.0) -> bool:
        """Tell a restored kernel its server URL, token and kernel id, which its environment
        (the restored process's) may have wrong, in a control message its magics answer
        (see magics.py). False, with a warning logged, when it did not confirm in time."""
        from .magics import REBIND_REPLY, REBIND_REQUEST

        env = self._kernel_env()
        content = {"server_url": env.get("JUPYTER_CKPT_SERVER_URL", ""),
                   "token": env.get("JUPYTER_CKPT_TOKEN", ""), "kernel_id": self.kernel_id}
        client = self.parent.client(session=self._private_session())
        client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
        deadline = time.monotonic() + timeout
        try:
            msg = client.session.msg(REBIND_REQUEST, content)
            client.control_channel.send(msg)
            while True:
                reply = await client.get_control_msg(timeout=max(0.0, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                    break
        except queue.Empty:
            self.log.warning("jupyter-ckpt: restored kernel %s did not confirm within %s s that "
                             "it knows its server; its magics will not work", self.kernel_id,
                             timeout)
            return False
        finally:
            client.stop_channels()
        if reply["msg_type"] != REBIND_REPLY or reply["content"].get("status") != "ok":
            self.log.warning("jupyter-ckpt: restored kernel %s refused to learn its server: %s",
                             self.kernel_id, reply["content"])
            return False
        return True

    async def connect_while_resuming(self, timeout: float = 5.0) -> bool:
        """Let clients connect to a restored kernel that resumed a cell. Jupyter Server holds
        each new websocket until the kernel answers a kernel_info_request on its shell, which
        a kernel running a cell answers only when the cell ends: the notebook would show
        "Connecting" until then and miss the cell's output. The kernel's control channel
        answers meanwhile (ipykernel's runs on a thread of its own): its reply is what the
        server waits for, which it keeps per kernel (`_kernel_info_future`, Jupyter Server's
        own cache of that reply). False, with a warning, when the control channel is silent."""
        client = self.parent.client(session=self._private_session())
        client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
        deadline = time.monotonic() + timeout
        try:
            msg = client.session.msg("kernel_info_request", {})
            client.control_channel.send(msg)
            while True:
                reply = await client.get_control_msg(timeout=max(0.0, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                    break
        except queue.Empty:
            self.log.warning("jupyter-ckpt: restored kernel %s resumes a cell and does not answer "
                             "on its control channel: notebooks connect when the cell ends",
                             self.kernel_id)
            return False
        finally:
            client.stop_channels()
        known: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        known.set_result(reply["content"])
        self.parent._kernel_info_future = known
        self.parent.execution_state = "busy"  # as the server would have seen it
        return True

    def _kernel_env(self) -> dict[str, str]:
        """How the kernel's %checkpoint magic reaches this server."""
        env = {"JUPYTER_CKPT_KERNEL_ID": self.kernel_id or ""}
        try:
            from jupyter_server.serverapp import ServerApp

            if ServerApp.initialized():
                app = ServerApp.instance()
                env["JUPYTER_CKPT_SERVER_URL"] = app.connection_url
                env["JUPYTER_CKPT_TOKEN"] = getattr(app.identity_provider, "token", "") or ""
        except ImportError:
            pass
        return env

    def _watch_execution_count(self) -> None:
        """Follow the kernel's IOPub for what snapshots should record: the execution count,
        and the cell running now (from its execute_input to the idle status of its request)."""
        import zmq
        from zmq.eventloop.zmqstream import ZMQStream

        km = self.parent
        socket = km.connect_iopub()  # jupyter_server's kernel managers hand out streams already
        stream = socket if hasattr(socket, "on_recv") else ZMQStream(zmq.Socket(shadow=socket))
        session = self._private_session()
        self._iopub_live = asyncio.Event()
        self._outside_history: set[str] = set()

        def on_message(parts: list[bytes]) -> None:
            self._iopub_live.set()
            try:
                _, msg_parts = session.feed_identities(parts)
                msg = session.deserialize(msg_parts, content=True)
            except Exception as error:
                self.log.warning("jupyter-ckpt: undecodable IOPub message from kernel %s: %s",
                                 self.kernel_id, error)
                return
            kind = msg["header"]["msg_type"]
            parent = (msg.get("parent_header") or {}).get("msg_id")
            if kind == "status":
                self._kernel_busy = msg["content"].get("execution_state") == "busy"
                if not self._kernel_busy:
                    self._outside_history.discard(parent)
                    if self.running_cell is not None and self.running_cell["msg_id"] == parent:
                        self.running_cell = None
                return
            if parent in self._outside_history:  # not a cell: it counts for nothing
                return
            if kind == "execute_input" and parent:
                self.running_cell = {"execution_count": msg["content"].get("execution_count"),
                                     "msg_id": parent}
            if kind in ("execute_input", "execute_result") and "execution_count" in msg["content"]:
                self.execution_count = msg["content"]["execution_count"]

        stream.on_recv(on_message)
        self._iopub_stream = stream

    def outside_history(self, msg_id: str) -> None:
        """Note, before it reaches the kernel, an execute_request that stores no history (a
        frontend's, not a cell's). ipykernel publishes the execute_input of one that is not
        silent with the count of the next cell, which it does not use up: neither that count
        nor the request as running cell is what a snapshot should record. Forgotten at the
        request's idle status."""
        self._outside_history.add(msg_id)

    def _private_session(self):
        """A Session of our own: deserializing checks each signature against the session's
        history of seen ones, so sharing the kernel manager's would make two readers of the
        same message reject it as a replay."""
        from jupyter_client.session import Session

        km = self.parent
        return Session(key=km.session.key, signature_scheme=km.session.signature_scheme,
                       username=km.session.username)

    async def ask_execution_count(self, timeout: float = 2.0) -> int | None:
        """The kernel's own execution count, asked with a silent empty execute_request.

        For when the IOPub watcher saw no cell (a kernel that ran none yet). Not asked of a
        kernel known to be busy, whose request would wait behind the running cell. Needs an
        async kernel manager (as Jupyter Server's are), whose clients are async too."""
        if self._kernel_busy:
            return None
        km = self.parent
        client = km.client(session=self._private_session())
        client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        deadline = time.monotonic() + timeout
        try:
            msg_id = client.execute("", silent=True, store_history=False)
            while True:
                reply = await client.get_shell_msg(timeout=max(0.0, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
        except queue.Empty:
            self.log.warning("jupyter-ckpt: kernel %s did not tell its execution count within %s s",
                             self.kernel_id, timeout)
            return None
        finally:
            client.stop_channels()
        return reply["content"].get("execution_count") or None

    async def cleanup(self, restart: bool = False) -> None:
        stream = getattr(self, "_iopub_stream", None)
        if stream is not None and not stream.closed():
            stream.close()
            self._iopub_stream = None
        await super().cleanup(restart=restart)
