"""Restoring into a new PID namespace, so an image can come back while its original still
runs (or after a reboot, when its PIDs belong to others). Inside, the processes see their
original PIDs; from outside they have new ones.

The namespace gets an init (its PID 1, reaping orphans) and a stand-in parent that carries
the original parent's PID, so a program that checks getppid() (ipykernel does) still sees
its parent. The stand-in reaps the restored root and exits with its status; init leaves
once the stand-in is gone and no orphan is left, which ends the namespace.
"""
from __future__ import annotations

import ctypes
import os
import select
import time

from . import syscalls
from .errors import CkptError

CLONE_NEWPID = 0x20000000
_libc = ctypes.CDLL(None, use_errno=True)


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise CkptError(f"{what}: {os.strerror(err)}")


class PidNamespace:
    """While entered, children we create are born in a new PID namespace (first one: init)."""

    def __init__(self, entered: bool = False) -> None:
        """`entered`: our next children already go to a new PID namespace (a user-namespace
        restore made it, see userns.py); we stay there, as we may not go back."""
        if entered:
            self._home = -1
        else:
            self._home = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            _call(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
        self._alive_r, self._alive_w = os.pipe()
        self._go_r, self._go_w = os.pipe()
        try:
            self.init_pid = os.fork()
        except OSError:
            self.leave()
            raise
        if self.init_pid == 0:
            _init(self._alive_r, self._alive_w)
        os.close(self._alive_r)
        self.stand_in_pid = 0

    def fork_stand_in(self, ppid: int, root: int) -> int:
        """A process with PID `ppid` (0: any) in the namespace, waiting in read() until
        `release`; then it reaps `root` and exits with its status. Returns its outer PID."""
        child = syscalls.fork_with_pid(ppid) if ppid > 1 else os.fork()
        if child == 0:
            _stand_in(self._go_r, self._go_w, self._alive_w, root)
        os.close(self._alive_w)  # from now on only the stand-in keeps init alive
        self.stand_in_pid = child
        return child

    def leave(self) -> None:
        """Our next children are born in our own namespace again."""
        if self._home >= 0:
            _call(_libc.setns(self._home, CLONE_NEWPID), "setns(CLONE_NEWPID)")
            os.close(self._home)
            self._home = -1

    def release(self) -> None:
        os.close(self._go_r)
        os.close(self._go_w)

    def destroy(self) -> None:
        """Kill everything in the namespace (killing its init does that)."""
        for pid in (self.stand_in_pid, self.init_pid):
            if pid:
                try:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass


def _init(alive_r: int, alive_w: int) -> None:
    """PID 1 of the namespace. Never returns."""
    try:
        os.closerange(0, alive_r)
        os.closerange(alive_r + 1, 1 << 20)
        stand_in_gone = False
        while True:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
                has_children = True
            except ChildProcessError:
                has_children = False
            if stand_in_gone:
                if not has_children:
                    os._exit(0)
                time.sleep(0.2)
            else:
                ready, _, _ = select.select([alive_r], [], [], 0.2)
                stand_in_gone = bool(ready) and not os.read(alive_r, 1)
    finally:
        os._exit(0)


def _stand_in(go_r: int, go_w: int, alive_w: int, root: int) -> None:
    """The restored root's parent inside the namespace. Never returns."""
    status = 1
    try:
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
                code = os.waitstatus_to_exitcode(wait_status)
                status = code if code >= 0 else 128 - code
    finally:
        os.close(alive_w)
        os._exit(status)
