"""eventfd: a counter; restored with the same count and semaphore mode."""
from __future__ import annotations

import os
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from .kind import FileKind


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link == "anon_inode:[eventfd]"


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    return {"count": int(f.fdinfo["eventfd-count"], 16), "flags": f.flags,
            "semaphore": f.fdinfo.get("eventfd-semaphore", "0") == "1"}


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    flags = os.EFD_CLOEXEC | (os.EFD_SEMAPHORE if rec["semaphore"] else 0) \
        | (os.EFD_NONBLOCK if rec["flags"] & os.O_NONBLOCK else 0)
    return ctx.keep(os.eventfd(rec["count"], flags))


EVENTFD = FileKind("eventfd", _claims, _dump, _restore)
