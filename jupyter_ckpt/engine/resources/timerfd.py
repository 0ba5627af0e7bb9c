"""timerfd: clock, remaining time, interval and expirations not yet read. An armed timer
keeps firing after restore; the time it spent checkpointed does not count against it."""
from __future__ import annotations

import ctypes
import fcntl
import os
import re
import struct
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from . import FileKind

TFD_CLOEXEC, TFD_NONBLOCK = 0o2000000, 0o4000
TFD_IOC_SET_TICKS = 0x40085400  # _IOW('T', 0, u64)
_PAIR = re.compile(r"\((\d+),\s*(\d+)\)")
_libc = ctypes.CDLL(None, use_errno=True)


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link == "anon_inode:[timerfd]"


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    value = [int(x) for x in _PAIR.search(f.fdinfo["it_value"]).groups()]  # type: ignore[union-attr]
    interval = [int(x) for x in _PAIR.search(f.fdinfo["it_interval"]).groups()]  # type: ignore[union-attr]
    return {"clockid": int(f.fdinfo["clockid"]), "ticks": int(f.fdinfo["ticks"]),
            "value": value, "interval": interval, "flags": f.flags}


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    flags = TFD_CLOEXEC | (TFD_NONBLOCK if rec["flags"] & os.O_NONBLOCK else 0)
    fd = _libc.timerfd_create(rec["clockid"], flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"timerfd_create: {os.strerror(err)}")
    ctx.keep(fd)
    if any(rec["value"]):
        spec = struct.pack("<qqqq", *rec["interval"], *rec["value"])  # relative: remaining time
        if _libc.timerfd_settime(fd, 0, spec, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
    if rec["ticks"]:
        fcntl.ioctl(fd, TFD_IOC_SET_TICKS, struct.pack("<Q", rec["ticks"]))
    return fd


TIMERFD = FileKind("timerfd", _claims, _dump, _restore)
