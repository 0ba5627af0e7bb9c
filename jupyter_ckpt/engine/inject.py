"""Run system calls inside a stopped tracee, without code of ours in its address space.

A thread in a ptrace-stop is pointed at a `syscall` instruction that already exists in its
vdso (the "gadget") with the registers set up for the call; PTRACE_SYSCALL stops it again at
syscall exit, where we read the result and either set up the next call or put back its own
registers. Nothing is written into the tracee's code, and the gadget is never executed past
the syscall instruction, so its location may even be about to be unmapped.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os

from . import arch, ptrace_ext
from .errors import CkptError
from .procfs import parse_maps

log = logging.getLogger(__name__)


def _arg(value: int) -> str:
    """A syscall argument or result as a log line shows it (addresses in hex)."""
    return hex(value) if value > 0xFFFF or value < -0xFFFF else str(value)


class RemoteMemory:
    """Read and write a tracee's memory through /proc/PID/mem (works on read-only pages)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)

    def read(self, addr: int, size: int) -> bytes:
        data = os.pread(self.fd, size, addr)
        if len(data) != size:
            raise CkptError(f"pid {self.pid}: short read of {size} bytes at {addr:#x}")
        return data

    def write(self, addr: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, addr)
            view, addr = view[n:], addr + n

    def close(self) -> None:
        os.close(self.fd)


def syscall_gadget(mem: RemoteMemory) -> int:
    """Address of a `syscall` instruction in the process's vdso."""
    with open(f"/proc/{mem.pid}/maps") as f:
        vdso = next((v for v in parse_maps(f.read()) if v.path == "[vdso]"), None)
    if vdso is None:
        raise CkptError(f"pid {mem.pid} has no vdso; cannot inject system calls")
    offset = mem.read(vdso.start, vdso.size).find(arch.SYSCALL_INSN)
    if offset < 0:
        raise CkptError(f"pid {mem.pid}: no syscall instruction in its vdso")
    return vdso.start + offset


class Scratch:
    """A private mapping in the tracee used for syscall arguments; a simple bump allocator."""

    def __init__(self, mem: RemoteMemory, addr: int, size: int):
        self.mem, self.addr, self.size, self.used = mem, addr, size, 0

    def reserve(self, size: int) -> int:
        size = (size + 15) & ~15
        if self.used + size > self.size:
            raise CkptError("scratch area exhausted")
        addr = self.addr + self.used
        self.used += size
        return addr

    def put(self, data: bytes) -> int:
        addr = self.reserve(len(data))
        self.mem.write(addr, data)
        return addr

    def cstring(self, text: str) -> int:
        return self.put(os.fsencode(text) + b"\0")

    def reset(self) -> None:
        self.used = 0

    @property
    def top(self) -> int:
        return self.addr + self.size


class RemoteThread:
    """One stopped thread we can run syscalls in. Keeps its original registers."""

    def __init__(self, tid: int, gadget: int):
        self.tid = tid
        self.gadget = gadget
        self.saved = ptrace_ext.getregs(tid)
        self.stack = arch.stack_pointer(self.saved)
        self.children: list[int] = []

    def call(self, name: str, *args: int, check: bool = True) -> int:
        regs = arch.prepare_syscall(self.saved, self.gadget, arch.NR[name], args, self.stack)
        ptrace_ext.setregs(self.tid, regs)
        self._resume_until_syscall_stop(name)  # entry
        self._resume_until_syscall_stop(name)  # exit
        result = arch.syscall_result(ptrace_ext.getregs(self.tid))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("tid %d: %s(%s) = %s", self.tid, name, ", ".join(map(_arg, args)),
                      f"-{errno.errorcode.get(-result, -result)}" if -4096 < result < 0
                      else _arg(result))
        if check and -4096 < result < 0:
            raise OSError(-result, f"{name} in tid {self.tid}: {os.strerror(-result)}")
        return result

    def block_signals(self) -> None:
        """Block every signal in the thread (through ptrace): nothing may be delivered while
        we inject, nor run a handler on registers we set up."""
        ptrace_ext.set_sigmask(self.tid, (1 << 64) - 1)

    def mmap_scratch(self, size: int) -> int:
        """Map `size` bytes of private read-write memory in the tracee, for the arguments of
        the calls that follow; the caller unmaps it again with `munmap`."""
        return self.call("mmap", 0, size, mmap.PROT_READ | mmap.PROT_WRITE,
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)

    def _resume_until_syscall_stop(self, name: str) -> None:
        ptrace_ext.resume_to_syscall(self.tid)
        while True:
            stop = ptrace_ext.wait(self.tid)
            if stop.is_syscall_stop:
                return
            if stop.stopped and stop.event in (ptrace_ext.EVENT_CLONE, ptrace_ext.EVENT_FORK,
                                               ptrace_ext.EVENT_VFORK):
                self.children.append(ptrace_ext.geteventmsg(self.tid))
                ptrace_ext.resume_to_syscall(self.tid)
                continue
            raise CkptError(f"injected {name}: {stop.describe()}")

    def set_gadget(self, gadget: int) -> None:
        self.gadget = gadget

    def park(self) -> None:
        """Move the thread from a syscall stop into an interrupt stop without running any of
        its code: resumed from there, it goes through the kernel's signal code, which applies
        the syscall-restart logic to the registers it then has (see fix_interrupted_syscall).
        Call with every signal blocked, before put_back."""
        ptrace_ext.interrupt(self.tid)
        ptrace_ext.cont(self.tid)
        while True:
            stop = ptrace_ext.wait(self.tid)
            if stop.stopped and stop.event == ptrace_ext.EVENT_STOP:
                return
            if stop.exited or not stop.stopped:
                raise CkptError(f"parking tid {self.tid}: {stop.describe()}")
            # a signal that cannot be blocked (SIGSTOP) arrived first: deliver it, go on
            ptrace_ext.cont(self.tid, stop.sig if stop.event == 0 else 0)

    def put_back(self) -> None:
        """Give the thread its own registers again (it stays stopped)."""
        ptrace_ext.setregs(self.tid, self.saved)

    def restore_live(self, sigmask: int) -> None:
        """After injecting into a live thread: its own registers and signal mask again,
        parked so that when released the kernel settles an interrupted syscall as it would
        have without us. A thread that cannot be parked keeps its registers all the same."""
        try:
            arch.fix_interrupted_syscall(self.saved, restored=False)
            self.park()
        except (ptrace_ext.PtraceError, CkptError):
            pass  # still stopped: the registers below are what matters
        ptrace_ext.set_sigmask(self.tid, sigmask)  # first: a guarded thread (guard.py) stays
        self.put_back()  # safe from our death until it has its own registers

