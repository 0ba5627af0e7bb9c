"""Raw system calls Python's os module does not offer, called through libc's syscall()."""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct

from . import arch
from .libc import check as _check
from .libc import libc as _libc
from .libc import syscall_holding_gil as _syscall_gil

_syscall = _libc.syscall


def syscall(name: str, *args: int) -> int:
    cargs = [ctypes.c_ulong(a & ((1 << 64) - 1)) for a in args]
    return _check(_syscall(ctypes.c_long(arch.NR[name]), *cargs), name)


class _CloneArgs(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("pidfd", ctypes.c_uint64),
                ("child_tid", ctypes.c_uint64), ("parent_tid", ctypes.c_uint64),
                ("exit_signal", ctypes.c_uint64), ("stack", ctypes.c_uint64),
                ("stack_size", ctypes.c_uint64), ("tls", ctypes.c_uint64),
                ("set_tid", ctypes.c_uint64), ("set_tid_size", ctypes.c_uint64),
                ("cgroup", ctypes.c_uint64)]


CLONE_ARGS_SIZE = ctypes.sizeof(_CloneArgs)


def clone_args(flags: int, exit_signal: int, set_tid_addr: int) -> bytes:
    """A struct clone_args asking for one exact PID/TID in the caller's PID namespace."""
    args = _CloneArgs(flags=flags, exit_signal=exit_signal, set_tid=set_tid_addr, set_tid_size=1)
    return bytes(args)


CLONE_PARENT = 0x00008000
_BORN = b"+"  # the child's word on the socket (an errno takes _ERRNO.size bytes)
_ERRNO = struct.Struct("i")
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


def fork_with_pid(pid: int) -> int:
    """fork() this process so that the child gets exactly `pid`. Returns 0 in the child.

    Cloning a multi-threaded interpreter ourselves cannot be made safe: while clone3 copies
    the address space, another thread's timed wait for the GIL may ask for it, and the
    child's only thread, back in the eval loop before it could reset the interpreter, hands
    the GIL to a thread that does not exist and waits forever. So os.fork() (which resets
    the interpreter in C, before any bytecode) makes a single-threaded intermediate, and
    that one clones the child as our child (CLONE_PARENT), or is the child if it happened
    to get `pid`. The child says so on a socket whose credentials the kernel translates
    into our PID namespace: when our children are born in another, they see other PIDs."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        middle = os.fork()
        if middle == 0:
            _intermediate(pid, ours, theirs)
            return 0
        theirs.close()
        data, ancillary, _, _ = ours.recvmsg(_ERRNO.size, socket.CMSG_SPACE(_UCRED.size))
    finally:
        ours.close()
        theirs.close()
    child = next((_UCRED.unpack(cdata)[0] for level, kind, cdata in ancillary
                  if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)), 0)
    if data != _BORN or child != middle:
        try:
            os.waitpid(middle, 0)
        except ChildProcessError:
            pass  # reaped by a handler of the host program's (asyncio's child watcher)
    if data == _BORN:
        return child
    if len(data) == _ERRNO.size:
        err = _ERRNO.unpack(data)[0]
        raise OSError(err, f"clone3(set_tid={pid}): {os.strerror(err)}")
    raise OSError(errno.EIO, f"clone3(set_tid={pid}): the forking process ended without a word")


def _intermediate(pid: int, ours: socket.socket, report: socket.socket) -> None:
    """fork_with_pid's single-threaded intermediate: clone the child with `pid` (or be it)
    and exit. Returns only in the child, once it has said it is born on `report`."""
    try:
        ours.close()
        if os.getpid() != pid:
            tid_array = (ctypes.c_int32 * 1)(pid)
            # CLONE_PARENT wants exit_signal 0: the child gets ours (os.fork gave us SIGCHLD)
            args = _CloneArgs(flags=CLONE_PARENT, set_tid=ctypes.addressof(tid_array), set_tid_size=1)
            result = _syscall_gil(ctypes.c_long(arch.NR["clone3"]), ctypes.byref(args),
                                  ctypes.c_size_t(ctypes.sizeof(args)))
            if result < 0:
                report.send(_ERRNO.pack(ctypes.get_errno()))
            if result != 0:
                os._exit(0)
        report.send(_BORN)
        report.close()
    except BaseException:
        os._exit(1)  # never back into the caller's code as anything but the child


def pidfd_getfd(pidfd: int, fd: int) -> int:
    """Duplicate another process's fd into ours (same open file description)."""
    return syscall("pidfd_getfd", pidfd, fd, 0)


class _Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_IOV_MAX = 1024


