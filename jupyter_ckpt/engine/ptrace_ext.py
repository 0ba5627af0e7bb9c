"""The ptrace requests python-ptrace lacks (SEIZE, INTERRUPT, regsets, sigmask, siginfo
queues, rseq), plus wait-status decoding. Thin on purpose: policy lives in freeze/inject.

All requests for one tracee must come from the thread that attached it.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from . import arch
from .libc import lend_to_python_ptrace

lend_to_python_ptrace()
from ptrace.binding import func as _pt  # noqa: E402 (after the line above)

PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_PEEKSIGINFO = 0x4209
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GET_RSEQ_CONFIGURATION = 0x420F
PTRACE_PEEKSIGINFO_SHARED = 1

O_TRACESYSGOOD = 0x1
O_TRACEFORK = 0x2
O_TRACEVFORK = 0x4
O_TRACECLONE = 0x8
O_EXITKILL = 0x100000

EVENT_FORK, EVENT_VFORK, EVENT_CLONE, EVENT_EXEC, EVENT_EXIT, EVENT_STOP = 1, 2, 3, 4, 6, 128
SYSCALL_STOP_SIG = 0x80 | 5  # SIGTRAP | 0x80 with TRACESYSGOOD
WALL = 0x40000000
SIGINFO_SIZE = 128

PtraceError = _pt.PtraceError
getregs = _pt.ptrace_getregs
setregs = _pt.ptrace_setregs
geteventmsg = _pt.ptrace_geteventmsg


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _PeekSiginfoArgs(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("nr", ctypes.c_int32)]


class _RseqConfig(ctypes.Structure):
    _fields_ = [("rseq_abi_pointer", ctypes.c_uint64), ("rseq_abi_size", ctypes.c_uint32),
                ("signature", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def _call(request: int, tid: int, addr: int = 0, data: int = 0) -> int:
    return _pt.ptrace(request, tid, addr, data)


def seize(tid: int, options: int) -> None:
    _call(PTRACE_SEIZE, tid, 0, options)


def interrupt(tid: int) -> None:
    _call(PTRACE_INTERRUPT, tid)


def cont(tid: int, sig: int = 0) -> None:
    _pt.ptrace_cont(tid, sig)


def resume_to_syscall(tid: int, sig: int = 0) -> None:
    _pt.ptrace_syscall(tid, sig)


def detach(tid: int, sig: int = 0) -> None:
    _pt.ptrace_detach(tid, sig)


def get_xstate(tid: int) -> bytes:
    buf = ctypes.create_string_buffer(arch.XSTATE_BUFFER_SIZE)
    iov = _Iovec(ctypes.addressof(buf), len(buf))
    _call(_pt.PTRACE_GETREGSET, tid, arch.NT_XSTATE, ctypes.addressof(iov))
    return buf.raw[: iov.len]


def set_xstate(tid: int, data: bytes) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    iov = _Iovec(ctypes.addressof(buf), len(data))
    _call(_pt.PTRACE_SETREGSET, tid, arch.NT_XSTATE, ctypes.addressof(iov))


def get_sigmask(tid: int) -> int:
    mask = ctypes.c_uint64()
    _call(PTRACE_GETSIGMASK, tid, 8, ctypes.addressof(mask))
    return mask.value


def set_sigmask(tid: int, mask: int) -> None:
    value = ctypes.c_uint64(mask)
    _call(PTRACE_SETSIGMASK, tid, 8, ctypes.addressof(value))


def peek_siginfo(tid: int, shared: bool) -> list[bytes]:
    """Queued (pending) signals of a thread, or of its whole process when `shared`."""
    out: list[bytes] = []
    batch = 32
    buf = ctypes.create_string_buffer(SIGINFO_SIZE * batch)
    while True:
        args = _PeekSiginfoArgs(len(out), PTRACE_PEEKSIGINFO_SHARED if shared else 0, batch)
        n = _call(PTRACE_PEEKSIGINFO, tid, ctypes.addressof(args), ctypes.addressof(buf))
        out += [buf.raw[i * SIGINFO_SIZE:(i + 1) * SIGINFO_SIZE] for i in range(n)]
        if n < batch:
            return out


@dataclass(frozen=True)
class RseqConfig:
    pointer: int
    size: int
    signature: int
    flags: int


def get_rseq_config(tid: int) -> RseqConfig:
    cfg = _RseqConfig()
    _call(PTRACE_GET_RSEQ_CONFIGURATION, tid, ctypes.sizeof(cfg), ctypes.addressof(cfg))
    return RseqConfig(cfg.rseq_abi_pointer, cfg.rseq_abi_size, cfg.signature, cfg.flags)


@dataclass(frozen=True)
class Stop:
    """What waitpid reported for one tracee."""

    tid: int
    status: int

    @property
    def exited(self) -> bool:
        return os.WIFEXITED(self.status) or os.WIFSIGNALED(self.status)

    @property
    def stopped(self) -> bool:
        return os.WIFSTOPPED(self.status)

    @property
    def sig(self) -> int:
        return os.WSTOPSIG(self.status) if self.stopped else 0

    @property
    def event(self) -> int:
        return (self.status >> 16) & 0xFF if self.stopped else 0

    @property
    def is_syscall_stop(self) -> bool:
        return self.stopped and self.event == 0 and self.sig == SYSCALL_STOP_SIG

    def describe(self) -> str:
        if os.WIFEXITED(self.status):
            return f"tid {self.tid} exited with status {os.WEXITSTATUS(self.status)}"
        if os.WIFSIGNALED(self.status):
            return f"tid {self.tid} was killed by signal {os.WTERMSIG(self.status)}"
        return f"tid {self.tid} stopped (signal {self.sig}, event {self.event})"


def wait(tid: int) -> Stop:
    _, status = os.waitpid(tid, WALL)
    return Stop(tid, status)

