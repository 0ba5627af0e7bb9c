"""Restoring into a new PID namespace, so an image can come back while its original still
runs (or after a reboot, when its PIDs belong to others). Inside, the processes see their
original PIDs; from outside they have new ones.

The namespace gets an init (its PID 1, reaping orphans) and a stand-in parent that carries
the original parent's PID, so a program that checks getppid() (ipykernel does) still sees
its parent; a root whose parent was init gets our init as its parent. The root's parent
reaps it and exits with its status; init leaves once the stand-in is gone and no orphan is
left, which ends the namespace.

Init also gives the namespace a /proc of its own, in a mount namespace that is otherwise a
copy of ours: with ours, /proc/<os.getpid()> inside would describe another process (psutil
and ipykernel's usage reports read it), and /proc/self would not be the process's own PID.
"""
from __future__ import annotations

import ctypes
import itertools
import logging
import os
import select
import signal
import time

from . import syscalls
from .errors import CkptError
from .libc import libc

log = logging.getLogger(__name__)
CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_SLAVE = 0x2, 0x4, 0x8, 0x4000, 0x80000
_WALL = 0x40000000  # waitpid: any child or tracee, thread or process
_REAP_TIMEOUT = 10.0


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise CkptError(f"{what}: {os.strerror(err)}")


