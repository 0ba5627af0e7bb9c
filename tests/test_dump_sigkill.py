"""A dump killed (SIGKILL) at any moment never harms its target: whatever it was doing
(pre-copying with write tracking on, injecting a system call, holding the tree stopped),
the program runs on, and a later checkpoint and restore of it succeed."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from conftest import CLI, PROGRAMS, Program, pid_alive, run_cli, wait_until
from jupyter_ckpt.engine import faults

KILLS = int(os.environ.get("JUPYTER_CKPT_TEST_KILLS", 40))


def _states(pid: int) -> dict[str, tuple[str, str]]:
    """tid -> (State, TracerPid) of every thread."""
    states = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile (as pre-copy's temporary thread does)
        states[tid] = (status["State"], status["TracerPid"])
    return states


def _kill_while_frozen(dumper: subprocess.Popen, prog: Program, window: float,
                       rng: random.Random) -> None:
    """SIGKILL the dumper at a random moment of the freeze (every thread traced), where it
    injects system calls into them; or when it ends first."""
    deadline = time.monotonic() + 60
    while dumper.poll() is None and time.monotonic() < deadline:
        if all(tracer != "0" for _, tracer in _states(prog.pid).values()):
            time.sleep(rng.uniform(0, window))
            break
    dumper.send_signal(signal.SIGKILL)


def test_a_dump_killed_at_any_moment_leaves_its_target_running(cc, programs, workdir):
    prog = programs(cc("busy_threads"))
    started = time.monotonic()
    out = run_cli("dump", prog.pid, workdir / "whole")
    took = time.monotonic() - started
    frozen = float(out.stdout.split("frozen ")[1].split()[0]) / 1000
    rng = random.Random(os.getpid())
    for attempt in range(KILLS):
        dumper = subprocess.Popen(CLI + ["dump", str(prog.pid), str(workdir / f"killed-{attempt}")],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        if attempt % 2:
            _kill_while_frozen(dumper, prog, frozen, rng)
            when = "while the tree was frozen"
        else:  # anywhere in its run (its first 30 % is the interpreter starting)
            at = rng.uniform(0.3, 1.0) * took
            try:
                dumper.wait(timeout=at)
            except subprocess.TimeoutExpired:
                dumper.send_signal(signal.SIGKILL)
            when = f"at {at:.3f} s"
        dumper.wait()
        assert pid_alive(prog.pid), f"the program died after a dump killed {when}: {prog.log()}"
        harmed = {tid: state for tid, state in _states(prog.pid).items()
                  if state[0][0] in "tT" or state[1] != "0"}
        assert not harmed, f"after a dump killed {when}: {harmed}"
    image = workdir / "image"
    prog.dump(image)
    prog.restore(image)
    prog.verify()


def _userfaultfds(pid: int) -> list[str]:
    """task/fd entries of `pid` that are userfaultfds, in any of its threads' fd tables."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fds = os.listdir(f"/proc/{pid}/task/{tid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/task/{tid}/fd/{fd}") == "anon_inode:[userfaultfd]":
                    found.append(f"{tid}/fd/{fd}")
            except FileNotFoundError:
                continue
    return found


def test_a_dump_killed_while_its_userfaultfd_is_in_the_target_leaves_none(programs, workdir):
    """Pre-copy makes its userfaultfd inside the target: killed right after that, the dump
    leaves no userfaultfd there (it would refuse every later dump), and the target's file
    locks, which a copy of its fd table closing could drop, are all still held."""
    prog = programs(sys.executable, PROGRAMS / "py_file_locks.py")
    tids = set(os.listdir(f"/proc/{prog.pid}/task"))
    log_file = workdir / "killed.log"
    log_file.touch()
    dumper = subprocess.Popen(CLI + ["--log-file", str(log_file), "dump", str(prog.pid), str(workdir / "killed")],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, **{faults.ENV: "dump.precopy-userfaultfd:hang"}))
    try:
        wait_until(lambda: "hanging at dump.precopy-userfaultfd" in log_file.read_text()
                   or dumper.poll() is not None, timeout=60, what="the dump to reach its hang")
        assert dumper.poll() is None, f"the dump ended ({dumper.returncode}) instead of hanging"
    finally:
        dumper.send_signal(signal.SIGKILL)
        dumper.wait()
    wait_until(lambda: set(os.listdir(f"/proc/{prog.pid}/task")) <= tids
               and not any(state[1] != "0" for state in _states(prog.pid).values()),
               what="the program's threads to be its own and untraced again")
    assert pid_alive(prog.pid), prog.log()
    assert not _userfaultfds(prog.pid), f"left in the program: {_userfaultfds(prog.pid)}"
    image = workdir / "image"
    prog.dump(image)
    prog.restore(image)
    prog.verify()
