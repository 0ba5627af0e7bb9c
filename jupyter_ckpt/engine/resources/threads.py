"""Threads: exact TIDs, registers, extended FPU state, signal masks, rseq, robust futex
lists, clear_child_tid, alternate signal stacks, names and scheduling (policy, priority,
nice value and reset-on-fork flag, all per thread on Linux).

Threads caught inside a syscall are saved the way the kernel would resume them (see
arch.fix_interrupted_syscall). At restore, every thread but the leader is created inside the
restored process with clone3(set_tid), then each gets its per-thread kernel state by syscalls
injected into that very thread (rseq, robust list and tid address belong to the caller).
"""
from __future__ import annotations

import logging
import os
import struct
from typing import Any

from .. import arch, ptrace_ext, syscalls
from ..context import DumpContext, RestoreContext
from ..errors import CkptError, RestoreConflict
from ..image import b64, unb64
from ..inject import RemoteThread
from .kind import Resource

log = logging.getLogger(__name__)

PR_GET_PDEATHSIG = 2
PR_SET_NAME = 15
PR_GET_TID_ADDRESS = 40
RSEQ_FLAG_UNREGISTER = 1
_STACK_T = struct.Struct("<QiiQ")  # ss_sp, ss_flags, pad, ss_size
CLONE_THREAD_FLAGS = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000  # VM FS FILES SIGHAND THREAD SYSVSEM
POLICIES = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_BATCH: "SCHED_BATCH", os.SCHED_IDLE: "SCHED_IDLE",
            os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}


def dump(ctx: DumpContext) -> list[dict[str, Any]]:
    return [_dump_thread(ctx, t) for t in ctx.threads]


def _dump_thread(ctx: DumpContext, t: RemoteThread) -> dict[str, Any]:
    regs = arch.regs_from_dict(arch.regs_to_dict(t.saved))
    restart = arch.fix_interrupted_syscall(regs, restored=True)
    rseq = ptrace_ext.get_rseq_config(t.tid)
    rec: dict[str, Any] = {"tid": ctx.tree.inner(t.tid), "restart": restart, "xstate": b64(ptrace_ext.get_xstate(t.tid)),
                           "sigmask": ctx.saved_masks[t.tid], "robust_list": list(syscalls.get_robust_list(t.tid)),
                           "comm": open(f"/proc/{ctx.pid}/task/{t.tid}/comm").read().rstrip("\n"),
                           "rseq": None, "sched": _dump_scheduling(ctx, t.tid)}
    if rseq.pointer:
        rec["rseq"] = {"pointer": rseq.pointer, "size": rseq.size, "signature": rseq.signature}
        _leave_rseq_critical_section(ctx, regs, rseq.pointer)
    assert ctx.scratch is not None
    ctx.scratch.reset()
    addr = ctx.scratch.reserve(8)
    t.call("prctl", PR_GET_TID_ADDRESS, addr)
    rec["clear_child_tid"] = struct.unpack("<Q", ctx.mem.read(addr, 8))[0]  # type: ignore[union-attr]
    addr = ctx.scratch.reserve(4)
    t.call("prctl", PR_GET_PDEATHSIG, addr)  # per thread, and readable only from inside
    pdeath = struct.unpack("<i", ctx.mem.read(addr, 4))[0]  # type: ignore[union-attr]
    if pdeath:
        # the restore's helpers are the thread's parents for a while: it would fire then
        raise ctx.refuse(f"tid {rec['tid']}", "parent-death signal",
                         f"PR_SET_PDEATHSIG ({pdeath}) is not restored")
    addr = ctx.scratch.reserve(_STACK_T.size)
    t.call("sigaltstack", 0, addr)
    sp, flags, _, size = _STACK_T.unpack(ctx.mem.read(addr, _STACK_T.size))  # type: ignore[union-attr]
    rec["sigaltstack"] = [sp, flags & ~1, size]  # SS_ONSTACK is state, not a setting
    rec["regs"] = arch.regs_to_dict(regs)
    return rec


def _dump_scheduling(ctx: DumpContext, tid: int) -> dict[str, Any]:
    """Read from outside: the kernel shows any thread's scheduling to anyone."""
    policy = os.sched_getscheduler(tid)
    reset_on_fork = bool(policy & os.SCHED_RESET_ON_FORK)
    policy &= ~os.SCHED_RESET_ON_FORK
    if policy not in POLICIES:  # SCHED_DEADLINE's runtime and period, a BPF scheduler's class
        raise ctx.refuse(f"tid {ctx.tree.inner(tid)}", "scheduling policy",
                         f"policy {policy} is not supported (only {', '.join(POLICIES.values())})")
    return {"policy": policy, "priority": os.sched_getparam(tid).sched_priority,
            "nice": os.getpriority(os.PRIO_PROCESS, tid), "reset_on_fork": reset_on_fork}


