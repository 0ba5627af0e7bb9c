"""Restored processes are children of the restorer; once `restore --detach` exits they are
orphans. This host's init does not reap, so a test that kills a restored process and wants
its PID back makes itself the child subreaper and reaps them itself."""
from __future__ import annotations

import ctypes
import os

import psutil
import pytest

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _set_subreaper(on: bool) -> None:
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap(pid: int) -> None:
    """Collect a dead (or dying) child so its PID is free again."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


@pytest.fixture(autouse=True)
def adopt_orphans():
    _set_subreaper(True)
    yield
    _set_subreaper(False)
    for child in psutil.Process().children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.NoSuchProcess, ChildProcessError):
            pass
