"""Restoring without privilege. Choosing a process's PID (clone3 set_tid) takes
CAP_CHECKPOINT_RESTORE over the PID namespace it is born in. A user without it owns every
namespace it creates, so the tree comes back in a new user namespace (mapping only the
user's own uid and gid) with a new PID namespace below it, where the original PIDs are free.

A multi-threaded process (a Jupyter server) may not enter a new user namespace, and the
caller should not be moved into one anyway, so the restore runs in a helper: a fresh
interpreter that reports progress and the outcome over a pipe, then stays as the restored
tree's waiter (it exits with the root's exit status). The chain caller -> helper -> stand-in
parent -> root keeps the caller an ancestor of the tree, which is what Yama's
ptrace_scope=1 asks of whoever checkpoints it next.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import errors, procfs
from .context import Progress, no_progress
from .errors import CkptError
from .pidns import CLONE_NEWPID

CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
_CAP_SYS_ADMIN = 21
_CAP_CHECKPOINT_RESTORE = 40
_libc = ctypes.CDLL(None, use_errno=True)


def may_choose_pids() -> bool:
    """Whether we can give new processes the PIDs we want in our own PID namespace."""
    return procfs.has_capability(_CAP_CHECKPOINT_RESTORE) or procfs.has_capability(_CAP_SYS_ADMIN)


def enter_user_and_pid_namespace() -> None:
    """Move this (single-threaded) process into a new user namespace where it keeps its uid
    and gid, and make its next children the first processes of a new PID namespace."""
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWPID) != 0:
        err = ctypes.get_errno()
        raise CkptError(f"cannot create a user namespace to restore in: {os.strerror(err)} "
                        "(see /proc/sys/user/max_user_namespaces)")
    Path("/proc/self/setgroups").write_text("deny")  # required before an unprivileged gid_map
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def restore_in_helper(path: str, stdio: str, allow_foreign_owner: bool, rebind_listeners: bool,
                      progress: Progress = no_progress) -> Any:
    """restorer.restore() run by a helper in a new user and PID namespace; returns its
    Restored, whose waiter is the helper."""
    from .restorer import Restored

    request = {"path": os.path.abspath(path), "stdio": stdio, "allow_foreign_owner": allow_foreign_owner,
               "rebind_listeners": rebind_listeners, "caller": os.getpid()}
    report_r, report_w = os.pipe()
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    try:
        helper = subprocess.Popen(
            [sys.executable, "-m", "jupyter_ckpt.engine.userns", json.dumps(request), str(report_w)],
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
    return Restored(restored["pid"], restored["ns_pid"], helper.pid,
                    {int(k): v for k, v in restored["port_map"].items()},
                    warnings=restored["warnings"])


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


def _helper_main(request_json: str, report_fd: int) -> int:
    """The helper: restore, report, then wait for the tree's root like its parent would."""
    from .restorer import restore_here

    request = json.loads(request_json)
    _die_with(request["caller"])
    reports = os.fdopen(report_fd, "w", buffering=1)

    def send(**message: Any) -> None:
        reports.write(json.dumps(message) + "\n")

    try:
        enter_user_and_pid_namespace()
        _die_with(request["caller"])  # again: new credentials disarmed it
        restored = restore_here(request["path"], stdio=request["stdio"],
                                allow_foreign_owner=request["allow_foreign_owner"], pid_ns=True,
                                rebind_listeners=request["rebind_listeners"],
                                progress=lambda phase, done, total: send(progress=[phase, done, total]),
                                in_user_ns=True)
    except CkptError as err:
        send(error={"type": type(err).__name__, "message": str(err)})
        return 1
    except OSError as err:
        send(error={"type": "CkptError", "message": f"{err.strerror or err}"
                                                    f"{': ' + err.filename if err.filename else ''}"})
        return 1
    except Exception as err:  # a bug of ours: the caller still learns what it was
        send(error={"type": "CkptError", "message": f"restore helper: {type(err).__name__}: {err}"})
        return 1
    _outlive_caller()  # from now on we are the restored tree's waiter, whatever the caller does
    send(restored={"pid": restored.pid, "ns_pid": restored.ns_pid,
                   "port_map": {str(k): v for k, v in restored.port_map.items()},
                   "warnings": restored.warnings})
    reports.close()
    # The tree has its copies of our stdio; we let go of ours, or a caller reading the
    # restorer's output (`pid=$(jupyter-ckpt restore --detach ...)`) would wait for us.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return restored.wait()


def _die_with(caller: int) -> None:
    """Until the restore is done, end with our caller: killed mid-restore (it may hang), it
    must not leave us behind. (Our seeds die with us: they are traced with EXITKILL.) A
    caller that is gone before the death signal was armed is caught by the check after it."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != caller:
        os._exit(1)


def _outlive_caller() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1], int(sys.argv[2])))
