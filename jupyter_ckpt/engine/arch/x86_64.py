"""x86_64 specifics: syscall numbers and ABI, registers, restartable syscalls, xstate."""
from __future__ import annotations

import ctypes
import struct

from ..libc import lend_to_python_ptrace

lend_to_python_ptrace()
from ptrace.binding.linux_struct import user_regs_struct  # noqa: E402 (after the line above)

__all__ = [
    "NAME", "NR", "Regs", "SYSCALL_INSN", "SYSCALL_INSN_LEN", "NT_XSTATE",
    "XSTATE_BUFFER_SIZE", "regs_to_dict", "regs_from_dict", "prepare_syscall",
    "syscall_result", "fix_interrupted_syscall", "instruction_pointer", "set_instruction_pointer",
    "stack_pointer", "set_stack_pointer", "xstate_features", "TASK_SIZE",
    "SYSCALL_RET_INSN", "RT_SIGRETURN_STUB", "resumed_registers", "resting_registers",
    "signal_frame", "JUMP_LEN", "FILL_INSN", "jump_to", "FORK_OR_EXIT",
]

NAME = "x86_64"

# One past the highest user address (4-level page tables; the kernel maps nothing above it
# for a process that did not ask for 5-level addresses).
TASK_SIZE = 0x7FFFFFFFF000

# Syscall numbers used by the engine (asm/unistd_64.h).
NR = {
    "read": 0, "write": 1, "close": 3, "lseek": 8, "mmap": 9, "mprotect": 10,
    "munmap": 11, "clone": 56, "exit": 60, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14, "ioctl": 16,
    "mremap": 25, "mincore": 27, "madvise": 28, "shmget": 29, "shmat": 30, "shmctl": 31, "dup": 32, "getitimer": 36, "setitimer": 38,
    "getpid": 39, "sendmsg": 46, "recvmsg": 47, "fcntl": 72, "fchdir": 81,
    "umask": 95, "setpgid": 109, "setsid": 112, "setgroups": 116, "setresuid": 117, "capset": 126,
    "setresgid": 119, "setfsuid": 122, "setfsgid": 123, "rt_sigqueueinfo": 129, "sigaltstack": 131, "personality": 135,
    "prctl": 157, "gettid": 186, "set_tid_address": 218, "exit_group": 231, "epoll_ctl": 233,
    "rt_sigtimedwait": 128, "timer_create": 222, "timer_settime": 223, "timer_gettime": 224,
    "timer_getoverrun": 225, "clock_gettime": 228,
    "set_robust_list": 273, "signalfd4": 289, "get_robust_list": 274, "tee": 276, "dup3": 292,
    "rt_tgsigqueueinfo": 297, "prlimit64": 302, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "userfaultfd": 323, "membarrier": 324, "rseq": 334, "pidfd_open": 434,
    "openat": 257, "flock": 73, "open_by_handle_at": 304, "clone3": 435, "close_range": 436, "pidfd_getfd": 438,
}

# `syscall` is 0f 05; the kernel rewinds ip by its length to restart a syscall.
SYSCALL_INSN = b"\x0f\x05"
SYSCALL_INSN_LEN = 2

# An absolute jump that clobbers no register: `jmp qword ptr [rip+0]` followed by the
# 8-byte target it reads (the vdso proxy's entry points, resources/vdso.py).
_JMP_RIP_INDIRECT = b"\xff\x25\x00\x00\x00\x00"
JUMP_LEN = len(_JMP_RIP_INDIRECT) + 8
# A `syscall` after which a thread with a result of 0 (the child of a clone) loops on
# exit(0) and any other thread returns (`ret`): `syscall; test %rax,%rax; jnz 1f;
# 0: xor %edi,%edi; mov $60,%eax; syscall; jmp 0b; 1: ret`.
FORK_OR_EXIT = SYSCALL_INSN + b"\x48\x85\xc0\x75\x0b" + b"\x31\xff\xb8\x3c\x00\x00\x00" \
    + SYSCALL_INSN + b"\xeb\xf5\xc3"
# What fills the rest of a code area that nothing may run: int3, a trap
FILL_INSN = b"\xcc"