class PidNamespace:
    """While entered, children we create are born in a new PID namespace (first one: init)."""

    def __init__(self, root: int, entered: bool = False) -> None:
        """`root`: the restored root's PID inside. `entered`: our next children already go to
        a new PID namespace (a user-namespace restore made it, see userns.py); we stay there,
        as we may not go back."""
        if entered:
            self._home = -1
        else:
            self._home = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            _call(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
        self._root = root
        self._go_r = self._go_w = -1
        self.init_pid = self.stand_in_pid = self.waiter_pid = 0
        self.proc_error = ""  # why the namespace has no /proc of its own ("" when it has)

    def fork_parent(self, ppid: int, tree_ids: set[int]) -> int:
        """Start the namespace: its init, then the root's parent with PID `ppid` inside,
        waiting in read() until `release`; then it reaps the root and exits with its status.
        Returns the parent's outer PID. For a root whose parent was init that is our init;
        otherwise a stand-in, and when `ppid` cannot be had (0: outside, or one of the tree's
        own ids) the lowest PID the tree does not need, since the kernel's next one might be
        the root's. Both inherit our fds of the moment, which the root's seed needs."""
        self._go_r, self._go_w = os.pipe()
        alive_r, alive_w = os.pipe()
        report_r, report_w = os.pipe()
        self.init_pid = os.fork()
        if self.init_pid == 0:
            os.close(report_r)
            _init(self._go_r, self._go_w, alive_r, alive_w, report_w, self._root)
        os.close(alive_r)
        os.close(report_w)
        try:
            self.proc_error = _read_all(report_r).decode()  # init has its /proc, or says why not
        finally:
            os.close(report_r)
        try:
            if ppid == 1:
                self.waiter_pid = self.init_pid
            else:
                if ppid < 1 or ppid in tree_ids:
                    ppid = next(pid for pid in itertools.count(2) if pid not in tree_ids)
                self.stand_in_pid = self.waiter_pid = self._fork_stand_in(ppid, alive_w)
        finally:
            os.close(alive_w)  # from now on only the stand-in (if any) keeps init waiting
        return self.waiter_pid

    def _fork_stand_in(self, ppid: int, alive_w: int) -> int:
        """The root's parent, with PID `ppid` inside, returned once it is in init's mount
        namespace (the root's seed will be forked from it)."""
        init_mounts = f"/proc/{self.init_pid}/ns/mnt"
        mounts = -1
        if os.readlink(init_mounts) != os.readlink("/proc/thread-self/ns/mnt"):
            mounts = os.open(init_mounts, os.O_RDONLY | os.O_CLOEXEC)
        joined_r, joined_w = os.pipe()
        try:
            child = syscalls.fork_with_pid(ppid)
            if child == 0:
                os.close(joined_r)
                _stand_in(self._go_r, self._go_w, alive_w, mounts, joined_w, self._root)
            os.close(joined_w)
            joined_w = -1
            self.proc_error = self.proc_error or _read_all(joined_r).decode()
            return child
        finally:
            for fd in (mounts, joined_r, joined_w):
                if fd >= 0:
                    os.close(fd)

    def leave(self) -> None:
        """Our next children are born in our own namespace again."""
        if self._home >= 0:
            _call(libc.setns(self._home, CLONE_NEWPID), "setns(CLONE_NEWPID)")
            os.close(self._home)
            self._home = -1

    def release(self) -> None:
        """Let the namespace's processes go on: the restore is done (or failed)."""
        for fd in (self._go_r, self._go_w):
            if fd >= 0:
                os.close(fd)
        self._go_r = self._go_w = -1

    def pids(self) -> list[int]:
        """Our processes in the namespace (its init last: killing it kills the rest)."""
        return [pid for pid in (self.stand_in_pid, self.init_pid) if pid]

    def destroy(self) -> None:
        """Kill everything in the namespace (killing its init does that)."""
        kill_and_reap(self.pids())
        self.release()


def kill_and_reap(pids: list[int], timeout: float = _REAP_TIMEOUT) -> None:
    """SIGKILL each process of `pids` and collect every thread of theirs that is our child or
    our tracee, without waiting longer than `timeout` in all: a traced leader is reported
    only after each of its traced threads was collected with __WALL, and a namespace's init
    only after its members are gone, so any one blocking wait could hang a failure path."""
    tids: list[int] = []
    for pid in pids:
        try:
            threads = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            threads = []
        tids += [t for t in threads if t != pid] + [pid]  # its leader last
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    waiting = list(dict.fromkeys(tids))
    while waiting:
        for tid in list(waiting):
            try:
                done = os.waitpid(tid, os.WNOHANG | _WALL)[0] == tid
            except ChildProcessError:
                done = True  # neither our child nor our tracee (any more)
            if done:
                waiting.remove(tid)
        if not waiting:
            return
        if time.monotonic() > deadline:
            log.warning("tids %s did not end within %.0f s of SIGKILL", waiting, timeout)
            return
        time.sleep(0.005)


def _exit_status(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    return data


def _own_proc() -> str:
    """Enter a mount namespace of our own, a copy of our parent's that does not pass its
    mounts back, and mount there a /proc of the PID namespace we are init of. Returns why
    that failed, or "". (No proc is mounted unless the copy is certain not to pass it on.)"""
    try:
        _call(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _call(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
        _call(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
              "mount -t proc proc /proc")
    except CkptError as err:
        return str(err)
    return ""


def _init(go_r: int, go_w: int, alive_r: int, alive_w: int, report_w: int, root: int) -> None:
    """PID 1 of the namespace: gives it its /proc, reaps orphans, and is the root's parent
    when the original's was init. Leaves once the stand-in (if any) is gone and no child is
    left, with the root's exit status if the root was its child. Never returns."""
    status = 0
    try:
        os.write(report_w, _own_proc().encode())
        os.close(report_w)
        os.close(go_w)
        os.close(alive_w)
        os.read(go_r, 1)  # the restore is done (or failed and we are being killed)
        os.closerange(0, alive_r)
        os.closerange(alive_r + 1, 1 << 20)
        stand_in_gone = False
        while True:
            try:
                while (reaped := os.waitpid(-1, os.WNOHANG))[0] > 0:
                    if reaped[0] == root:
                        status = _exit_status(reaped[1])
                has_children = True
            except ChildProcessError:
                has_children = False
            if stand_in_gone:
                if not has_children:
                    break
                time.sleep(0.2)
            else:
                ready, _, _ = select.select([alive_r], [], [], 0.2)
                stand_in_gone = bool(ready) and not os.read(alive_r, 1)
    finally:
        os._exit(status)


def _stand_in(go_r: int, go_w: int, alive_w: int, mounts: int, joined_w: int, root: int) -> None:
    """The restored root's parent inside the namespace, and in init's mount namespace (so
    the root, forked from it, is too); says on `joined_w` why it could not join (or
    nothing). Never returns."""
    status = 1
    try:
        if mounts >= 0:
            try:
                _call(libc.setns(mounts, CLONE_NEWNS), "setns(CLONE_NEWNS)")
            except CkptError as err:
                os.write(joined_w, str(err).encode())
            os.close(mounts)
        os.close(joined_w)
        os.close(go_w)
        os.read(go_r, 1)  # the restore is done (or failed and we are being killed)
        os.closerange(0, alive_w)
        os.closerange(alive_w + 1, 1 << 20)
        while True:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == root:
                status = _exit_status(wait_status)
    finally:
        os.close(alive_w)
        os._exit(status)
