"""restore --lazy: the process runs before its large anonymous memory is in; pages come on
demand (faults, also those the kernel takes for a read()) and in the background, also in
children forked meanwhile; MADV_DONTNEED and mremap of memory not yet in behave as they
would have. The program checks itself the moment it runs again (programs/lazy_memory.c); the
background pass is held back meanwhile (JUPYTER_CKPT_LAZY_PAUSE), so that the checks find
the memory still missing."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import CLI, PROGRAMS, Program, manifest, pid_alive, run_cli, wait_until
from unprivileged import run_as_nobody

from jupyter_ckpt.engine import lazy


def verdict(prog: Program, timeout: float = 60) -> list[str]:
    wait_until(lambda: any(l.startswith(("PASS", "FAIL")) for l in prog.lines())
               or not pid_alive(prog.pid), timeout, "the program's verdict")
    return [l for l in prog.lines() if l.startswith(("PASS", "FAIL"))]


def go(prog: Program) -> None:
    Path(f"{prog.status}.go").touch()


@pytest.fixture
def paused(monkeypatch):
    monkeypatch.setenv(lazy.PAUSE_ENV, "3")


@pytest.mark.parametrize("detach", [True, False], ids=["detach", "wait"])
def test_lazy_restore_serves_faults_forks_dontneed_mremap_read(cc, programs, workdir, monkeypatch, detach):
    prog = programs(cc("lazy_memory"))
    image = workdir / "image"
    prog.dump(image, kill=True)
    go(prog)
    checked = workdir / "checked"  # no background pass until the program has checked itself
    monkeypatch.setenv(lazy.PAUSE_ENV, str(checked))
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        # (detached, the CLI still serves the pages; waiting, it waits for the root first)
        cli = subprocess.Popen(CLI + ["restore", str(image), "--lazy"] + (["--detach"] if detach else []),
                               stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, text=True)
        try:
            wait_until(lambda: any(l.startswith(("PASS", "FAIL")) for l in prog.lines())
                       or cli.poll() is not None, 60, "the restored program's verdict")
            assert [l for l in prog.lines() if l.startswith(("PASS", "FAIL"))] == ["PASS"], prog.lines()
            checked.touch()
            assert cli.wait(timeout=120) == 0
        finally:
            cli.kill()
            cli.wait()
        stdout.seek(0), stderr.seek(0)
        out = subprocess.CompletedProcess(cli.args, cli.returncode, stdout.read(), stderr.read())
    if detach:
        assert int(out.stdout.split()[-1]) == prog.pid
    m = re.search(r"lazy restore: all memory in \((\d+) pages on demand, (\d+) bytes in the "
                  r"background, (\d+) zero pages, (\d+) address spaces\)", out.stderr)
    assert m, out.stderr
    on_demand, background, zero, spaces = map(int, m.groups())
    assert on_demand > 0 and zero > 0, out.stderr  # the checks ran while memory was missing
    assert spaces >= 2, out.stderr  # the forked children were served too
    saved = sum(run[1] for proc in manifest(image)["processes"]
                for vma in proc["memory"]["vmas"] for run in vma["pages"])
    assert background < 2 * saved


def test_lazy_restore_without_pause_and_api_wait_pages(cc, programs, workdir):
    """In-process API: the tree runs, Restored.wait_pages() returns when all is in."""
    from jupyter_ckpt import engine

    prog = programs(cc("lazy_memory"))
    image = workdir / "image"
    prog.dump(image, kill=True)
    go(prog)
    restored = engine.restore(str(image), lazy=True)
    assert restored.pid == prog.pid
    stats = restored.wait_pages(timeout=120)
    assert stats is not None and stats.processes >= 1
    assert restored.wait() == 0
    assert verdict(prog) == ["PASS"], prog.lines()
    # an eager restore has nothing to wait for
    assert engine.Restored(1, 1, 1).wait_pages() is None


def test_page_server_failure_kills_the_process(cc, programs, workdir, monkeypatch):
    """When a page cannot be served (here: the image's blob was cut short meanwhile), the
    process is killed and the failure reported, never left running with wrong memory."""
    monkeypatch.setenv(lazy.PAUSE_ENV, "600")  # only faults are served
    prog = programs(cc("lazy_memory"))
    image = workdir / "image"
    prog.dump(image, kill=True)
    with tempfile.TemporaryFile("w+") as err:
        cli = subprocess.Popen(CLI + ["restore", str(image), "--detach", "--lazy"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            # restored: its own name again (a seed has the restorer's) and no longer traced
            wait_until(lambda: _comm(prog.pid) == "lazy_memory" and _tracer(prog.pid) == 0, 60,
                       "the restore")
            for blob in image.glob("pages-*.bin"):
                os.truncate(blob, 0)
            go(prog)
            assert cli.wait(timeout=60) == 1
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        err.seek(0)
        message = err.read()
    assert "lazy restore: serving memory failed, killed pid(s)" in message, message
    assert str(prog.pid) in message
    wait_until(lambda: not pid_alive(prog.pid), 30, "the process to be killed")
    assert not any(l.startswith("PASS") for l in prog.lines()), prog.lines()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def _tracer(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("TracerPid:"))
    except FileNotFoundError:
        return -1


def test_lazy_needs_privilege(tmp_path):
    def work() -> None:
        from jupyter_ckpt import engine

        with pytest.raises(engine.RestoreConflict, match="lazy restore needs CAP_SYS_PTRACE"):
            engine.restore(str(tmp_path / "no-image"), lazy=True)

    run_as_nobody(work)


def test_killed_page_server_takes_the_process_along(cc, programs, workdir, monkeypatch):
    """SIGKILL to the serving CLI: its watchdog still holds the userfaultfd (so no fault reads
    zeros meanwhile) and kills the restored processes."""
    monkeypatch.setenv(lazy.PAUSE_ENV, "600")
    prog = programs(cc("lazy_memory"))
    image = workdir / "image"
    prog.dump(image, kill=True)
    cli = subprocess.Popen(CLI + ["restore", str(image), "--detach", "--lazy"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: pid_alive(prog.pid) and _tracer(prog.pid) == 0, 60, "the restore")
        go(prog)  # it faults now, and waits for pages nobody serves any more
        cli.kill()
    finally:
        cli.wait()
    wait_until(lambda: not pid_alive(prog.pid), 30, "the watchdog to kill the process")
    assert not any(l.startswith(("PASS", "FAIL")) for l in prog.lines()), prog.lines()


def test_python_program_forking_while_memory_comes_in(programs, workdir, paused):
    prog = programs(sys.executable, PROGRAMS / "py_lazy.py", timeout=120)
    image = workdir / "image"
    prog.dump(image, kill=True)
    go(prog)
    out = run_cli("restore", image, "--detach", "--lazy")
    assert verdict(prog, timeout=120) == ["PASS"], (prog.lines(), prog.log())
    assert "pages on demand" in out.stderr


def test_lazy_restore_of_an_incremental_image_in_a_new_pid_namespace(cc, programs, workdir, paused):
    """Pages served from a base image's blob; the tree in a new PID namespace (the served
    processes have other PIDs here than they see)."""
    prog = programs(cc("lazy_memory"))
    run_cli("dump", prog.pid, workdir / "base")
    image = workdir / "image"
    run_cli("dump", prog.pid, image, "--parent", workdir / "base", "--kill")
    prog.reap()
    assert any(len(run) == 4 for proc in manifest(image)["processes"]
               for vma in proc["memory"]["vmas"] for run in vma["pages"])
    go(prog)
    out = run_cli("restore", image, "--detach", "--lazy", "--pid-ns")
    prog.pid = int(out.stdout.split()[-1])
    assert verdict(prog) == ["PASS"], prog.lines()
    assert "pages on demand" in out.stderr


def test_python_program_forking_while_memory_comes_in_from_a_store(programs, workdir, paused):
    """The same from a snapshot store: pages come from chunks, and the buffer's memory is
    given back only while no forked child can still want it."""
    from jupyter_ckpt import engine
    from jupyter_ckpt.store import open_store

    prog = programs(sys.executable, PROGRAMS / "py_lazy.py", timeout=120)
    image = workdir / "image"
    prog.dump(image, kill=True)
    store = open_store(str(workdir / "store"))
    info = store.put_image(image, consume=True)
    go(prog)
    opened = store.open_image(info.id)
    try:
        restored = engine.restore(opened, lazy=True)
    finally:
        opened.close()
    assert verdict(prog, timeout=120) == ["PASS"], (prog.lines(), prog.log())
    stats = restored.wait_pages(timeout=120)
    assert stats is not None and stats.pages_on_demand > 0 and stats.processes >= 2, stats
    assert restored.wait() == 0
