"""The refusal promise, one case per refused kind: a real program holds the state
(programs/refused.c), `check` and `dump` name it in one line and exit 1, nothing is
written, and the program runs on unharmed (not stopped, not traced, still ticking) and
passes its own check afterwards."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import PROGRAMS, pid_alive, run_cli, wait_until

# mode of programs/refused.c -> words its one refusal line must hold
KINDS = {
    "io_uring": ["fd ", "io_uring"],
    "fanotify": ["fd ", "fanotify"],
    "userfaultfd": ["fd ", "userfaultfd"],
    "perf_event": ["fd ", "perf_event"],
    "raw_socket": ["fd ", "raw socket"],
    "seccomp_filter": ["seccomp", "SECCOMP_MODE_FILTER"],
    "seccomp_strict": ["seccomp", "SECCOMP_MODE_STRICT"],
    "seccomp_strict_thread": ["tid ", "seccomp", "SECCOMP_MODE_STRICT"],
    "mlock": ["mapping", "mlock"],
    "hugetlb": ["mapping", "hugetlb"],
    "mseal": ["mapping", "mseal"],
    "deleted_mapping": ["mapping of a deleted file", ".mapped"],
    "scm_rights": ["fd ", "SCM_RIGHTS"],
    "epoll_renumbered": ["fd ", "epoll", "closed or replaced"],
    "inotify_unread": ["fd ", "inotify", "not read"],
    "chroot": ["chroot"],
    "removed_cwd": ["cwd", "removed"],
    "lease": ["fd ", "file lease", "F_SETLEASE"],
    "vfork": ["vfork"],
}


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bin") / "refused"
    subprocess.run(["gcc", "-O2", "-g", "-Wall", "-pthread", "-I", str(PROGRAMS),
                    str(PROGRAMS / "refused.c"), "-o", str(out)], check=True, capture_output=True)
    return out


def _ticks(prog) -> int:
    return os.stat(f"{prog.status}.tick").st_size


def _tree(prog) -> list[int]:
    return [prog.pid] + [c.pid for c in psutil.Process(prog.pid).children(recursive=True)]


def _runs_on(prog, transient_children: bool = False) -> None:
    """Every thread of the tree is alive, neither traced nor stopped, and it keeps ticking.
    `transient_children`: the program's children come and go by themselves (one may end
    between the listing and the look)."""
    for pid in _tree(prog):
        if transient_children and pid != prog.pid and not pid_alive(pid):
            continue
        assert pid_alive(pid), f"pid {pid} died"
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            except FileNotFoundError:
                assert transient_children and pid != prog.pid, f"tid {tid} of {pid} ended"
                continue
            assert status["TracerPid"] == "0", f"tid {tid} was left traced"
            assert status["State"][0] not in "tT", f"tid {tid} was left stopped: {status['State']}"
    count = _ticks(prog)
    wait_until(lambda: _ticks(prog) > count + 3, what="the program to keep ticking")


def _verify(prog) -> None:
    """Ask the program to finish (a vfork child first: its parent waits for it)."""
    for pid in reversed(_tree(prog)):
        os.kill(pid, signal.SIGUSR1)
    wait_until(lambda: any(l.startswith(("PASS", "FAIL")) for l in prog.lines())
               or not pid_alive(prog.pid), what="the program's verdict")
    assert [l for l in prog.lines() if l.startswith(("PASS", "FAIL"))] == ["PASS"], prog.log()


@pytest.mark.parametrize("mode,words", [pytest.param(m, w, id=m) for m, w in
                                        KINDS.items()])
def test_refused_by_name_before_anything_is_written(mode, words, refused, programs, workdir):
    prog = programs(refused, mode)
    unavailable = [l for l in prog.lines() if l.startswith("unavailable ")]
    if unavailable:
        pytest.skip(f"kernel feature missing here: {unavailable[0][len('unavailable '):]}")
    before = sorted(os.listdir(workdir))

    checked = run_cli("check", prog.pid, check=False)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == 1, f"expected one blocker: {checked.stdout!r}"
    assert lines[0].startswith(f"pid {prog.pid} ") and all(w in lines[0] for w in words), lines[0]
    _runs_on(prog)

    image = workdir / "image"
    dumped = run_cli("dump", prog.pid, image, "--kill", check=False)
    assert dumped.returncode == 1, dumped.stdout + dumped.stderr
    errors = dumped.stderr.splitlines()
    assert len(errors) == 1 and "Traceback" not in dumped.stderr, dumped.stderr
    assert errors[0].startswith("jupyter-ckpt: cannot checkpoint: ") and lines[0] in errors[0], errors[0]
    assert not image.exists()
    assert sorted(os.listdir(workdir)) == before, "dump left something behind"
    _runs_on(prog)
    _verify(prog)


_CHECK_REPEATEDLY = """
import sys
from jupyter_ckpt.engine import CkptError, check
for _ in range(int(sys.argv[2])):
    try:
        blockers = check(int(sys.argv[1]))
    except CkptError as err:
        blockers = [err]
    print(" | ".join(map(str, blockers)) or "ok", flush=True)
"""


def test_a_program_that_vforks_all_the_time_is_never_frozen_forever(cc, programs):
    """Caught at any moment of its vforks, the tree is checked or refused in one line (a
    vfork in progress by name); never is the checkpointer left waiting for a stop that
    cannot come, nor does a child reaped meanwhile end it in a traceback."""
    prog = programs(cc("vfork_loop"))
    try:
        result = subprocess.run([sys.executable, "-c", _CHECK_REPEATEDLY, str(prog.pid), "200"],
                                capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"check hung after {len((hung.stdout or '').splitlines())} runs")
    assert result.returncode == 0, result.stderr  # (a traceback ends the loop early)
    outcomes = result.stdout.splitlines()
    assert len(outcomes) == 200 and "ok" in outcomes, outcomes
    _runs_on(prog, transient_children=True)
    _verify(prog)
