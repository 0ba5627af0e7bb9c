"""A user without privileges checkpoints and restores their own programs and Jupyter kernels.

Everything here runs as nobody with no capabilities, and the checkpointing process is always
an ancestor of what it checkpoints (the server of its kernels, a driver of its program): what
Yama's ptrace_scope=1 requires. Without CAP_CHECKPOINT_RESTORE the tree comes back in a new
user and PID namespace, where it has its original PIDs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import CLI, PROGRAMS, Program, pid_alive, wait_until
from jupyter_server_harness import KERNEL_STATE, KernelSocket, Server
from unprivileged import NOBODY, nobody_dir, run_as_nobody


@pytest.fixture
def home():
    path = nobody_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.split() for k, _, v in (line.partition(":") for line in f)}


def _restore_as_user(image: Path, prog: Program) -> None:
    """Restore `image` (as the caller, who is nobody) and check who and where the copy is;
    `prog` then points at the copy."""
    from jupyter_ckpt import engine

    restored = engine.restore(str(image))
    status = _status(restored.pid)
    assert restored.ns_pid == prog.pid and status["NSpid"][-1] == str(prog.pid), status["NSpid"]
    assert status["Uid"] == [str(NOBODY)] * 4 and status["CapEff"] == ["0000000000000000"]
    assert os.readlink(f"/proc/{restored.pid}/ns/user") != os.readlink("/proc/self/ns/user")
    parents = {p.pid for p in psutil.Process(restored.pid).parents()}
    assert os.getpid() in parents, "the restorer's caller stays an ancestor (Yama scope 1)"
    if restored.warnings:  # a container's masked /proc may forbid a user one: it says so
        assert restored.warnings == [w for w in restored.warnings if "/proc" in w], restored.warnings
    else:  # its /proc is its namespace's: there /proc/<its pid> is itself
        start = lambda path: open(path).read().split()[21]  # noqa: E731
        inside = f"/proc/{restored.pid}/root/proc/{restored.ns_pid}/stat"
        assert start(inside) == start(f"/proc/{restored.pid}/stat")
    prog.pid = restored.pid


def _dump_kill(prog: Program, image: Path) -> None:
    from jupyter_ckpt import engine

    engine.dump(prog.pid, str(image), kill=True)
    if prog.popen is not None:
        prog.popen.wait(timeout=30)
        prog.popen = None
    else:
        wait_until(lambda: not pid_alive(prog.pid), what="the checkpointed copy to end")


def test_user_checkpoints_and_restores_their_own_program(cc, home):
    shutil.copy(cc("event_fds"), home / "event_fds")

    def work() -> None:
        prog = Program([str(home / "event_fds")], home).start()
        original = prog.pid
        _dump_kill(prog, home / "image")
        _restore_as_user(home / "image", prog)
        # the copy lives in a user and PID namespace below ours: it can be checkpointed again
        _dump_kill(prog, home / "again")
        prog.pid = original
        _restore_as_user(home / "again", prog)
        prog.verify()

    run_as_nobody(work)


def test_python_program_with_threads_as_a_user(home):
    def work() -> None:
        prog = Program([sys.executable, str(PROGRAMS / "py_threads.py")], home).start()
        _dump_kill(prog, home / "image")
        _restore_as_user(home / "image", prog)
        prog.verify()

    run_as_nobody(work)


def test_cli_as_a_user(cc, home):
    """`jupyter-ckpt` as a user; a caller reading `restore --detach`'s output through a pipe
    (as `pid=$(...)` does) gets it back although the restore's helper lives on."""
    shutil.copy(cc("counter"), home / "counter")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(CLI + list(args), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)

    def work() -> None:
        prog = Program([str(home / "counter")], home).start()
        original = prog.pid
        assert cli("dump", str(prog.pid), str(home / "image"), "--kill").returncode == 0
        prog.popen.wait(timeout=30)
        prog.popen = None
        lazy = cli("restore", str(home / "image"), "--lazy")
        assert lazy.returncode == 1 and "lazy restore needs CAP_SYS_PTRACE" in lazy.stderr, lazy.stderr
        out = cli("restore", str(home / "image"), "--detach")
        assert out.returncode == 0, out.stderr
        prog.pid = int(out.stdout.split()[-1])
        assert prog.pid != original and f"pid {original} inside" in out.stderr
        prog.verify()

    run_as_nobody(work)


