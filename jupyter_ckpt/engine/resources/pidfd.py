"""pidfds (pidfd_open, clone's CLONE_PIDFD; asyncio waits for subprocesses with them): a
handle on a process, restored as a new pidfd on the restored process with the same PID.
The process must be in the tree (a zombie child counts); a pidfd on a process outside it,
on one already reaped, or on a single thread (PIDFD_THREAD) is refused by name.
"""
from __future__ import annotations

import os
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from .kind import FileKind

_PIDFD_THREAD = os.O_EXCL


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link in ("anon_inode:[pidfd]", "pidfd:") or f.link.startswith("pidfd:[")


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    target = int(f.fdinfo.get("Pid", "-1"))
    if target <= 0:
        raise ctx.refuse(f"fd {f.fd}", "pidfd", "its process has ended and was reaped")
    if f.flags & _PIDFD_THREAD:
        raise ctx.refuse(f"fd {f.fd}", "pidfd", f"a pidfd on thread {target} (not supported)")
    if target not in ctx.tree.pids and target not in ctx.tree.zombies:
        raise ctx.refuse(f"fd {f.fd}", "pidfd", f"refers to pid {target}, outside the tree")
    return {"pid": ctx.tree.inner(target), "flags": f.flags}


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    return ctx.keep(os.pidfd_open(ctx.outer_pids[rec["pid"]], rec["flags"] & os.O_NONBLOCK))


PIDFD = FileKind("pidfd", _claims, _dump, _restore)
