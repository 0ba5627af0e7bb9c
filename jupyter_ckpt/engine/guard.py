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
x86-64 only; without the needed code in the process, the thread is not guarded.
"""
from __future__ import annotations

import logging
import struct

from . import arch, ptrace_ext
from .errors import CkptError
from .inject import RemoteMemory, RemoteThread
from .procfs import parse_maps

log = logging.getLogger(__name__)

_SYSCALL_RET = b"\x0f\x05\xc3"  # syscall; ret
_RT_SIGRETURN_STUB = b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05"  # mov $15, %rax; syscall
_RED_ZONE = 128
_UC_FLAGS = 0x1 | 0x2 | 0x4  # UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
_SS_INVALID = 3  # an invalid ss_flags: rt_sigreturn then leaves the sigaltstack as it is
_FP_XSTATE_MAGIC1, _FP_XSTATE_MAGIC2 = 0x46505853, 0x46505845
_SW_RESERVED_AT = 464  # in the legacy FXSAVE area
_UCONTEXT_AT = 8  # after pretcode
_SIGCONTEXT_AT = _UCONTEXT_AT + 8 + 8 + 24  # uc_flags, uc_link, uc_stack
_SIGMASK_AT = _SIGCONTEXT_AT + 256
_FRAME_SIZE = _SIGMASK_AT + 8 + 128  # then a siginfo
_SIGCONTEXT_REGS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp",
                    "rbx", "rdx", "rax", "rcx", "rsp", "rip", "eflags")
_NR_RESTART_SYSCALL = 219


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
        for needle in (_SYSCALL_RET, _RT_SIGRETURN_STUB):
            at = code.find(needle)
            if at >= 0 and needle not in found:
                found[needle] = vma.start + at
    if len(found) < 2:
        return None
    return found[_SYSCALL_RET], found[_RT_SIGRETURN_STUB]


def arm(thread: RemoteThread, mem: RemoteMemory, sigmask: int, code: tuple[int, int]) -> bool:
    """Write the thread's frame and point it at the `ret`; True if it is now guarded. Call
    with the thread stopped, before blocking its signals for injection; put_back() undoes
    it (restore its mask before its registers: in between it is still guarded)."""
    syscall_ret, stub = code
    try:
        xstate = ptrace_ext.get_xstate(thread.tid)
    except ptrace_ext.PtraceError:
        return False
    if len(xstate) < 512 + 64:
        return False
    # ptrace leaves XCR0 where a signal frame has its software-reserved bytes: make those
    xstate_size = len(xstate)
    (features,) = struct.unpack_from("<Q", xstate, _SW_RESERVED_AT)
    xstate = bytearray(xstate)
    struct.pack_into("<IIQI28x", xstate, _SW_RESERVED_AT, _FP_XSTATE_MAGIC1, xstate_size + 4,
                     features, xstate_size)
    fpstate = (arch.stack_pointer(thread.saved) - _RED_ZONE - xstate_size - 4) & ~63
    frame = (fpstate - _FRAME_SIZE) & ~15
    body = bytearray(_FRAME_SIZE)
    struct.pack_into("<QQQQi", body, 0, stub, _UC_FLAGS, 0, 0, _SS_INVALID)
    regs = _resumed(thread.saved)
    values = arch.regs_to_dict(regs)
    struct.pack_into("<18Q", body, _SIGCONTEXT_AT, *(values[r] for r in _SIGCONTEXT_REGS))
    struct.pack_into("<HHHH", body, _SIGCONTEXT_AT + 144, values["cs"], values["gs"], values["fs"],
                     values["ss"])
    struct.pack_into("<Q", body, _SIGCONTEXT_AT + 184, fpstate)
    struct.pack_into("<Q", body, _SIGMASK_AT, sigmask)
    try:
        mem.write(frame, bytes(body) + bytes(fpstate - frame - _FRAME_SIZE)
                  + bytes(xstate) + struct.pack("<I", _FP_XSTATE_MAGIC2))
    except OSError:
        return False  # no room on its stack: unguarded, as before
    resting = arch.regs_from_dict(arch.regs_to_dict(thread.saved))
    arch.set_instruction_pointer(resting, syscall_ret + len(arch.SYSCALL_INSN))
    arch.set_stack_pointer(resting, frame)
    resting.orig_rax = (1 << 64) - 1  # not in a syscall: nothing for the kernel to restart
    ptrace_ext.setregs(thread.tid, resting)
    thread.set_gadget(syscall_ret)
    thread.stack = frame
    return True


def _resumed(saved):
    """The registers the thread would resume with, its interrupted syscall settled as the
    kernel would settle it with no handler to run (rt_sigreturn restarts nothing itself)."""
    regs = arch.regs_from_dict(arch.regs_to_dict(saved))
    outcome = arch.fix_interrupted_syscall(regs, restored=False)
    if outcome == "restart":
        regs.rax = regs.orig_rax
        arch.set_instruction_pointer(regs, arch.instruction_pointer(regs) - len(arch.SYSCALL_INSN))
    elif outcome == "restart_syscall":
        regs.rax = _NR_RESTART_SYSCALL
        arch.set_instruction_pointer(regs, arch.instruction_pointer(regs) - len(arch.SYSCALL_INSN))
    return regs