def test_what_needs_privilege_is_refused_by_name(cc, home):
    """Shared memory is read through /proc/PID/map_files, which takes CAP_CHECKPOINT_RESTORE;
    inotify watches are found through file handles, which take CAP_DAC_READ_SEARCH."""
    shutil.copy(cc("shared_memory"), home / "shared_memory")

    def work() -> None:
        from jupyter_ckpt import engine

        prog = Program([str(home / "shared_memory")], home).start()
        blockers = engine.check(prog.pid)
        assert blockers and all(b.kind == "shared memory" for b in blockers), blockers
        with pytest.raises(engine.Refused, match="shared memory: reading it takes CAP_CHECKPOINT_RESTORE"):
            engine.dump(prog.pid, str(home / "image"))
        assert not (home / "image").exists() and pid_alive(prog.pid)
        prog.verify()  # the original runs on, unharmed

        watcher = Program([sys.executable, str(PROGRAMS / "py_inotify.py")], home).start()
        assert [(b.kind, "CAP_DAC_READ_SEARCH" in b.why) for b in engine.check(watcher.pid)] \
            == [("inotify", True)]
        watcher.verify()

    run_as_nobody(work)


CHECK = """
t0 = ticks[0]; time.sleep(0.3)
print(number, float(big.sum()) == big_sum, ticks[0] > t0, db.execute("select sum(v) from t").fetchone()[0],
      os.getuid())
"""


def test_jupyter_server_run_by_a_user(home):
    server = Server(home, home / "ckpt", as_nobody=True).start()
    try:
        assert psutil.Process(server.proc.pid).uids().real == NOBODY
        kernel_id = server.start_notebook_kernel()
        ks = KernelSocket(server, kernel_id)
        assert ks.execute(KERNEL_STATE)[0] == "ok"
        for generation in ("the original", "a restored kernel"):
            status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
            assert status == 201, f"checkpoint of {generation}: {model}\n{server.log()}"
            assert server.request("DELETE", f"api/kernels/{kernel_id}")[0] == 204
            ks.close()
            status, result = server.request("POST", f"api/ckpt/snapshots/{model['id']}/restore", {})
            assert status == 200, f"restore of {generation}: {result}\n{server.log()}"
            assert result["kernel_id"] == kernel_id
            ks = KernelSocket(server, kernel_id)
            ks.wait_for_output()
            status, out, _ = ks.execute(CHECK)
            assert status == "ok", out
            assert out.split() == ["42", "True", "True", "7", str(NOBODY)]
            pid = _kernel_pid(server, kernel_id)
            assert server.proc.pid in {p.pid for p in psutil.Process(pid).parents()}, \
                "the server stays an ancestor of its restored kernel (Yama scope 1)"
        time.sleep(2)  # ipykernel exits within a second if its parent looks wrong
        assert ks.execute("print('still here')")[1].strip() == "still here"
        ks.close()
    finally:
        server.stop()


def _kernel_pid(server: Server, kernel_id: str) -> int:
    """The kernel process of `kernel_id`: the server's descendant whose command line holds it."""
    for proc in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if any(kernel_id in arg for arg in proc.cmdline()) and "ipykernel" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"no kernel process for {kernel_id}")


def test_multiprocessing_as_a_user(home):
    """A Pool's semaphores and a shared Value live in shared memory that a user may not open
    through /proc/PID/map_files: it is read through the processes' own mappings."""
    def work() -> None:
        prog = Program([sys.executable, str(PROGRAMS / "py_pool.py")], home).start()
        original = prog.pid
        _dump_kill(prog, home / "image")
        _restore_as_user(home / "image", prog)
        prog.verify()
        assert prog.pid != original

    run_as_nobody(work)
