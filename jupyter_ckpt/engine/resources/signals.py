"""Signal dispositions, interval timers and pending signals (per thread and process-wide).

Dispositions and timers are read and set by syscalls injected into the process. Pending
signals are read with PTRACE_PEEKSIGINFO and queued again from inside the restored process
while every thread still blocks everything, so they are delivered only once it runs.
"""
from __future__ import annotations

import logging
import struct
from typing import Any

from .. import ptrace_ext
from ..context import DumpContext, RestoreContext
from ..image import b64, unb64
from ..inject import RemoteThread
from ..procfs import read_status
from .kind import Resource

log = logging.getLogger(__name__)

_SIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask
_ITIMERVAL = struct.Struct("<qqqq")
_UNCATCHABLE = {9, 19}
NSIG = 64


def _signal_set(status: dict[str, str], *keys: str) -> set[int]:
    bits = 0
    for key in keys:
        bits |= int(status[key], 16)
    return {sig for sig in range(1, NSIG + 1) if bits >> (sig - 1) & 1}


def dump(ctx: DumpContext) -> dict[str, Any]:
    assert ctx.leader is not None and ctx.scratch is not None and ctx.mem is not None
    status = read_status(ctx.pid)
    actions = {}
    ctx.scratch.reset()
    buf = ctx.scratch.reserve(_SIGACTION.size)
    for sig in sorted(_signal_set(status, "SigCgt", "SigIgn")):
        ctx.leader.call("rt_sigaction", sig, 0, buf, 8)
        actions[str(sig)] = list(_SIGACTION.unpack(ctx.mem.read(buf, _SIGACTION.size)))
    itimers = {}
    for which in range(3):
        ctx.leader.call("getitimer", which, buf)
        value = list(_ITIMERVAL.unpack(ctx.mem.read(buf, _ITIMERVAL.size)))
        if any(value):
            itimers[str(which)] = value
    return {
        "actions": actions,
        "itimers": itimers,
        "shared_pending": [b64(s) for s in ptrace_ext.peek_siginfo(ctx.pid, shared=True)],
        "thread_pending": {str(ctx.tree.inner(tid)): [b64(s) for s in ptrace_ext.peek_siginfo(tid, shared=False)]
                           for tid in ctx.tids},
    }


def restore_dispositions(ctx: RestoreContext, rec: dict[str, Any]) -> None:
    """Every signal the seed (a copy of us) or the image handles or ignores gets the image's
    disposition, SIG_DFL where the image had none."""
    seed = _signal_set(read_status(ctx.pid), "SigCgt", "SigIgn")
    ctx.scratch.reset()
    for sig in sorted(seed | {int(s) for s in rec["actions"]}):
        if sig in _UNCATCHABLE:
            continue
        action = rec["actions"].get(str(sig), [0, 0, 0, 0])
        ctx.leader.call("rt_sigaction", sig, ctx.scratch.put(_SIGACTION.pack(*action)), 0, 8)
    for which, value in rec["itimers"].items():
        if not any(value[2:]):
            # An interval timer that expired with its SIGALRM still pending reads as 0 left: the
            # kernel re-arms it only when that signal is taken. Setting 0 would disarm it, so
            # let it expire at once instead: its signal merges with the saved pending one.
            value = [*value[:2], 0, 1]
        ctx.leader.call("setitimer", int(which), ctx.scratch.put(_ITIMERVAL.pack(*value)), 0)


def queue_pending(ctx: RestoreContext, rec: dict[str, Any], by_tid: dict[int, RemoteThread]) -> None:
    """Queue saved pending signals from inside the process, each by the thread it is for: the
    kernel lets only a thread queue a signal with si_code >= 0 or SI_TKILL (kill, tgkill,
    the kernel's own) to itself, and only the leader such a process-wide one. `by_tid` maps
    the tids the process sees to its threads."""
    ctx.scratch.reset()
    for tid, infos in rec["thread_pending"].items():
        for info in infos:
            raw = unb64(info)
            sig = struct.unpack_from("<i", raw)[0]
            log.debug("pid %d tid %s: queueing signal %d again", ctx.ns_pid, tid, sig)
            by_tid[int(tid)].call("rt_tgsigqueueinfo", ctx.ns_pid, int(tid), sig, ctx.scratch.put(raw))
    for info in rec["shared_pending"]:
        raw = unb64(info)
        sig = struct.unpack_from("<i", raw)[0]
        ctx.leader.call("rt_sigqueueinfo", ctx.ns_pid, sig, ctx.scratch.put(raw))



SIGNALS = Resource("signals", record="signals", dump_process=dump)
