"""signalfd: the set of signals it reads. (Pending signals belong to the threads and the
process and are restored with them.)"""
from __future__ import annotations

import ctypes
import os
from typing import Any

from .. import syscalls
from ..context import DumpContext, OpenFile, RestoreContext
from .kind import FileKind

SFD_CLOEXEC, SFD_NONBLOCK = 0o2000000, 0o4000


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link == "anon_inode:[signalfd]"


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    return {"sigmask": int(f.fdinfo["sigmask"], 16), "flags": f.flags}


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    mask = ctypes.c_uint64(rec["sigmask"])
    flags = SFD_CLOEXEC | (SFD_NONBLOCK if rec["flags"] & os.O_NONBLOCK else 0)
    return ctx.keep(syscalls.syscall("signalfd4", -1, ctypes.addressof(mask), 8, flags))


SIGNALFD = FileKind("signalfd", _claims, _dump, _restore)