NT_XSTATE = 0x202
# Big enough for every xsave layout the kernel exposes (AVX-512 + AMX tile config: ~2.7 KiB;
# AMX tile data would need 11 KiB, so allow that too).
XSTATE_BUFFER_SIZE = 16384

Regs = user_regs_struct
_ARG_REGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")

_ERESTARTSYS, _ERESTARTNOINTR, _ERESTARTNOHAND, _ERESTART_RESTARTBLOCK = 512, 513, 514, 516
_EINTR = 4
_NR_RESTART_SYSCALL = 219
_NR_RT_SIGRETURN = 15
_NR_POLL, _NR_EPOLL_WAIT, _NR_EPOLL_PWAIT, _NR_EPOLL_PWAIT2 = 7, 232, 281, 441


def regs_to_dict(regs: Regs) -> dict[str, int]:
    return {name: getattr(regs, name) for name, _ in Regs._fields_}


def regs_from_dict(values: dict[str, int]) -> Regs:
    regs = Regs()
    for name, _ in Regs._fields_:
        setattr(regs, name, values[name])
    return regs


def _copy(regs: Regs) -> Regs:
    clone = Regs()
    ctypes.memmove(ctypes.addressof(clone), ctypes.addressof(regs), ctypes.sizeof(Regs))
    return clone


def prepare_syscall(base: Regs, gadget: int, nr: int, args: tuple[int, ...], stack: int) -> Regs:
    """Registers that make a stopped thread execute one syscall at `gadget`."""
    regs = _copy(base)
    regs.rip = gadget
    regs.rax = nr
    regs.orig_rax = (1 << 64) - 1  # not inside a syscall: no restart logic on resume
    regs.rsp = stack
    for name, value in zip(_ARG_REGS, args):
        setattr(regs, name, value & ((1 << 64) - 1))
    return regs


def syscall_result(regs: Regs) -> int:
    return ctypes.c_long(regs.rax).value


def instruction_pointer(regs: Regs) -> int:
    return regs.rip


def set_instruction_pointer(regs: Regs, value: int) -> None:
    regs.rip = value


def stack_pointer(regs: Regs) -> int:
    return regs.rsp


def set_stack_pointer(regs: Regs, value: int) -> None:
    regs.rsp = value


def fix_interrupted_syscall(regs: Regs, restored: bool) -> str | None:
    """Settle the result of a syscall the thread was stopped in, so that it resumes as the
    kernel would have resumed it. Returns what will happen (None: not in a syscall).

    The registers keep orig_rax and an -ERESTART* code: the thread must be resumed from an
    interrupt stop (RemoteThread.park), where the kernel's own signal code then restarts the
    syscall, or turns it into EINTR when a handler runs (ERESTARTNOHAND, ERESTARTSYS without
    SA_RESTART), exactly as it would have done without us.
    Adjusted here: a `restored` thread has no kernel restart_block, so restart_block
    syscalls see EINTR (glibc/CPython callers retry; nanosleep has written the time left).
    poll without timeout is plainly issued again instead, live too (a live thread left in
    restart_syscall could not be told from a sleep at a later checkpoint). epoll_wait
    without timeout fails with EINTR on any stop, ptrace's included: it is made
    restartable, so it fails only if a signal handler runs, as without the checkpoint.
    """
    if ctypes.c_long(regs.orig_rax).value < 0:
        return None
    err = -ctypes.c_long(regs.rax).value
    nr = regs.orig_rax
    no_timeout = (nr in (_NR_EPOLL_WAIT, _NR_EPOLL_PWAIT) and ctypes.c_int(regs.r10).value < 0) \
        or (nr == _NR_EPOLL_PWAIT2 and regs.r10 == 0)
    if err == _EINTR and no_timeout:
        err = _ERESTARTNOHAND
    elif err == _ERESTART_RESTARTBLOCK and nr == _NR_POLL and ctypes.c_int(regs.rdx).value < 0:
        err = _ERESTARTNOHAND  # nothing to remember: plain re-issue, live or restored
    elif err == _ERESTART_RESTARTBLOCK and restored:
        err = _EINTR
    regs.rax = (-err) & ((1 << 64) - 1)
    if err in (_ERESTARTSYS, _ERESTARTNOINTR, _ERESTARTNOHAND):
        return "restart"
    if err == _ERESTART_RESTARTBLOCK:
        return "restart_syscall"
    return "eintr" if err == _EINTR else None


