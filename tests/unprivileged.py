"""Running parts of a test as an unprivileged user (nobody), as a data scientist would run
Jupyter. The suite itself runs as root; `become_nobody()` turns a freshly forked child into
a plain user with no capabilities.

One accommodation for this test machine: the interpreter may live under a directory only root
may enter (pyenv in /root). The child gets a private mount namespace where that directory is
replaced by an empty world-readable one holding just the interpreter's tree, so nobody can
run the same Python. Nothing else about the user is changed.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable

NOBODY = 65534
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE, MS_MOVE = 0x1000, 0x4000, 0x40000, 0x2000
PR_SET_DUMPABLE = 4
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that others may not enter, if any."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def _open_up(real: Path) -> None:
    """Make `real` (the interpreter's tree) reachable by anyone, in our mount namespace only."""
    closed = _closed_ancestor(real)
    if closed is None:
        return
    keep = tempfile.mkdtemp()
    _mount(str(real), keep, None, MS_BIND | MS_REC)
    _mount("none", str(closed), "tmpfs", 0, "mode=755")
    real.mkdir(parents=True)
    _mount(keep, str(real), None, MS_MOVE)


def become_nobody() -> None:
    """In a forked child (still root): drop to uid/gid nobody with no capabilities."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _open_up(Path(sys.base_prefix).resolve())
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)  # clears every capability
    # changing credentials made us undumpable (our /proc files root's); a user's own
    # processes are dumpable
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def nobody_dir() -> Path:
    """A new directory nobody owns, outside pytest's root-only temporary tree."""
    path = Path(tempfile.mkdtemp(prefix="ckpt-nobody-"))
    os.chown(path, NOBODY, NOBODY)
    return path


def run_as_nobody(work: Callable[[], None], timeout: float = 300) -> None:
    """Run `work` in a forked child that became nobody; re-raise its failure here."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        outcome = b""
        try:
            become_nobody()
            work()
        except BaseException:
            outcome = traceback.format_exc().encode()
        finally:
            os.write(write_end, outcome or b"ok")
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        ready, _, _ = select.select([reader], [], [], timeout)
        text = reader.read().decode(errors="replace") if ready else "timed out"
    if not ready:
        os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    if text != "ok":
        raise AssertionError(f"as nobody:\n{text}")
