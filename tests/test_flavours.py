"""Every program of a representative set through one checkpoint cycle in each flavour, as
CRIU's zdtm runs each of its tests in each of its modes: plain, a restore into a new PID
namespace, an unprivileged user's, a lazy restore, a dump without pre-copy, and an
incremental image on top of a first one. The program checks itself after the restore.

The set covers the main kinds of state at a modest cost: a C counter (memory, registers),
fds of the event kinds (eventfd, timerfd, signalfd, epoll), a process tree (fork,
shared memory, pipes, a zombie) and a multi-threaded CPython program."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CLI, PROGRAMS, Program, checkpoint_cycle, manifest, run_cli
from unprivileged import nobody_dir, run_as_nobody

PROGRAM_SET = ["counter", "event_fds", "forked_tree", "py_threads.py"]
FLAVOURS = ["plain", "pid-ns", "unprivileged", "lazy", "no-precopy", "incremental"]


def _argv(name: str, cc, where: Path | None = None) -> list[str]:
    """How to run program `name`; a C program is built, and copied to `where` if given."""
    if name.endswith(".py"):
        return [sys.executable, str(PROGRAMS / name)]
    binary = cc(name)
    if where is not None:
        binary = Path(shutil.copy(binary, where / name))
    return [str(binary)]


def _nspids(pid: int) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return next(line for line in f if line.startswith("NSpid:")).split()[1:]


def _user_namespaces() -> bool:
    try:
        return int(Path("/proc/sys/user/max_user_namespaces").read_text()) > 0
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("name", PROGRAM_SET)
def test_checkpoint_cycle(name, flavour, cc, programs, workdir):
    image = workdir / "image"
    if flavour == "unprivileged":
        if not _user_namespaces():
            pytest.skip("this kernel has user namespaces disabled (user.max_user_namespaces = 0)")
        _as_a_user(name, cc)
        return
    prog = programs(*_argv(name, cc))
    if flavour == "plain":
        checkpoint_cycle(prog, image)
    elif flavour == "no-precopy":
        checkpoint_cycle(prog, image, "--no-precopy")
        assert manifest(image)["stats"]["dirty_tracking"] == "none"
    elif flavour == "incremental":
        run_cli("dump", prog.pid, workdir / "base")
        checkpoint_cycle(prog, image, "--parent", workdir / "base")
        assert manifest(image)["stats"]["dirty_tracking"].endswith("page-compare")
        assert len(manifest(image)["bases"]) == 1
    elif flavour == "lazy":
        tids = prog.tids()
        prog.dump(image)
        prog.restore(image, "--lazy")  # returns once every page is in
        assert prog.tids() == tids
        prog.verify()
    elif flavour == "pid-ns":
        original = prog.pid
        prog.dump(image)
        out = run_cli("restore", image, "--detach", "--pid-ns")
        prog.pid = int(out.stdout.split()[-1])
        assert _nspids(prog.pid) == [str(prog.pid), str(original)]
        prog.verify()


def _as_a_user(name: str, cc) -> None:
    """The cycle through the CLI as nobody, without capabilities: the copy comes back in a
    new user and PID namespace with its original PID there."""
    home = nobody_dir()
    argv = _argv(name, cc, home)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(CLI + list(args), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)

    def work() -> None:
        prog = Program(argv, home).start()
        original = prog.pid
        try:
            out = cli("dump", str(prog.pid), str(home / "image"), "--kill")
            assert out.returncode == 0, out.stderr
            prog.popen.wait(timeout=30)
            prog.popen = None
            out = cli("restore", str(home / "image"), "--detach")
            assert out.returncode == 0, out.stderr
            prog.pid = int(out.stdout.split()[-1])
            assert _nspids(prog.pid)[-1] == str(original)
            prog.verify()
        finally:
            prog.kill()

    try:
        run_as_nobody(work)
    finally:
        shutil.rmtree(home, ignore_errors=True)
