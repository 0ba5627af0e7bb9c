"""userfaultfd: made inside a target process (by an injected syscall, so it is bound to that
process's address space) and handed to us with pidfd_getfd; and the ioctls we use on it.
Pre-copy tracks writes with one (precopy.py); lazy restore serves missing pages with one
(lazy.py).

A live process must never keep one of ours, even if we are killed between making it and
closing it there (every later dump would refuse the process): pre-copy makes it in a
temporary thread of the process that has a private copy of its fd table, and whose only
code is an exit loop (open_in_own_thread). Released at any moment, that thread exits, and
its table and the userfaultfd go with it. POSIX locks belong to the table they were taken
in, so closing the copies there drops none of the process's."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import struct

from . import arch, faults, ptrace_ext, syscalls
from .errors import CkptError
from .inject import RemoteMemory, RemoteThread
from .libc import libc

log = logging.getLogger(__name__)

UFFD_API = 0xAA
UFFD_USER_MODE_ONLY = 1
# features
UFFD_FEATURE_EVENT_FORK, UFFD_FEATURE_EVENT_REMAP, UFFD_FEATURE_EVENT_REMOVE = 1 << 1, 1 << 2, 1 << 3
UFFD_FEATURE_EVENT_UNMAP, UFFD_FEATURE_THREAD_ID = 1 << 6, 1 << 8
UFFD_FEATURE_WP_UNPOPULATED, UFFD_FEATURE_WP_ASYNC = 1 << 13, 1 << 15
# ioctls
UFFDIO_API, UFFDIO_REGISTER, UFFDIO_UNREGISTER = 0xC018AA3F, 0xC020AA00, 0x8010AA01
UFFDIO_WAKE, UFFDIO_COPY, UFFDIO_ZEROPAGE = 0x8010AA02, 0xC028AA03, 0xC020AA04
UFFDIO_REGISTER_MODE_MISSING, UFFDIO_REGISTER_MODE_WP = 1, 2
# messages (struct uffd_msg, 32 bytes: event byte, 7 reserved, 24 bytes of arguments)
UFFD_EVENT_PAGEFAULT, UFFD_EVENT_FORK, UFFD_EVENT_REMAP = 0x12, 0x13, 0x14
UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP = 0x15, 0x16
MSG_SIZE = 32
# linux/sched.h: a thread of the process with everything shared but its fd table
_CLONE_VM, _CLONE_FS, _CLONE_SIGHAND, _CLONE_THREAD, _CLONE_SYSVSEM = \
    0x100, 0x200, 0x800, 0x10000, 0x40000
_OWN_TABLE_THREAD = _CLONE_VM | _CLONE_FS | _CLONE_SIGHAND | _CLONE_THREAD | _CLONE_SYSVSEM
_PIDFD_THREAD = os.O_EXCL  # linux/pidfd.h: a pidfd of that thread, not of its process (6.9)
_EXIT_LOOP_SYSCALL = 14  # offset in arch.FORK_OR_EXIT of the `syscall` that loops on exit


def open_in(thread: RemoteThread, flags: int) -> int:
    """A userfaultfd of `thread`'s process (stopped, seized, signals blocked): created by an
    injected userfaultfd(flags), duplicated into us, closed there. Raises OSError."""
    remote_fd = thread.call("userfaultfd", flags, check=False)
    if remote_fd < 0:
        raise OSError(-remote_fd, os.strerror(-remote_fd))
    try:
        pidfd = os.pidfd_open(thread.tid)
        try:
            return syscalls.pidfd_getfd(pidfd, remote_fd)
        finally:
            os.close(pidfd)
    finally:
        thread.call("close", remote_fd)


def open_in_own_thread(thread: RemoteThread, mem: RemoteMemory, flags: int) -> int:
    """Like open_in, but the userfaultfd never enters the process's fd table: it is made in a
    temporary thread cloned without CLONE_FILES, and ends with that thread. `thread` must be
    guarded (guard.arm), its signals blocked, and seized with O_TRACECLONE. If we die once the
    code page is mapped, only that page (never run by the program) stays. Raises OSError."""
    page = thread.call("mmap", 0, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC,
                       mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    ended = True
    try:
        mem.write(page, arch.FORK_OR_EXIT)  # (through /proc/PID/mem: read-only pages too)
        # The thread returns from clone into its guard frame; the new one, with the result
        # 0, loops on exit(0) from its first instruction on.
        guarded = thread.gadget
        thread.set_gadget(page)
        try:
            made = thread.call("clone", _OWN_TABLE_THREAD, 0, 0, 0, 0)
        finally:
            thread.set_gadget(guarded)
        if not thread.children:
            raise CkptError(f"tid {thread.tid}: injected clone returned {made} but no new thread")
        tid = thread.children.pop()  # (its tid in our pid namespace)
        ended = False
        try:
            stop = ptrace_ext.wait(tid)
            if not stop.stopped:
                raise CkptError(f"the thread cloned in tid {thread.tid}: {stop.describe()}")
            fd = _take(RemoteThread(tid, page + _EXIT_LOOP_SYSCALL), flags)
        finally:
            ended = _end(tid)
        return fd
    finally:
        if ended:  # (else it may still run that code: leave the page)
            thread.call("munmap", page, mmap.PAGESIZE, check=False)


def _take(own: RemoteThread, flags: int) -> int:
    """userfaultfd(flags) made in `own`, whose fd table is its own, duplicated into us."""
    remote_fd = own.call("userfaultfd", flags, check=False)
    if remote_fd < 0:
        raise OSError(-remote_fd, os.strerror(-remote_fd))
    faults.point("dump.precopy-userfaultfd", log)
    pidfd = os.pidfd_open(own.tid, _PIDFD_THREAD)
    try:
        return syscalls.pidfd_getfd(pidfd, remote_fd)
    finally:
        os.close(pidfd)


def _end(tid: int) -> bool:
    """Let the temporary thread run into its exit loop; True once it has exited."""
    try:
        ptrace_ext.cont(tid)
        while True:
            stop = ptrace_ext.wait(tid)
            if not stop.stopped:
                return True
            # (every signal is blocked in it: only a group stop or the like stops it)
            ptrace_ext.cont(tid)
    except (ptrace_ext.PtraceError, ChildProcessError) as err:
        log.debug("tid %d: %s", tid, err)
        return False


class _Copy(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_uint64), ("src", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("mode", ctypes.c_uint64), ("copy", ctypes.c_int64)]


class _Zero(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("zeropage", ctypes.c_int64)]


class _Range(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


def _ioctl(fd: int, request: int, arg: ctypes.Structure) -> int:
    """0, or the errno (ctypes drops the GIL in the call)."""
    if libc.ioctl(fd, request, ctypes.byref(arg)) == 0:
        return 0
    return ctypes.get_errno()


def api(fd: int, features: int) -> int:
    """UFFDIO_API asking for `features`; returns the features the kernel offers. OSError."""
    arg = bytearray(struct.pack("QQQ", UFFD_API, features, 0))
    fcntl.ioctl(fd, UFFDIO_API, arg)
    return struct.unpack("QQQ", arg)[1]


def register(fd: int, start: int, length: int, mode: int) -> None:
    fcntl.ioctl(fd, UFFDIO_REGISTER, bytearray(struct.pack("QQQQ", start, length, mode, 0)))


def unregister(fd: int, start: int, length: int) -> None:
    fcntl.ioctl(fd, UFFDIO_UNREGISTER, bytearray(struct.pack("QQ", start, length)))


def copy(fd: int, dst: int, src: int, length: int) -> tuple[int, int]:
    """UFFDIO_COPY (waking whoever waits on the range): (bytes copied, errno or 0). A partial
    copy reports its bytes with EAGAIN; copying again from there gives the reason."""
    arg = _Copy(dst, src, length, 0, 0)
    err = _ioctl(fd, UFFDIO_COPY, arg)
    return (arg.copy if arg.copy > 0 else 0), err


def zeropage(fd: int, start: int, length: int) -> int:
    """UFFDIO_ZEROPAGE (and wake); 0 or the errno."""
    arg = _Zero(start, length, 0, 0)
    err = _ioctl(fd, UFFDIO_ZEROPAGE, arg)
    if err == errno.EAGAIN and arg.zeropage == length:
        return 0
    return err


def wake(fd: int, start: int, length: int) -> int:
    return _ioctl(fd, UFFDIO_WAKE, _Range(start, length))
