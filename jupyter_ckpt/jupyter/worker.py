"""The one thread that runs engine operations inside the Jupyter server.

ptrace requests for a tracee must come from the thread that attached it, and the engine
waits for its tracees by PID; one dedicated thread, one operation at a time, keeps both
true while the server's event loop goes on. Each operation's progress is kept for the
REST API's /operations listing.

A checkpoint can be cancelled: the next progress report (the engine reports at every phase
and every few MiB of memory, the store every 64 MiB) raises Cancelled, and the engine's and
the store's own rollback (as for a refusal or an injected fault) leaves the kernel running
unharmed and nothing stored.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")


CANCELLABLE = ("checkpoint",)


class Cancelled(Exception):
    """A client cancelled the operation; it was rolled back."""


class NotCancellable(Exception):
    """The operation cannot be cancelled (a restore)."""


@dataclass
class Operation:
    id: str
    kind: str  # "checkpoint", "restore" or "check" (a snapshot's host verdict)
    kernel_id: str | None
    snapshot_id: str | None
    phase: str = "queued"
    bytes_done: int = 0
    bytes_total: int = 0
    started: float = field(default_factory=time.time)
    cancellable: bool = False
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.cancellable = self.kind in CANCELLABLE

    def report(self, phase: str, done: int, total: int) -> None:
        """Record progress; raise Cancelled once a client asked to cancel."""
        if self.cancelled:
            raise Cancelled(f"the {self.kind} was cancelled in phase {self.phase}; the kernel "
                            "runs on unchanged and nothing was stored")
        self.phase, self.bytes_done, self.bytes_total = phase, done, total

    def model(self) -> dict[str, Any]:
        model = asdict(self)
        model["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        return model


class EngineWorker:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jupyter-ckpt-engine")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.operations: dict[str, Operation] = {}

    async def run(self, kind: str, kernel_id: str | None, snapshot_id: str | None,
                  work: Callable[[Operation], T]) -> T:
        op = Operation(str(next(self._ids)), kind, kernel_id, snapshot_id)
        with self._lock:
            self.operations[op.id] = op
        def start() -> T:
            op.report("starting", 0, 0)  # cancelled while queued: never starts
            return work(op)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, start)
        finally:
            with self._lock:
                self.operations.pop(op.id, None)

    def cancel(self, op_id: str) -> dict[str, Any] | None:
        """Ask operation `op_id` to stop at its next progress report: its model, or None if
        there is no such operation (any more). NotCancellable for a restore."""
        with self._lock:
            op = self.operations.get(op_id)
            if op is None:
                return None
            if not op.cancellable:
                raise NotCancellable(f"operation {op_id} is a {op.kind}, which cannot be cancelled")
            op.cancelled = True
            return op.model()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [op.model() for op in self.operations.values()]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False)
