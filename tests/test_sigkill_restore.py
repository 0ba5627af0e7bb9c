"""`restore` killed at any moment leaves all of the tree or none of it: never some of its
processes, nor processes stuck stopped; and the next restore succeeds."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import psutil

import pytest

from conftest import CLI, manifest, pid_alive, wait_until

TRIALS = int(os.environ.get("JUPYTER_CKPT_SIGKILL_TRIALS", "12"))


def _states(pids: list[int]) -> dict[int, str]:
    """Each pid's state as psutil names it, "dying" when a SIGKILL is pending for it (the
    tracer that died sent it, the process has not run yet to die of it), or "-" when no
    process has the pid."""
    states = {}
    for pid in pids:
        try:
            states[pid] = psutil.Process(pid).status()
            with open(f"/proc/{pid}/status") as f:
                pending = [int(line.split()[1], 16) for line in f
                           if line.startswith(("SigPnd:", "ShdPnd:"))]
            if any(mask & (1 << (signal.SIGKILL - 1)) for mask in pending):
                states[pid] = "dying"
        except (psutil.NoSuchProcess, FileNotFoundError):
            states[pid] = "-"
    return states


def _kill_tree(pids: list[int]) -> None:
    """Kill a restored tree and reap it: the root is our child (we are its subreaper), its
    children become ours once it is gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) for pid in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"restored processes not reaped within 30 s: {_states(pids)}")
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.01)


def test_restore_killed_at_any_moment_leaves_all_or_nothing(cc, programs, workdir):
    prog = programs(cc("forked_tree"))
    tree = [prog.pid] + sorted(c.pid for c in psutil.Process(prog.pid).children()
                               if c.status() != psutil.STATUS_ZOMBIE)
    image = workdir / "image"
    prog.dump(image)
    # the tree's zombie child comes back too: reaped with the rest, its PID must be free
    everyone = tree + [z["pid"] for z in manifest(image)["zombies"]]

    started = time.monotonic()
    prog.restore(image)
    took = time.monotonic() - started
    _kill_tree(everyone)

    rng = random.Random(20261203)
    outcomes = []
    for trial in range(TRIALS):
        delay = rng.uniform(0, took * 1.2)
        restorer = subprocess.Popen(CLI + ["restore", str(image), "--detach", "--stdio", "null"],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        time.sleep(delay)
        restorer.kill()
        restorer.wait()

        def settled() -> bool:
            states = _states(tree)
            alive = [s for s in states.values() if s not in ("-", psutil.STATUS_ZOMBIE)]
            return not alive or (len(alive) == len(tree)
                                 and not {psutil.STATUS_TRACING_STOP, "dying"} & set(alive))
        wait_until(settled, 20, f"trial {trial} (killed after {delay:.3f} s) to settle: "
                                f"{_states(tree)}")
        whole = all(s not in ("-", psutil.STATUS_ZOMBIE, "dying") for s in _states(tree).values())
        outcomes.append(whole)
        if whole:
            prog.status.write_text("ready\n")
            try:
                prog.verify()
            except AssertionError as err:
                raise AssertionError(f"trial {trial}, restore killed after {delay:.3f} s: "
                                     f"{_states(everyone)}: {err}") from None
        _kill_tree(everyone)
        assert not any(pid_alive(pid) for pid in tree)
    # the image is untouched: a last restore goes through as always
    prog.status.write_text("ready\n")
    prog.restore(image)
    prog.verify()
    print(f"{outcomes.count(True)} of {len(outcomes)} killed restores had completed")
