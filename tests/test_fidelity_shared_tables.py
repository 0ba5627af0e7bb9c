"""States found with CRIU's zdtm suite that a checkpoint cannot bring back as they are
(programs/shared_tables.c): processes sharing a file descriptor table or fs info
(fdt_shared), a stopped process (stopped), an mlocked page in a process that dropped root
(mlock_setuid). `check` and `dump` name each in one line and exit 1, nothing is written, and
the original is left as it was (running, or still stopped, never traced) and passes its own
check afterwards."""
from __future__ import annotations

import os
import signal

import pytest

from conftest import checkpoint_cycle, run_cli, wait_until
from test_refusals import _ticks, _tree, _verify  # the same ticking-program protocol

# mode of programs/shared_tables.c -> words its one refusal line must hold
KINDS = {
    "files": ["process: shared file descriptor table", "CLONE_FILES"],
    "fs": ["process: shared fs info", "CLONE_FS"],
    "sighand": ["process: shared address space", "CLONE_VM"],  # CLONE_SIGHAND needs CLONE_VM
    "mlock_setuid": ["mapping", "mlock"],
}


def _states(prog) -> dict[int, tuple[str, str]]:
    """(State, TracerPid) of every thread of the tree."""
    states = {}
    for pid in _tree(prog):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            states[int(tid)] = (status["State"][0], status["TracerPid"])
    return states


def _refused_in_one_line(prog, words: list[str], workdir) -> None:
    before = sorted(os.listdir(workdir))
    checked = run_cli("check", prog.pid, check=False)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == 1, f"expected one blocker: {checked.stdout!r}"
    assert lines[0].startswith("pid ") and all(w in lines[0] for w in words), lines[0]

    image = workdir / "image"
    dumped = run_cli("dump", prog.pid, image, "--kill", check=False)
    assert dumped.returncode == 1, dumped.stdout + dumped.stderr
    errors = dumped.stderr.splitlines()
    assert len(errors) == 1 and "Traceback" not in dumped.stderr, dumped.stderr
    assert errors[0] == f"jupyter-ckpt: cannot checkpoint: {lines[0]}", errors[0]
    assert not image.exists()
    assert sorted(os.listdir(workdir)) == before, "dump left something behind"


@pytest.mark.parametrize("mode,words", [pytest.param(m, w, id=m) for m, w in KINDS.items()])
def test_refused_by_name_and_left_running(mode, words, cc, programs, workdir):
    prog = programs(cc("shared_tables"), mode)
    _refused_in_one_line(prog, words, workdir)
    assert all(state not in "tT" and tracer == "0" for state, tracer in _states(prog).values()), \
        _states(prog)
    count = _ticks(prog)
    wait_until(lambda: _ticks(prog) > count + 3, what="the program to keep ticking")
    _verify(prog)


def test_a_stopped_process_is_refused_by_name_and_left_stopped(cc, programs, workdir):
    prog = programs(cc("shared_tables"), "plain")
    os.kill(prog.pid, signal.SIGSTOP)
    wait_until(lambda: _states(prog)[prog.pid][0] == "T", what="the program to stop")
    _refused_in_one_line(prog, [f"pid {prog.pid} process: stopped", "SIGSTOP"], workdir)
    assert _states(prog) == {prog.pid: ("T", "0")}, "not left stopped and untraced"
    count = _ticks(prog)
    os.kill(prog.pid, signal.SIGCONT)
    wait_until(lambda: _ticks(prog) > count + 3, what="the program to tick once continued")
    _verify(prog)


def test_a_process_that_dropped_root_is_restored_as_itself(cc, programs, workdir):
    """Its rlimits are read without prlimit(), which refuses another user's process to us
    (no CAP_SYS_RESOURCE); it comes back with its own ids and passes its check."""
    prog = programs(cc("shared_tables"), "setuid")
    checkpoint_cycle(prog, workdir / "image")
