"""POSIX timers (timer_create) come back with their ids, clocks, notification, remaining
time, interval and overrun count; the program checks them itself (programs/posix_timers.c)."""
from __future__ import annotations

import os
import shutil
import signal

from conftest import Program, checkpoint_cycle, manifest, pid_alive, run_cli, wait_until
from unprivileged import nobody_dir, run_as_nobody


def test_posix_timers(cc, programs, workdir):
    prog = programs(cc("posix_timers"))
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    timers = manifest(image)["processes"][0]["posix_timers"]
    assert len(timers) == 8
    assert [t["id"] for t in timers] == sorted(t["id"] for t in timers)
    assert any(t["overrun"] > 0 for t in timers)  # the restore had an overrun count to bring back


def test_posix_timers_of_a_copy_in_its_own_pid_namespace(cc, programs, workdir):
    """The original runs on unharmed after its timers are read; a copy restored beside it (in
    a PID namespace of its own, where the thread a timer signals has another id for us) is
    checkpointed and restored in turn, and verifies itself, as does the original."""
    prog = programs(cc("posix_timers"))
    run_cli("dump", prog.pid, workdir / "image")
    copy = int(run_cli("restore", workdir / "image", "--detach").stdout.split()[-1])
    assert copy != prog.pid
    run_cli("dump", copy, workdir / "again", "--kill")
    wait_until(lambda: not pid_alive(copy), what="the copy to be gone")
    again = int(run_cli("restore", workdir / "again", "--detach").stdout.split()[-1])
    os.kill(again, signal.SIGUSR1)
    wait_until(lambda: not pid_alive(again), what="the second copy to verify itself")
    assert prog.lines()[1:] == ["PASS"], prog.lines()
    prog.status.write_text("")  # the original's own verdict comes next
    prog.verify()


def test_posix_timers_restored_by_a_user(cc):
    """Without CAP_CHECKPOINT_RESTORE the copy comes back in a user namespace of its own,
    where it may still choose its timers' ids."""
    home = nobody_dir()
    shutil.copy(cc("posix_timers"), home / "posix_timers")

    def work() -> None:
        from jupyter_ckpt import engine

        prog = Program([str(home / "posix_timers")], home).start()
        engine.dump(prog.pid, str(home / "image"), kill=True)
        prog.popen.wait(timeout=30)
        prog.popen = None
        prog.pid = engine.restore(str(home / "image")).pid
        prog.verify()

    try:
        run_as_nobody(work)
    finally:
        shutil.rmtree(home, ignore_errors=True)
