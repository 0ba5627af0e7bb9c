"""Keep a live thread safe from our own death while we inject system calls into it.

When the tracer dies (SIGKILL, say), the kernel detaches its tracees and they run on from
whatever registers and signal mask they have then: mid-injection that is a syscall
instruction with our arguments and every signal blocked, and the thread crashes or never
sees a signal again. So before the first injection a guarded thread gets, below its stack's
red zone, a signal frame holding its own registers, signal mask and FPU state, and is
pointed at a `syscall; ret` in its libc whose `ret` leads to libc's rt_sigreturn stub. Our
injected calls use that `syscall`, and between them the thread rests at the `ret`; left
alone at any moment, it returns into the frame and the kernel puts back exactly what it had.
The frame lies where a signal handler's would, in memory no code of the program uses.
The frame's layout and the code it needs are the CPU's (arch.signal_frame); without that
code in the process, the thread is not guarded.
"""
from __future__ import annotations

import logging

from . import arch, ptrace_ext
from .errors import CkptError
from .inject import RemoteMemory, RemoteThread
from .procfs import parse_maps

log = logging.getLogger(__name__)


def find_code(mem: RemoteMemory) -> tuple[int, int] | None:
    """(address of a `syscall; ret`, address of the rt_sigreturn stub) in the process's
    libc, or None."""
    with open(f"/proc/{mem.pid}/maps") as f:
        vmas = [v for v in parse_maps(f.read()) if "x" in v.perms and "/libc" in v.path]
    found: dict[bytes, int] = {}
    for vma in vmas:
        try:
            code = mem.read(vma.start, vma.size)
        except (OSError, CkptError):
            continue  # unreadable: look in the next one
        for needle in (arch.SYSCALL_RET_INSN, arch.RT_SIGRETURN_STUB):
            at = code.find(needle)
            if at >= 0 and needle not in found:
                found[needle] = vma.start + at
    if len(found) < 2:
        return None
    return found[arch.SYSCALL_RET_INSN], found[arch.RT_SIGRETURN_STUB]


def arm(thread: RemoteThread, mem: RemoteMemory, sigmask: int, code: tuple[int, int]) -> bool:
    """Write the thread's frame and point it at the `ret`; True if it is now guarded. Call
    with the thread stopped, before blocking its signals for injection; put_back() undoes
    it (restore its mask before its registers: in between it is still guarded)."""
    syscall_ret, stub = code
    try:
        xstate = ptrace_ext.get_xstate(thread.tid)
    except ptrace_ext.PtraceError:
        return False
    built = arch.signal_frame(arch.resumed_registers(thread.saved), sigmask, xstate, stub)
    if built is None:
        return False
    frame, body = built
    try:
        mem.write(frame, body)
    except OSError:
        return False  # no room on its stack: unguarded, as before
    ptrace_ext.setregs(thread.tid, arch.resting_registers(thread.saved, syscall_ret + len(arch.SYSCALL_INSN),
                                                          frame))
    thread.set_gadget(syscall_ret)
    thread.stack = frame
    return True

