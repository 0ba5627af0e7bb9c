"""Fidelity of signal, timer and scheduling state in real C programs: each program checks
its own state after dump --kill + restore (protocol in programs/ckpt_test.h)."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import CLI, checkpoint_cycle, manifest, pid_alive, run_cli
from jupyter_ckpt.engine import procfs

CAP_SYS_NICE = 23


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


def _rt_allowed() -> bool:
    """Real-time policies and negative nice values take CAP_SYS_NICE."""
    return procfs.has_capability(CAP_SYS_NICE)


def test_scheduling_per_thread(cc, programs, workdir):
    """SCHED_BATCH/IDLE/OTHER with their nice values, and (when allowed) SCHED_FIFO/RR with
    priorities and reset-on-fork, each on its own thread."""
    prog = programs(cc("sched_policies"), *(["rt"] if _rt_allowed() else []))
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    policies = {t["sched"]["policy"] for t in manifest(image)["processes"][0]["threads"]}
    assert {os.SCHED_BATCH, os.SCHED_IDLE, os.SCHED_OTHER} <= policies


def test_scheduling_the_restorer_may_not_grant_is_refused(cc, programs, workdir):
    """A restorer without CAP_SYS_NICE may not give a thread SCHED_FIFO (here one that took it
    and then gave up CAP_SYS_NICE): the restore says so by name and leaves nothing behind;
    one that may then restores it exactly."""
    if not _rt_allowed():
        pytest.skip("the test program needs CAP_SYS_NICE for its real-time threads")
    prog = programs(cc("sched_policies"), "fifo-main")
    image = workdir / "image"
    prog.dump(image, kill=True)
    refused = subprocess.run(["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice",
                              *CLI, "restore", str(image), "--detach"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0, refused.stdout
    assert f"tid {prog.pid}: scheduling SCHED_FIFO priority 3" in refused.stderr, refused.stderr
    assert not pid_alive(prog.pid), "the refused restore left its process behind"
    prog.restore(image)
    prog.verify()


def test_sched_deadline_is_refused_by_name(cc, programs, workdir):
    """SCHED_DEADLINE (runtime, deadline, period) is not restored: dump refuses it by name
    and the program runs on unharmed."""
    if not _rt_allowed():
        pytest.skip("SCHED_DEADLINE needs CAP_SYS_NICE")
    ms = 1_000_000
    prog = programs("chrt", "--deadline", "--sched-runtime", str(ms), "--sched-deadline", str(10 * ms),
                    "--sched-period", str(10 * ms), "0", cc("counter"))
    out = run_cli("dump", prog.pid, workdir / "image", check=False)
    assert out.returncode != 0
    assert f"pid {prog.pid} tid {prog.pid}: scheduling policy: policy 6" in out.stderr, out.stderr
    assert not (workdir / "image").exists()
    prog.verify()