def jump_to(target: int) -> bytes:
    """JUMP_LEN bytes of code that continue at the absolute address `target`."""
    return _JMP_RIP_INDIRECT + struct.pack("<Q", target)


def xstate_features(xstate: bytes) -> int:
    """The XSAVE feature mask (XCR0) the kernel recorded in the software-reserved bytes."""
    if len(xstate) < 512 + 64:
        return 0
    magic, _extended_size, xfeatures = struct.unpack_from("<IIQ", xstate, _SW_RESERVED_AT)
    return xfeatures if magic == _FP_XSTATE_MAGIC1 else 0


# A signal frame of our own (guard.py): the code it needs in libc, and its layout
# (struct rt_sigframe of arch/x86/include/asm/sigframe.h).
SYSCALL_RET_INSN = SYSCALL_INSN + b"\xc3"  # syscall; ret
RT_SIGRETURN_STUB = b"\x48\xc7\xc0" + struct.pack("<I", _NR_RT_SIGRETURN) + SYSCALL_INSN  # mov $15, %rax; syscall
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


def resumed_registers(saved: Regs) -> Regs:
    """The registers a thread stopped with `saved` would resume with, its interrupted syscall
    settled as the kernel would settle it with no handler to run (rt_sigreturn restarts
    nothing itself)."""
    regs = _copy(saved)
    outcome = fix_interrupted_syscall(regs, restored=False)
    if outcome == "restart":
        regs.rax = regs.orig_rax
        regs.rip -= SYSCALL_INSN_LEN
    elif outcome == "restart_syscall":
        regs.rax = _NR_RESTART_SYSCALL
        regs.rip -= SYSCALL_INSN_LEN
    return regs


def resting_registers(saved: Regs, ip: int, sp: int) -> Regs:
    """`saved` moved to `ip` and `sp`, outside any syscall (nothing for the kernel to restart)."""
    regs = _copy(saved)
    regs.rip, regs.rsp = ip, sp
    regs.orig_rax = (1 << 64) - 1
    return regs


def signal_frame(regs: Regs, sigmask: int, xstate: bytes, restorer: int) -> tuple[int, bytes] | None:
    """A signal frame below the red zone of the stack `regs` use, as the kernel would build it
    for a handler returning to `restorer` (the rt_sigreturn stub): its address, and the bytes
    to write there. rt_sigreturn from it resumes `regs` with `sigmask` and the FPU state
    `xstate` (as PTRACE_GETREGSET NT_XSTATE gives it). None when `xstate` is too short."""
    if len(xstate) < 512 + 64:
        return None
    # ptrace leaves XCR0 where a signal frame has its software-reserved bytes: make those
    xstate_size = len(xstate)
    (features,) = struct.unpack_from("<Q", xstate, _SW_RESERVED_AT)
    fpu = bytearray(xstate)
    struct.pack_into("<IIQI28x", fpu, _SW_RESERVED_AT, _FP_XSTATE_MAGIC1, xstate_size + 4,
                     features, xstate_size)
    fpstate = (regs.rsp - _RED_ZONE - xstate_size - 4) & ~63
    frame = (fpstate - _FRAME_SIZE) & ~15
    body = bytearray(_FRAME_SIZE)
    struct.pack_into("<QQQQi", body, 0, restorer, _UC_FLAGS, 0, 0, _SS_INVALID)
    values = regs_to_dict(regs)
    struct.pack_into("<18Q", body, _SIGCONTEXT_AT, *(values[r] for r in _SIGCONTEXT_REGS))
    struct.pack_into("<HHHH", body, _SIGCONTEXT_AT + 144, values["cs"], values["gs"], values["fs"],
                     values["ss"])
    struct.pack_into("<Q", body, _SIGCONTEXT_AT + 184, fpstate)
    struct.pack_into("<Q", body, _SIGMASK_AT, sigmask)
    return frame, (bytes(body) + bytes(fpstate - frame - _FRAME_SIZE) + bytes(fpu)
                   + struct.pack("<I", _FP_XSTATE_MAGIC2))
