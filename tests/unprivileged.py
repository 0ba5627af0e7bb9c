"""Running parts of a test as an unprivileged user (nobody), as a data scientist would run
Jupyter. The suite itself runs as root; `become_nobody()` turns a freshly forked child into
a plain user with no capabilities.

One accommodation for the test machine: the interpreter, the virtualenv or this checkout may
live under a directory only root may enter (pyenv in /root). The child gets a private mount
namespace where such a directory is replaced by an empty enterable one holding just those
trees, so nobody can run the same Python on the same code. Nothing else about the user is
changed.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

from forked import CLONE_NEWNS, MS_PRIVATE, MS_REC, check, libc, mount, run_forked

NOBODY = 65534
MS_BIND, MS_MOVE = 0x1000, 0x2000
PR_SET_DUMPABLE = 4


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that others may not enter, if any."""
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


def _open_up(trees: list[Path]) -> None:
    """Make each tree reachable by anyone, in our mount namespace only: a directory above
    them that others may not enter is replaced by an empty enterable one holding just them."""
    outermost = [t for t in trees if not any(other in t.parents for other in trees)]
    by_closed: dict[Path, list[Path]] = {}
    for tree in dict.fromkeys(outermost):
        closed = _closed_ancestor(tree)
        if closed is not None:
            by_closed.setdefault(closed, []).append(tree)
    for closed, members in by_closed.items():
        kept = []
        for tree in members:
            keep = tempfile.mkdtemp()
            mount(str(tree), keep, None, MS_BIND | MS_REC)
            kept.append((keep, tree))
        mount("none", str(closed), "tmpfs", 0, "mode=755")
        for keep, tree in kept:
            for missing in [tree, *tree.parents][::-1]:
                if closed in missing.parents and not missing.exists():
                    missing.mkdir()
                    os.chmod(missing, 0o755)
            mount(keep, str(tree), None, MS_MOVE)


def become_nobody() -> None:
    """In a forked child (still root): drop to uid/gid nobody with no capabilities."""
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    repository = Path(__file__).resolve().parent.parent
    _open_up([Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), repository])
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)  # clears every capability
    # changing credentials made us undumpable (our /proc files root's); a user's own
    # processes are dumpable
    check(libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def nobody_dir() -> Path:
    """A new directory nobody owns, outside pytest's root-only temporary tree."""
    path = Path(tempfile.mkdtemp(prefix="ckpt-nobody-"))
    os.chown(path, NOBODY, NOBODY)
    return path


def run_as_nobody(work: Callable[[], None], timeout: float = 300) -> None:
    """Run `work` in a forked child that became nobody; re-raise its failure here."""
    run_forked(work, become_nobody, "as nobody", timeout)
