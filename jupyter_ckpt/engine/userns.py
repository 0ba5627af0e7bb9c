"""Restoring without privilege. Choosing a process's PID (clone3 set_tid) takes
CAP_CHECKPOINT_RESTORE over the PID namespace it is born in. A user without it owns every
namespace it creates, so the tree comes back in a new user namespace (mapping only the
user's own uid and gid) with a new PID namespace below it, where the original PIDs are free.

A multi-threaded process (a Jupyter server) may not enter a new user namespace, and the
caller should not be moved into one anyway, so the restore runs in a helper
(userns_helper.py): a fresh interpreter that reports progress and the outcome over a pipe,
then stays as the restored tree's waiter (it exits with the root's exit status). The chain
caller -> helper -> stand-in parent -> root keeps the caller an ancestor of the tree, which
is what Yama's ptrace_scope=1 asks of whoever checkpoints it next.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from typing import Any

from . import errors, procfs
from .context import Progress, no_progress
from .errors import CkptError
from .libc import libc
from .pidns import CLONE_NEWPID

CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
_CAP_SYS_ADMIN = 21
_CAP_CHECKPOINT_RESTORE = 40


def may_choose_pids() -> bool:
    """Whether we can give new processes the PIDs we want in our own PID namespace."""
    return procfs.has_capability(_CAP_CHECKPOINT_RESTORE) or procfs.has_capability(_CAP_SYS_ADMIN)


def enter_user_and_pid_namespace() -> None:
    """Move this (single-threaded) process into a new user namespace where it keeps its uid
    and gid, and make its next children the first processes of a new PID namespace."""
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        raise CkptError(f"cannot create a user namespace to restore in: {os.strerror(err)} "
                        "(see /proc/sys/user/max_user_namespaces)")
    for name, text in (("setgroups", "deny"),  # required before an unprivileged gid_map
                       ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def restore_in_helper(path: str, stdio: str, allow_foreign_owner: bool, rebind_listeners: bool,
                      progress: Progress = no_progress) -> dict[str, Any]:
    """restorer.restore() run by a helper (userns_helper.py) in a new user and PID namespace;
    returns the fields of its Restored, whose waiter is the helper."""
    request = {"path": os.path.abspath(path), "stdio": stdio, "allow_foreign_owner": allow_foreign_owner,
               "rebind_listeners": rebind_listeners, "caller": os.getpid()}
    report_r, report_w = os.pipe()
    # (os.path, not pathlib: every restore imports this module, and pathlib costs it 3 ms)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    try:
        helper = subprocess.Popen(
            [sys.executable, "-m", "jupyter_ckpt.engine.userns_helper", json.dumps(request), str(report_w)],
            pass_fds=(report_w,), env=env, stdin=None, stdout=None, stderr=None)
    finally:
        os.close(report_w)
    outcome: dict[str, Any] = {}
    with os.fdopen(report_r) as reports:
        for line in reports:
            message = json.loads(line)
            if "progress" in message:
                progress(*message["progress"])
            else:
                outcome = message
                break
    if "restored" not in outcome:
        if helper.poll() is None:
            helper.kill()
        helper.wait()
        raise _error_from(outcome.get("error"), helper.returncode)
    restored = outcome["restored"]
    return {"pid": restored["pid"], "ns_pid": restored["ns_pid"], "waiter": helper.pid,
            "port_map": {int(k): v for k, v in restored["port_map"].items()},
            "warnings": restored["warnings"]}


def _error_from(report: dict[str, str] | None, exit_code: int | None) -> CkptError:
    if not report:
        how = (f"killed by signal {-exit_code}" if exit_code is not None and exit_code < 0
               else f"exit status {exit_code}")
        return CkptError(f"the restore helper ended without an answer ({how})")
    kind = getattr(errors, report["type"], None)
    if isinstance(kind, type) and issubclass(kind, CkptError) and kind in (
            CkptError, errors.ImageError, errors.RestoreConflict):
        return kind(report["message"])
    return CkptError(report["message"])


def die_with(caller: int) -> None:
    """Until the restore is done, end with our caller: killed mid-restore (it may hang), it
    must not leave us behind. (Our seeds die with us: they are traced with EXITKILL.) A
    caller that is gone before the death signal was armed is caught by the check after it."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != caller:
        os._exit(1)


def outlive_caller() -> None:
    libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)

