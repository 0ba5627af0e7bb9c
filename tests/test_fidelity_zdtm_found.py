"""States found broken by running CRIU's zdtm static tests against the engine: each must come
back faithfully or be refused by name at dump. Our own programs reproduce each one."""
from __future__ import annotations

import sys

from conftest import PROGRAMS, checkpoint_cycle, manifest


def test_file_locks_come_back_owned_by_their_process(programs, workdir):
    """POSIX locks of a process whose files a child shares, a flock() and an OFD lock: each
    is taken back by the process that held it, and survives the restore's own fd shuffling."""
    prog = programs(sys.executable, PROGRAMS / "py_file_locks.py")
    checkpoint_cycle(prog, workdir / "image")
    locks = [lock["kind"] for f in manifest(workdir / "image")["files"] for lock in f.get("locks", [])]
    assert sorted(locks) == ["flock", "ofd", "posix", "posix"]
