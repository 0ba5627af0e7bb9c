"""Fault injection (JUPYTER_CKPT_FAULT, engine/faults.py): a dump or restore made to fail at
each of its named points rolls back. After a failed dump the original runs on unharmed (no
thread left stopped or traced, still making progress) and no image, finished or partial, is
left; after a failed restore no process is left and the next restore succeeds."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import CLI, Program, pid_alive, run_cli, wait_until
from reaping import _set_subreaper
from jupyter_ckpt.engine import faults
from jupyter_ckpt.engine.errors import CkptError

DEADLINE = 60.0  # a failure path that takes longer than this hangs


def _run(*args: str, env: dict[str, str] | None = None, preexec_fn=None) -> subprocess.CompletedProcess:
    """`jupyter-ckpt ARGS`, expected to fail; fails the test if it does not end in time."""
    argv = CLI + [str(a) for a in args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True,
                                env=dict(os.environ, **(env or {})), preexec_fn=preexec_fn)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"jupyter-ckpt {' '.join(map(str, args))} hung (still running after {DEADLINE} s)")
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read())


def _assert_one_line_failure(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jupyter-ckpt: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _assert_unharmed(pid: int) -> None:
    """Every thread runs (or sleeps) on its own: none is stopped or traced."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        assert status["State"][0] not in "tT", f"tid {tid} is {status['State']}"
        assert status["TracerPid"] == "0", f"tid {tid} is still traced by {status['TracerPid']}"


def _assert_no_image(image: Path) -> None:
    assert not image.exists(), f"{image} was left behind"
    partial = [p.name for p in image.parent.iterdir() if p.name.startswith(f".{image.name}.")]
    assert not partial, f"partial images left: {partial}"


def _new_processes(before: set[int]) -> list[psutil.Process]:
    """Our descendants that are not from before and still alive; our dead ones are reaped
    (as subreaper we inherit the orphans of a killed tree)."""
    alive = []
    for proc in psutil.Process().children(recursive=True):
        if proc.pid in before:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(proc.pid, os.WNOHANG)
            else:
                alive.append(proc)
        except (psutil.NoSuchProcess, ChildProcessError):
            pass
    return alive


def _reap_zombies() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _assert_nothing_left(before: set[int], pid: int) -> None:
    wait_until(lambda: not _new_processes(before) and not pid_alive(pid), timeout=10,
               what=f"no process left (have {_new_processes(before)})")


def test_every_fault_point_is_named_once():
    assert len(set(faults.POINTS)) == len(faults.POINTS)
    assert all(p.startswith("dump.") for p in faults.DUMP_POINTS)
    assert all(p.startswith("restore.") for p in faults.RESTORE_POINTS)


@pytest.mark.parametrize("point", faults.DUMP_POINTS)
@pytest.mark.parametrize("kill", [False, True], ids=["run-on", "kill"])
def test_a_dump_that_fails_at_any_point_leaves_its_target_unharmed(cc, programs, workdir, point,
                                                                    kill, monkeypatch):
    from jupyter_ckpt import engine

    prog = programs(cc("busy_threads"))
    image = workdir / "image"
    result = _run("dump", prog.pid, image, *(["--kill"] if kill else []),
                  env={faults.ENV: point})
    _assert_one_line_failure(result, point)
    _assert_no_image(image)
    _assert_unharmed(prog.pid)

    # the same in this process, so that the would-be tracer is still alive when we look
    monkeypatch.setenv(faults.ENV, point)
    with pytest.raises(CkptError, match=point):
        engine.dump(prog.pid, str(image), kill=kill)
    _assert_no_image(image)
    _assert_unharmed(prog.pid)
    prog.verify()


def test_a_tree_whose_precopy_fails_in_one_thread_is_left_unharmed(cc, programs, workdir, monkeypatch):
    """The processes of a tree are pre-copied at once, each in a thread of its own: when
    one fails, the others stop and every process runs on, untracked."""
    from jupyter_ckpt import engine

    prog = programs(cc("forked_tree"))
    tree = [prog.pid] + [p.pid for p in psutil.Process(prog.pid).children(recursive=True)
                         if p.status() != psutil.STATUS_ZOMBIE]
    assert len(tree) > 2, "the subject should be a tree"
    image = workdir / "image"
    point = "dump.during-precopy"
    result = _run("dump", prog.pid, image, env={faults.ENV: point})
    _assert_one_line_failure(result, "fault injected at", point)
    _assert_no_image(image)
    for pid in tree:
        _assert_unharmed(pid)

    monkeypatch.setenv(faults.ENV, point)
    with pytest.raises(CkptError, match=f"fault injected at {point}"):
        engine.dump(prog.pid, str(image))
    _assert_no_image(image)
    for pid in tree:
        _assert_unharmed(pid)
    prog.verify()


