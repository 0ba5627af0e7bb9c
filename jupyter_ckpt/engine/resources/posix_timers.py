"""POSIX timers (timer_create): id, clock, notification, remaining time, interval, overrun.

/proc/PID/timers names each timer with its clock and sigevent; its remaining time, interval
and overrun count are read by timer_gettime/timer_getoverrun injected into the frozen process
(they only read the timer). The restored process re-creates each timer with its own id, by
the kernel's PR_TIMER_CREATE_RESTORE_IDS (a kernel without it is refused at dump), from
inside itself, after its threads exist (a timer may signal one of them). The remaining time
is relative: time spent checkpointed does not count against a timer (as for timerfd).

A signal of a timer pending at checkpoint is restored with the other pending signals; the
timer itself comes back armed for its next expiry. (A program that keeps that signal
blocked past the next expiry then gets two signals where the kernel would have counted the
second expiry as an overrun of the first.)
"""
from __future__ import annotations

import logging
import re
import struct
from typing import Any

from ..context import DumpContext, RestoreContext
from ..errors import CkptError, RestoreConflict
from ..inject import RemoteThread
from ..ptrace_ext import SIGINFO_SIZE
from .kind import Resource

log = logging.getLogger(__name__)

PR_TIMER_CREATE_RESTORE_IDS = 77
_IDS_ON, _IDS_GET = 1, 2
SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD, SIGEV_THREAD_ID = 0, 1, 2, 4
_NOTIFY = {"signal": SIGEV_SIGNAL, "none": SIGEV_NONE, "thread": SIGEV_THREAD}
TIMER_ABSTIME = 1
SI_TIMER = -2
CLOCK_THREAD_CPUTIME_ID = 3
_CLOCKS = {0, 1, 2, 3, 7, 8, 9, 11}  # the clocks timer_create takes by number
_CPUCLOCK_PERTHREAD = 4  # in a CPU clock made for a pid: ~pid << 3 | per-thread | kind (glibc's own)
_ITIMERSPEC = struct.Struct("<qqqq")  # it_interval, it_value (timespecs)
_TIMESPEC = struct.Struct("<qq")
_SIGEVENT_SIZE = 64  # sigev_value, sigev_signo, sigev_notify, then a union (the target tid)
_SIGINFO_TIMER = struct.Struct("<iii4xi")  # si_signo, si_errno, si_code, si_timerid
_ENTRY = re.compile(r"ID: (-?\d+)\nsignal: (\d+)/([0-9a-f]+)\nnotify: (signal|none|thread)/(pid|tid)\.(\d+)\n"
                    r"ClockID: (-?\d+)")
_NS = 1_000_000_000


def _ns(spec: list[int]) -> int:
    return spec[0] * _NS + spec[1]