def _vm_transfer(name: str, pid: int, local_addr: int, remote: list[tuple[int, int]]) -> int:
    """Move bytes between our buffer at local_addr and the remote ranges, in order.

    Returns how many bytes moved; a short count means the range at that point failed.
    """
    done = 0
    for i in range(0, len(remote), _IOV_MAX):
        chunk = remote[i:i + _IOV_MAX]
        total = sum(length for _, length in chunk)
        riov = (_Iov * len(chunk))(*[_Iov(addr, length) for addr, length in chunk])
        liov = _Iov(local_addr + done, total)
        n = _syscall(ctypes.c_long(arch.NR[name]), ctypes.c_long(pid), ctypes.byref(liov),
                     ctypes.c_ulong(1), riov, ctypes.c_ulong(len(chunk)), ctypes.c_ulong(0))
        if n < 0:
            err = ctypes.get_errno()
            if done == 0 and i == 0 and err != errno.EFAULT:  # EFAULT: report a short count
                raise OSError(err, f"{name}({pid}): {os.strerror(err)}")
            return done
        done += n
        if n < total:
            return done
    return done


def vm_read(pid: int, local_addr: int, remote: list[tuple[int, int]]) -> int:
    return _vm_transfer("process_vm_readv", pid, local_addr, remote)


_MAX_TRANSFER = 1 << 30  # the kernel moves at most 2 GiB - 4 KiB per call; stay well below


def vm_write_pairs(pid: int, local_base: int, runs: list[tuple[int, int, int]]) -> int:
    """Write (remote address, length, offset from local_base) runs, many per syscall:
    process_vm_writev pairs its local and remote iovecs as two streams of equal length.
    Returns the bytes written; less than asked means the remote range failed there."""
    pieces = [(addr + k, min(_MAX_TRANSFER, length - k), off + k)
              for addr, length, off in runs for k in range(0, length, _MAX_TRANSFER)]
    done, i = 0, 0
    while i < len(pieces):
        chunk, total = [], 0
        while i + len(chunk) < len(pieces) and len(chunk) < _IOV_MAX \
                and total + pieces[i + len(chunk)][1] <= _MAX_TRANSFER:
            chunk.append(pieces[i + len(chunk)])
            total += chunk[-1][1]
        liov = (_Iov * len(chunk))(*[_Iov(local_base + off, n) for _, n, off in chunk])
        riov = (_Iov * len(chunk))(*[_Iov(addr, n) for addr, n, _ in chunk])
        n = _syscall(ctypes.c_long(arch.NR["process_vm_writev"]), ctypes.c_long(pid), liov,
                     ctypes.c_ulong(len(chunk)), riov, ctypes.c_ulong(len(chunk)), ctypes.c_ulong(0))
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EFAULT and done:  # EFAULT after progress: report how far it got
                return done
            raise OSError(err, f"process_vm_writev({pid}): {os.strerror(err)}")
        if n == 0:
            return done
        done += n
        while n:  # step over what was written, possibly into the middle of a piece
            addr, length, off = pieces[i]
            if n >= length:
                n -= length
                i += 1
            else:
                pieces[i] = (addr + n, length - n, off + n)
                n = 0
    return done


def get_robust_list(tid: int) -> tuple[int, int]:
    head = ctypes.c_uint64()
    length = ctypes.c_size_t()
    syscall("get_robust_list", tid, ctypes.addressof(head), ctypes.addressof(length))
    return head.value, length.value


def tee(fd_in: int, fd_out: int, length: int, flags: int) -> int:
    return syscall("tee", fd_in, fd_out, length, flags)


KCMP_FILE = 0
KCMP_VM = 1  # linux/kcmp.h: do two tasks share one address space?
KCMP_EPOLL_TFD = 7


def kcmp(pid1: int, pid2: int, kind: int, idx1: int, idx2: int) -> int:
    return syscall("kcmp", pid1, pid2, kind, idx1, idx2)


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """Open a file from its file handle (as inotify's fdinfo gives it); the caller needs
    CAP_DAC_READ_SEARCH."""
    buffer = ctypes.create_string_buffer(struct.pack("<Ii", len(handle), handle_type) + handle)
    return syscall("open_by_handle_at", mount_fd, ctypes.addressof(buffer), flags)


def inotify_init1(flags: int) -> int:
    return _check(_libc.inotify_init1(ctypes.c_int(flags)), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(_libc.inotify_add_watch(ctypes.c_int(fd), os.fsencode(path), ctypes.c_uint32(mask)),
                  f"inotify_add_watch {path}")


def inotify_rm_watch(fd: int, wd: int) -> None:
    _check(_libc.inotify_rm_watch(ctypes.c_int(fd), ctypes.c_int(wd)), "inotify_rm_watch")


AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400


def link_open_file(fd: int, path: str) -> None:
    """Give the file open as `fd` (made with O_TMPFILE, or unlinked) the name `path`.
    Python's os.link does not follow /proc/self/fd's link to the file itself."""
    _check(_libc.linkat(ctypes.c_int(AT_FDCWD), os.fsencode(f"/proc/self/fd/{fd}"),
                        ctypes.c_int(AT_FDCWD), os.fsencode(path), ctypes.c_int(AT_SYMLINK_FOLLOW)),
           f"link {path}")
