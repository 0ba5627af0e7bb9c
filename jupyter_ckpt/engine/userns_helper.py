"""The helper process of an unprivileged restore (started by userns.restore_in_helper).

It enters a new user and PID namespace, restores the tree there with restorer.restore_here,
reports the outcome as JSON lines on a pipe, and then waits for the tree's root as its
parent would. A module of its own so that userns.py need not import the restorer.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from .errors import CkptError
from .restorer import restore_here
from .userns import die_with, enter_user_and_pid_namespace, outlive_caller


def main(request_json: str, report_fd: int) -> int:
    """The helper: restore, report, then wait for the tree's root like its parent would."""
    request = json.loads(request_json)
    die_with(request["caller"])
    reports = os.fdopen(report_fd, "w", buffering=1)

    def send(**message: Any) -> None:
        reports.write(json.dumps(message) + "\n")

    try:
        enter_user_and_pid_namespace()
        die_with(request["caller"])  # again: new credentials disarmed it
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
    outlive_caller()  # from now on we are the restored tree's waiter, whatever the caller does
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