def _leave_rseq_critical_section(ctx: DumpContext, regs: arch.Regs, area: int) -> None:
    """A thread stopped inside an rseq critical section must resume at its abort handler."""
    assert ctx.mem is not None
    (cs_ptr,) = struct.unpack("<Q", ctx.mem.read(area + 8, 8))
    if not cs_ptr:
        return
    _version, _flags, start, length, abort = struct.unpack("<IIQQQ", ctx.mem.read(cs_ptr, 32))
    ip = arch.instruction_pointer(regs)
    if start <= ip < start + length:
        arch.set_instruction_pointer(regs, abort)


def unregister_inherited_rseq(seed: RemoteThread) -> None:
    """The seed inherited our rseq registration; it must go before our memory does."""
    cfg = ptrace_ext.get_rseq_config(seed.tid)
    if cfg.pointer:
        seed.call("rseq", cfg.pointer, cfg.size, RSEQ_FLAG_UNREGISTER, cfg.signature)


def create(ctx: RestoreContext, recs: list[dict[str, Any]]) -> list[RemoteThread]:
    """Create the non-leader threads with their exact TIDs; returns all threads, leader first."""
    threads = [ctx.leader]
    for rec in recs[1:]:
        ctx.scratch.reset()
        tid_array = ctx.scratch.put(struct.pack("<i", rec["tid"]))
        args = ctx.scratch.put(syscalls.clone_args(CLONE_THREAD_FLAGS, 0, tid_array))
        ns_tid = ctx.leader.call("clone3", args, syscalls.CLONE_ARGS_SIZE)
        if ns_tid != rec["tid"]:
            raise CkptError(f"clone3 gave tid {ns_tid}, wanted {rec['tid']}")
        tid = ctx.leader.children.pop()  # the same thread as we see it
        stop = ptrace_ext.wait(tid)
        if stop.event != ptrace_ext.EVENT_STOP:
            raise CkptError(f"new thread {tid}: {stop.describe()}")
        thread = RemoteThread(tid, ctx.leader.gadget)
        thread.stack = ctx.leader.stack
        threads.append(thread)
    return threads


def restore(ctx: RestoreContext, rec: dict[str, Any], thread: RemoteThread) -> None:
    """Per-thread kernel state, set from inside the thread; registers come last (finish)."""
    ctx.scratch.reset()
    if rec["rseq"]:
        r = rec["rseq"]
        thread.call("rseq", r["pointer"], r["size"], 0, r["signature"])
    head, length = rec["robust_list"]
    if head:
        thread.call("set_robust_list", head, length)
    thread.call("set_tid_address", rec["clear_child_tid"])
    sp, flags, size = rec["sigaltstack"]
    thread.call("sigaltstack", ctx.scratch.put(_STACK_T.pack(sp, flags, 0, size)), 0)
    thread.call("prctl", PR_SET_NAME, ctx.scratch.cstring(rec["comm"][:15]))


def restore_scheduling(rec: dict[str, Any], thread: RemoteThread) -> None:
    """Set from outside, after the process's rlimits (RLIMIT_RTPRIO and RLIMIT_NICE may be
    what allows it). What the restorer may not grant is refused by name, never dropped."""
    want = rec["sched"]
    policy = want["policy"] | (os.SCHED_RESET_ON_FORK if want["reset_on_fork"] else 0)
    try:
        if (os.sched_getscheduler(thread.tid), os.sched_getparam(thread.tid).sched_priority) != \
                (policy, want["priority"]):
            os.sched_setscheduler(thread.tid, policy, os.sched_param(want["priority"]))
        if os.getpriority(os.PRIO_PROCESS, thread.tid) != want["nice"]:
            os.setpriority(os.PRIO_PROCESS, thread.tid, want["nice"])
    except PermissionError:
        raise RestoreConflict(
            f"tid {rec['tid']}: scheduling {POLICIES[want['policy']]} priority {want['priority']} "
            f"nice {want['nice']}{' reset-on-fork' if want['reset_on_fork'] else ''} is not allowed "
            "to this restorer (it needs CAP_SYS_NICE, or RLIMIT_RTPRIO/RLIMIT_NICE allowing it)") from None
    log.debug("tid %d: scheduling %s", rec["tid"], want)


def finish(rec: dict[str, Any], thread: RemoteThread) -> None:
    """Final registers and FPU state: the thread resumes exactly here when released."""
    thread.park()  # resumed from an interrupt stop, the kernel settles an interrupted syscall
    ptrace_ext.set_xstate(thread.tid, unb64(rec["xstate"]))
    thread.saved = arch.regs_from_dict(rec["regs"])
    thread.put_back()


THREADS = Resource("threads", record="threads", empty=list, dump_process=dump)