@pytest.mark.parametrize("pid_ns", [False, True], ids=["same-pids", "pid-ns"])
def test_a_restore_that_fails_at_any_point_leaves_nothing(cc, programs, workdir, pid_ns):
    prog = programs(cc("busy_threads"))
    image = workdir / "image"
    prog.dump(image)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    extra = ["--pid-ns"] if pid_ns else []
    for point in faults.RESTORE_POINTS:
        result = _run("restore", image, "--detach", *extra, env={faults.ENV: point})
        _assert_one_line_failure(result, point)
        _assert_nothing_left(before, prog.pid)
    out = run_cli("restore", image, "--detach", *extra)
    pid = int(out.stdout.split()[-1])
    if not pid_ns:
        assert pid == prog.pid
    prog.pid = pid
    prog.verify()


def test_an_unknown_fault_point_is_refused_by_name(cc, programs, workdir):
    prog = programs(cc("counter"))
    result = _run("dump", prog.pid, workdir / "image", env={faults.ENV: "dump.nowhere"})
    _assert_one_line_failure(result, "dump.nowhere", faults.ENV)
    _assert_no_image(workdir / "image")
    prog.verify()


def test_a_restore_that_fails_after_its_threads_exist_ends_without_hanging(cc, programs, workdir):
    """A real failure late in a restore: the restorer may not raise RLIMIT_CPU's hard limit
    (no CAP_SYS_RESOURCE) back to the program's, once the program's threads exist. The
    threads, traced by the restorer, are killed and collected; nothing waits forever."""
    prog = programs(cc("busy_threads"))
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    image = workdir / "image"
    prog.dump(image)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    lower = 100_000 if hard == resource.RLIM_INFINITY else hard - 1
    started = time.monotonic()
    result = _run("restore", image, "--detach",
                  preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (lower, lower)))
    _assert_one_line_failure(result)
    assert time.monotonic() - started < DEADLINE
    _assert_nothing_left(before, prog.pid)
    prog.pid = int(run_cli("restore", image, "--detach").stdout.split()[-1])
    prog.verify()


def test_an_unprivileged_restore_killed_midway_leaves_no_helper(cc, workdir):
    """Without privilege a restore runs in a helper (engine/userns.py). Killing the `restore`
    command while its helper hangs ends the helper and everything it started."""
    from unprivileged import nobody_dir, run_as_nobody

    home = nobody_dir()
    shutil.copy(cc("busy_threads"), home / "busy_threads")

    def work() -> None:
        _set_subreaper(True)  # the orphans of the killed command are ours to reap
        prog = Program([str(home / "busy_threads")], home).start()
        prog.dump(home / "image")
        restore = subprocess.Popen(CLI + ["restore", str(home / "image"), "--detach"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, **{faults.ENV: "restore.after-threads:hang"}))

        def hanging() -> list[psutil.Process]:
            """The helper and what it made, once a seed has its threads."""
            procs = psutil.Process(restore.pid).children(recursive=True)
            seeds = [p for p in procs if p.status() == psutil.STATUS_TRACING_STOP]
            return procs if seeds and seeds[0].num_threads() > 1 else []

        wait_until(lambda: hanging() or restore.poll() is not None, timeout=DEADLINE,
                   what="the restore to reach its hang")
        started = hanging()
        assert started, f"the restore ended ({restore.returncode}) instead of hanging"
        restore.kill()
        restore.wait()

        def all_ended() -> bool:
            _reap_zombies()  # (a PID namespace's init ends once its members are reaped)
            return not any(pid_alive(p.pid) for p in started)

        wait_until(all_ended, timeout=10, what="the helper and what it started to end")

    try:
        run_as_nobody(work)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_an_unexpected_failure_names_the_process_and_the_step(cc, programs, workdir):
    """A system call refused half-way through a restore is reported with the process, the
    thread and the step it happened in, not only as the kernel's errno text."""
    import json

    from image_mutations import reseal

    prog = programs(cc("counter"))
    image = workdir / "image"
    prog.dump(image)
    manifest = json.loads((image / "manifest.json").read_text())
    leader = manifest["processes"][0]["threads"][0]
    leader["sigaltstack"] = [4096, 0, 1]  # a stack smaller than MINSIGSTKSZ: ENOMEM
    reseal(image, manifest)
    out = run_cli("restore", image, "--detach", check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert f"pid {prog.pid}: restoring the thread's state" in lines[0], lines[0]
    assert not pid_alive(prog.pid)
