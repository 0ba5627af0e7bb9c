"""Errors the engine reports. Each renders as one line a user can act on."""
from __future__ import annotations

from dataclasses import dataclass


class CkptError(Exception):
    """Base class: the operation did not happen, and nothing was left half-done."""


@dataclass(frozen=True)
class Blocker:
    """One piece of state that stops a process tree from being checkpointed."""

    pid: int
    where: str  # "fd 5", "0x7f00...-0x7f01...", "tid 1234", "process"
    kind: str
    why: str

    def __str__(self) -> str:
        return f"pid {self.pid} {self.where}: {self.kind}: {self.why}"


class Unsupported(CkptError):
    """State we cannot restore faithfully, refused by name before anything is written."""

    def __init__(self, where: str, kind: str, why: str, pid: int = 0):
        self.blockers = [Blocker(pid, where, kind, why)]
        super().__init__(str(self.blockers[0]))


class Refused(CkptError):
    """The tree holds one or more unsupported resources; lists all of them."""

    def __init__(self, blockers: list[Blocker]):
        self.blockers = blockers
        first = str(blockers[0])
        more = f" (and {len(blockers) - 1} more; run 'jupyter-ckpt check')" if len(blockers) > 1 else ""
        super().__init__(f"cannot checkpoint: {first}{more}")


class ImageError(CkptError):
    """The image is missing, corrupt, truncated, of another version, or not ours to restore."""


class RestoreConflict(CkptError):
    """The restore cannot happen on this host as things stand (PID taken, file changed, CPU...)."""
