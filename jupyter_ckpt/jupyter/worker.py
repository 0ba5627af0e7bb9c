"""The one thread that runs engine operations inside the Jupyter server.

ptrace requests for a tracee must come from the thread that attached it, and the engine
waits for its tracees by PID; one dedicated thread, one operation at a time, keeps both
true while the server's event loop goes on. Each operation's progress is kept for the
REST API's /operations listing.
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


@dataclass
class Operation:
    id: str
    kind: str  # "checkpoint" or "restore"
    kernel_id: str | None
    snapshot_id: str | None
    phase: str = "queued"
    bytes_done: int = 0
    bytes_total: int = 0
    started: float = field(default_factory=time.time)

    def report(self, phase: str, done: int, total: int) -> None:
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
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, op)
        finally:
            with self._lock:
                self.operations.pop(op.id, None)

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [op.model() for op in self.operations.values()]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False)
