"""%checkpoint, %checkpoints and %restore, for kernels started by the checkpointable
provisioner (which tells the kernel how to reach its server).

`%checkpoint` works like fork(): it returns in the running kernel once the snapshot is
written, and *again* in every kernel restored from that snapshot, in the middle of the same
cell. Its result tells the two apart (`.restored`). A restored kernel knows it was restored
because its process started later than when the magic began (same PID, new incarnation);
the HTTP request it was waiting on died with the old incarnation's connections.

A restored kernel keeps the environment of the process it was restored from, so the server
URL, token and kernel id the provisioner put there may all be stale (another server since,
or a fork with its own id). The server that restores a kernel tells it the current ones in
a control message (REBIND_REQUEST, answered on the kernel's control thread, so even in the
middle of a cell), and the magics use what they were told in this incarnation.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class

log = logging.getLogger(__name__)

REBIND_REQUEST = "jupyter_ckpt_rebind_request"
REBIND_REPLY = "jupyter_ckpt_rebind_reply"
REBIND_WAIT = 30.0  # seconds a restored kernel waits for its server to say where it is


class CheckpointUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class CheckpointResult:
    id: str
    restored: bool

    def __repr__(self) -> str:
        where = "restored kernel" if self.restored else "running kernel"
        return f"<snapshot {self.id} ({where})>"


def _incarnation() -> str:
    """This process's start time. Read through /proc/self: in a new PID namespace our PID
    names, in the host's /proc, the original process we were restored from."""
    with open("/proc/self/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


class _Where:
    """This kernel's server (URL, token) and its id there."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._launched = _incarnation()  # the incarnation the environment was written for
        self._told: tuple[str, tuple[str, str, str]] | None = None  # (incarnation, where)

    def tell(self, url: str, token: str, kernel_id: str) -> None:
        """What the server that restored this incarnation says (from the control thread)."""
        with self._changed:
            self._told = (_incarnation(), (url.rstrip("/"), kernel_id, token))
            self._changed.notify_all()

    def get(self) -> tuple[str, str, str]:
        now = _incarnation()
        with self._changed:
            if now != self._launched:  # restored: only what this incarnation was told counts
                told = self._changed.wait_for(
                    lambda: self._told is not None and self._told[0] == now, REBIND_WAIT)
                if not told:
                    raise CheckpointUnavailable(
                        "this kernel was restored from a snapshot and its server has not told "
                        f"it (within {REBIND_WAIT:.0f} s) where it runs now")
                return self._told[1]  # type: ignore[index]
        url = os.environ.get("JUPYTER_CKPT_SERVER_URL")
        kernel_id = os.environ.get("JUPYTER_CKPT_KERNEL_ID")
        if not url or not kernel_id:
            raise CheckpointUnavailable("this kernel was not started by jupyter-ckpt's "
                                        "provisioner inside a Jupyter server")
        return url.rstrip("/"), kernel_id, os.environ.get("JUPYTER_CKPT_TOKEN", "")


WHERE = _Where()


def _server() -> tuple[str, str, str]:
    return WHERE.get()


def rebind_handler(kernel: Any) -> Any:
    """ipykernel control handler for REBIND_REQUEST {server_url, token, kernel_id}."""
    def handle(stream: Any, ident: Any, parent: dict[str, Any]) -> None:
        content = parent.get("content") or {}
        fields = [content.get(k) for k in ("server_url", "token", "kernel_id")]
        if all(isinstance(v, str) for v in fields) and fields[0] and fields[2]:
            WHERE.tell(fields[0], fields[1], fields[2])
            reply = {"status": "ok"}
        else:
            log.warning("jupyter-ckpt: malformed %s ignored", REBIND_REQUEST)
            reply = {"status": "error", "ename": "ValueError",
                     "evalue": "server_url, token and kernel_id must be strings"}
        kernel.session.send(stream, REBIND_REPLY, reply, parent, ident=ident)

    return handle


def _call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url, _, token = _server()
    request = urllib.request.Request(f"{url}/api/ckpt/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request) as response:
            data = response.read()
    except urllib.error.HTTPError as err:
        try:
            answer = json.loads(err.read())
            message = answer.get("message", err.reason)
            if answer.get("advice"):  # a refusal: what to do about it first
                message = f"{answer['advice']}\n({message})"
        except (ValueError, AttributeError):
            message = err.reason
        raise CheckpointUnavailable(f"{err.code}: {message}") from None
    return json.loads(data) if data else None


def checkpoint(label: str = "", execution_count: int | None = None) -> CheckpointResult:
    """Snapshot the kernel this runs in (see the module docstring)."""
    _, kernel_id, _ = _server()
    snapshot_id = uuid.uuid4().hex
    born = _incarnation()
    body = {"label": label, "id": snapshot_id, "execution_count": execution_count}
    try:
        _call("POST", f"kernels/{kernel_id}/snapshots", body)
    except (OSError, ConnectionError):
        if _incarnation() != born:
            return CheckpointResult(snapshot_id, restored=True)
        raise
    return CheckpointResult(snapshot_id, restored=_incarnation() != born)


class OwnHistory:
    """A restored kernel shares IPython's history session with the kernel its snapshot was
    taken from, which may run on (a fork) or have written later lines before it ended.
    Both writing the same (session, line) rows makes IPython print "Session/line number was
    not unique in database" into a cell, so a restored kernel starts a session of its own:
    when %checkpoint returns in it, or else before its first cell (`claim`)."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.incarnation = _incarnation()

    def claim(self, *_: Any) -> None:
        """Start a history session of our own if we were restored since the last call."""
        now = _incarnation()
        if now == self.incarnation:
            return
        self.incarnation = now
        history = getattr(self.shell, "history_manager", None)
        if history is not None and history.enabled:
            history.new_session()


@magics_class
class CheckpointMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.own_history = OwnHistory(shell)
        kernel = getattr(shell, "kernel", None)  # ipykernel's: where control messages arrive
        if kernel is not None and isinstance(getattr(kernel, "control_handlers", None), dict):
            kernel.control_handlers[REBIND_REQUEST] = rebind_handler(kernel)

    @line_magic
    def checkpoint(self, line: str) -> CheckpointResult:
        """%checkpoint [label] -- snapshot this kernel; returns <snapshot ID (...)>."""
        # The cell that runs this just queued its input for IPython's history thread, whose
        # SQLite transaction (and rollback journal, a file that vanishes on commit) would
        # otherwise be caught mid-way. Writing the history out here finishes that first.
        history = getattr(self.shell, "history_manager", None)
        if history is not None and history.enabled:
            history.writeout_cache()
        # this cell's number: IPython 9 counts the next cell's in execution_count already
        result = checkpoint(line.strip(), self.shell.displayhook.prompt_count)
        self.own_history.claim()
        return result

    @line_magic
    def checkpoints(self, line: str) -> list[dict[str, Any]]:
        """%checkpoints -- this notebook's snapshots (all, in a kernel without a notebook),
        newest first. The server knows which notebook this kernel serves now (the kernel's
        JPY_SESSION_NAME is an absolute path, and stale after a rename or a restore)."""
        _, kernel_id, _ = _server()
        snapshots = _call("GET", "snapshots?" + urllib.parse.urlencode({"kernel_id": kernel_id}))
        for s in snapshots:
            print(f"{s['id']}  {s['created']}  [{s['execution_count']}]  "
                  f"{s['size_bytes'] / 2**20:8.1f} MiB  {s['label']}")
        return snapshots

    @line_magic
    def restore(self, line: str) -> str:
        """%restore ID -- ask the server to bring snapshot ID back; prints the kernel id."""
        snapshot_id = line.strip()
        result = _call("POST", f"snapshots/{urllib.parse.quote(snapshot_id, safe='')}/restore", {})
        print(f"snapshot {snapshot_id} runs as kernel {result['kernel_id']}"
              + (" (a fork: this kernel keeps running)" if result.get("fork") else ""))
        return result["kernel_id"]
