"""timerfd: clock, settime flags, remaining time, interval and expirations not yet read.

An armed timer keeps firing after restore; the time it spent checkpointed does not count
against it, except for an absolute CLOCK_REALTIME deadline, which means a moment of wall
time: it is kept (one that passed meanwhile fires at once, with the periods it missed).

A periodic timer that fired is not re-armed by the kernel until someone reads it (or asks
timerfd_gettime): until then /proc shows it with no time left and only the first of its
expirations. So the dump asks timerfd_gettime on its own copy of the fd first, which does
what a read would do (counts the expirations, re-arms for the next period) without taking
any of them away.
"""
from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import re
import struct
import time
from typing import Any

from .. import procfs
from ..context import DumpContext, OpenFile, RestoreContext
from ..libc import check, libc
from ..libc import error as libc_error
from .kind import FileKind

log = logging.getLogger(__name__)

TFD_CLOEXEC, TFD_NONBLOCK = os.O_CLOEXEC, os.O_NONBLOCK
TFD_TIMER_ABSTIME = 1
TFD_IOC_SET_TICKS = 0x40085400  # _IOW('T', 0, u64)
CLOCK_REALTIME_ALARM, CLOCK_BOOTTIME_ALARM = 8, 9
_WALL_CLOCKS = (time.CLOCK_REALTIME, CLOCK_REALTIME_ALARM)
_ITIMERSPEC = struct.Struct("<qqqq")  # it_interval, it_value (seconds, nanoseconds each)
_NS = 1_000_000_000
_TRIES = 10  # re-arm attempts before a timer is deemed to fire faster than we can read it
_PAIR = re.compile(r"\((\d+),\s*(\d+)\)")


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link == "anon_inode:[timerfd]"


def _pair(info: dict[str, Any], key: str) -> list[int]:
    return [int(x) for x in _PAIR.search(info[key]).groups()]  # type: ignore[union-attr]


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    ours = ctx.dup_of(f.fd)
    spec = ctypes.create_string_buffer(_ITIMERSPEC.size)
    for _ in range(_TRIES):
        if libc.timerfd_gettime(ours, spec) < 0:  # re-arms a periodic timer that fired
            raise libc_error("timerfd_gettime")
        with open(f"/proc/self/fdinfo/{ours}") as fdinfo:
            info = procfs.parse_fdinfo(fdinfo.read())
        value, interval = _pair(info, "it_value"), _pair(info, "it_interval")
        if any(value) or not any(interval):
            break  # armed, or a one-shot timer that is done: nothing is waiting for a re-arm
    else:
        raise ctx.refuse(f"fd {f.fd}", "timerfd", f"its period of {interval[0]} s {interval[1]} ns "
                         "is too short to read it between two expirations")
    clockid = int(info["clockid"])
    flags = int(info["settime flags"], 8)
    rec = {"clockid": clockid, "ticks": int(info["ticks"]), "value": value, "interval": interval,
           "settime_flags": flags, "flags": f.flags, "deadline": None}
    if flags & TFD_TIMER_ABSTIME and clockid in _WALL_CLOCKS and any(value):
        rec["deadline"] = time.clock_gettime_ns(time.CLOCK_REALTIME) + value[0] * _NS + value[1]
    log.debug("pid %d fd %d: timerfd %s", f.pid, f.fd, rec)
    return rec


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    flags = TFD_CLOEXEC | (TFD_NONBLOCK if rec["flags"] & os.O_NONBLOCK else 0)
    fd = check(libc.timerfd_create(rec["clockid"], flags), "timerfd_create")
    ctx.keep(fd)
    if any(rec["value"]):
        settime = rec["settime_flags"]
        if rec["deadline"] is not None:
            expiry = rec["deadline"]
        elif settime & TFD_TIMER_ABSTIME:  # remaining time from now, on the timer's own clock
            expiry = time.clock_gettime_ns(_readable(rec["clockid"])) + rec["value"][0] * _NS + rec["value"][1]
        else:
            expiry = rec["value"][0] * _NS + rec["value"][1]
        spec = _ITIMERSPEC.pack(*rec["interval"], *divmod(expiry, _NS))
        check(libc.timerfd_settime(fd, settime, spec, None), "timerfd_settime")
    if rec["ticks"]:  # after settime, which starts the count afresh
        fcntl.ioctl(fd, TFD_IOC_SET_TICKS, struct.pack("<Q", rec["ticks"]))
    return fd


def _readable(clockid: int) -> int:
    """The clock to read for a timer's clock (an alarm clock keeps the time of its base)."""
    return {CLOCK_REALTIME_ALARM: time.CLOCK_REALTIME, CLOCK_BOOTTIME_ALARM: time.CLOCK_BOOTTIME}.get(clockid, clockid)


TIMERFD = FileKind("timerfd", _claims, _dump, _restore)