def _spec(ns: int) -> list[int]:
    return [ns // _NS, ns % _NS]


def dump(ctx: DumpContext) -> list[dict[str, Any]]:
    """Every timer of the process, in id order."""
    assert ctx.leader is not None and ctx.scratch is not None and ctx.mem is not None
    with open(f"/proc/{ctx.pid}/timers") as f:
        text = f.read()
    entries = sorted(_ENTRY.findall(text), key=lambda e: int(e[0]))
    if len(entries) != sum(line.startswith("ID: ") for line in text.splitlines()):
        raise ctx.refuse("process", "POSIX timer", f"unrecognised /proc/{ctx.pid}/timers entry: {text!r}")
    if not entries:
        return []
    if ctx.leader.call("prctl", PR_TIMER_CREATE_RESTORE_IDS, _IDS_GET, 0, 0, 0, check=False) < 0:
        raise ctx.refuse(f"POSIX timer {entries[0][0]}", "POSIX timer",
                         "this kernel cannot re-create a timer with its id (no PR_TIMER_CREATE_RESTORE_IDS)")
    ctx.scratch.reset()
    buf = ctx.scratch.reserve(_ITIMERSPEC.size)
    timers = []
    for timer_id, signo, value, notify, target_kind, target, clock in entries:
        where = f"POSIX timer {timer_id}"
        why = _clock_refused(int(clock), len(ctx.tids))
        if why:
            raise ctx.refuse(where, "POSIX timer", why)
        rec: dict[str, Any] = {"id": int(timer_id), "clock": int(clock), "signal": int(signo),
                               "value": int(value, 16), "notify": _NOTIFY[notify]}
        if target_kind == "tid":
            if int(target) not in ctx.tids:
                raise ctx.refuse(where, "POSIX timer", f"it signals thread {target}, not one of this process")
            rec["notify"] |= SIGEV_THREAD_ID
            rec["tid"] = ctx.tree.inner(int(target))
        ctx.leader.call("timer_gettime", int(timer_id), buf)
        interval_s, interval_ns, value_s, value_ns = _ITIMERSPEC.unpack(ctx.mem.read(buf, _ITIMERSPEC.size))
        rec["interval"] = [interval_s, interval_ns]
        rec["remaining"] = [value_s, value_ns]
        rec["overrun"] = ctx.leader.call("timer_getoverrun", int(timer_id))
        timers.append(rec)
    return timers


def _clock_refused(clock: int, threads: int) -> str | None:
    """Why a timer on `clock` cannot be re-created as it is, or None."""
    if clock >= 0 and clock not in _CLOCKS:
        return f"clock {clock} is not one timer_create takes"
    if clock < 0 and ~(clock >> 3) != 0:
        return f"clock {clock} counts the CPU time of process {~(clock >> 3)}, not its own"
    per_thread = clock == CLOCK_THREAD_CPUTIME_ID or (clock < 0 and clock & _CPUCLOCK_PERTHREAD)
    if per_thread and threads > 1:
        return "a thread CPU-time clock in a multi-threaded process (whose thread it counts is not visible)"
    return None


def restore(ctx: RestoreContext, timers: list[dict[str, Any]], threads: dict[int, RemoteThread]) -> None:
    """Re-create the timers with their ids, then arm them. `threads`: tid -> restored thread.

    A timer's last overrun count (timer_getoverrun) is only set when the kernel delivers one
    of its signals, so a timer that had one is first made to expire overdue by exactly that
    many intervals and its signal taken at once (every signal is still blocked); the
    delivery re-arms it for its next expiry, which lands at the saved remaining time.
    """
    if not timers:
        return
    call = ctx.leader.call
    ctx.scratch.reset()
    ids_mode = call("prctl", PR_TIMER_CREATE_RESTORE_IDS, _IDS_GET, 0, 0, 0, check=False)
    if ids_mode < 0:
        raise RestoreConflict(f"POSIX timer {timers[0]['id']}: this kernel cannot re-create a timer "
                              "with its id (no PR_TIMER_CREATE_RESTORE_IDS)")
    call("prctl", PR_TIMER_CREATE_RESTORE_IDS, _IDS_ON, 0, 0, 0)
    try:
        for rec in timers:
            ctx.scratch.reset()
            event = struct.pack("<Qiii", rec["value"], rec["signal"], rec["notify"], rec.get("tid", 0))
            id_buf = ctx.scratch.put(struct.pack("<i", rec["id"]))
            try:
                call("timer_create", rec["clock"], ctx.scratch.put(event.ljust(_SIGEVENT_SIZE, b"\0")), id_buf)
            except OSError as err:
                raise CkptError(f"POSIX timer {rec['id']}: cannot re-create it: {err.strerror}") from None
            got = struct.unpack("<i", ctx.mem.read(id_buf, 4))[0]
            if got != rec["id"]:
                raise CkptError(f"POSIX timer {rec['id']}: the kernel gave id {got}")
    finally:
        call("prctl", PR_TIMER_CREATE_RESTORE_IDS, ids_mode, 0, 0, 0)
    # Overdue ones first: their signals are taken before any other timer can fire.
    for rec in sorted(timers, key=lambda r: not _needs_overrun(r)):
        ctx.scratch.reset()
        if _needs_overrun(rec):
            _arm_overdue(ctx, rec, threads)
        elif any(rec["remaining"]):
            spec = _ITIMERSPEC.pack(*rec["interval"], *rec["remaining"])
            call("timer_settime", rec["id"], 0, ctx.scratch.put(spec), 0)


def _needs_overrun(rec: dict[str, Any]) -> bool:
    # Only a delivery of a periodic timer sets the count, and timer_settime clears it: a
    # timer with one is periodic and armed, its next expiry at most one interval away.
    return rec["overrun"] > 0 and any(rec["interval"]) and rec["notify"] != SIGEV_NONE \
        and 0 < _ns(rec["remaining"]) <= _ns(rec["interval"])


def _arm_overdue(ctx: RestoreContext, rec: dict[str, Any], threads: dict[int, RemoteThread]) -> None:
    call = ctx.leader.call
    now_buf = ctx.scratch.reserve(_TIMESPEC.size)
    call("clock_gettime", rec["clock"], now_buf)
    now = _ns(list(_TIMESPEC.unpack(ctx.mem.read(now_buf, _TIMESPEC.size))))
    interval = _ns(rec["interval"])
    # Due (overrun + 1) intervals before its next expiry: the delivery counts `overrun`
    # missed expiries and re-arms it for that next expiry.
    expiry = now + _ns(rec["remaining"]) - (rec["overrun"] + 1) * interval
    spec = _ITIMERSPEC.pack(*rec["interval"], *_spec(expiry))
    call("timer_settime", rec["id"], TIMER_ABSTIME, ctx.scratch.put(spec), 0)
    taker = threads[rec["tid"]] if rec["notify"] & SIGEV_THREAD_ID else ctx.leader
    sigset = ctx.scratch.put(struct.pack("<Q", 1 << (rec["signal"] - 1)))
    info = ctx.scratch.reserve(SIGINFO_SIZE)
    timeout = ctx.scratch.put(_TIMESPEC.pack(1, 0))
    try:
        taker.call("rt_sigtimedwait", sigset, info, timeout, 8)
    except OSError as err:
        raise CkptError(f"POSIX timer {rec['id']}: its overdue signal {rec['signal']} did not "
                        f"arrive: {err.strerror}") from None
    signo, _, code, timer_id = _SIGINFO_TIMER.unpack(ctx.mem.read(info, _SIGINFO_TIMER.size))
    if code != SI_TIMER or timer_id != rec["id"]:
        raise CkptError(f"POSIX timer {rec['id']}: took signal {signo} (code {code}) of timer "
                        f"{timer_id} instead of its own")
    log.debug("POSIX timer %d: overrun %d restored", rec["id"], rec["overrun"])


POSIX_TIMERS = Resource("posix_timers", record="posix_timers", empty=list, dump_process=dump)
