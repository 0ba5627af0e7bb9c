"""Fidelity of signal, timer and scheduling state in real C programs: each program checks
its own state after dump --kill + restore (protocol in programs/ckpt_test.h)."""
from __future__ import annotations

from conftest import checkpoint_cycle, manifest


def test_pending_siginfo_written_by_the_kernel(cc, programs, workdir):
    """tgkill'ed signals pending on a thread that is not the leader, kill'ed ones and a
    SIGCHLD pending on the process: only the thread (or leader) itself may queue such a
    siginfo again."""
    prog = programs(cc("pending_siginfo"))
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    sig = manifest(image)["processes"][0]["signals"]
    leader = str(prog.pid)
    assert [len(v) for t, v in sig["thread_pending"].items() if t != leader] == [3]
    assert len(sig["shared_pending"]) == 4


def test_timerfds_fired_and_armed(cc, programs, workdir):
    """Periodic timers that fired and were not read come back armed, with every expiration
    still to read; one-shot, absolute and CLOCK_REALTIME timers keep their clock and time."""
    prog = programs(cc("timerfds"))
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    timers = [f for f in manifest(image)["files"] if f["kind"] == "timerfd"]
    assert len(timers) == 6
    assert all(any(t["value"]) for t in timers if any(t["interval"])), timers
