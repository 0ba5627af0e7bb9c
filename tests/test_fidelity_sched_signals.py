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
