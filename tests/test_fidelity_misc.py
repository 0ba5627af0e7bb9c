"""Found with CRIU's zdtm suite: a zombie in a process group of its own is refused by name
(it would come back in its parent's group), and a /proc file of the process itself is
reopened on the restored process (the host verdict must not call it gone)."""
import os
import signal
import sys

import pytest

from conftest import PROGRAMS, checkpoint_cycle, pid_alive, run_cli

PROGRAM = PROGRAMS / "py_zombie_group.py"


def test_a_zombie_in_a_group_of_its_own_is_refused_by_name(programs, workdir):
    prog = programs(sys.executable, PROGRAM)
    out = run_cli("dump", prog.pid, workdir / "image", "--kill", check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "zombie: its process group" in lines[0], out.stderr
    assert not (workdir / "image").exists() and pid_alive(prog.pid)
    prog.verify()


def test_a_proc_file_of_the_process_itself_is_reopened(programs, workdir):
    prog = programs(sys.executable, PROGRAM, "--proc")
    checkpoint_cycle(prog, workdir / "image")


@pytest.mark.parametrize("mode,words", [("--pdeath", "parent-death signal"),
                                        ("--fown", "signal-driven I/O")])
def test_state_that_is_not_restored_is_refused_by_name(mode, words, programs, workdir):
    """Found with zdtm (pdeath_sig, file_fown): dump and restore went through and the state
    was silently lost. Until it is restored, it is refused by name, the program running on."""
    prog = programs(sys.executable, PROGRAMS / "py_owners.py", mode)
    out = run_cli("dump", prog.pid, workdir / "image", "--kill", check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and words in lines[0], out.stderr
    assert not (workdir / "image").exists() and pid_alive(prog.pid)
    prog.verify()


def test_an_unlinked_file_keeps_its_mode_and_times(programs, workdir):
    """Found with zdtm (file_attr): the re-made file had the restore's modification time."""
    prog = programs(sys.executable, PROGRAMS / "py_unlinked_attrs.py")
    checkpoint_cycle(prog, workdir / "image")


@pytest.mark.parametrize("kind", ["anon", "memfd"])
def test_memory_shared_with_a_process_outside_the_tree_is_refused_by_name(kind, programs, workdir):
    """Found with zdtm (child_subreaper_and_reparent): an orphan outside the tree kept the
    tree's shared memory; dump and restore went through and the two no longer shared it."""
    pid_file = workdir / "orphan.pid"
    prog = programs(sys.executable, PROGRAMS / "py_shared_outside.py", kind, pid_file)
    orphan = int(pid_file.read_text())
    try:
        for verb, args in (("check", ()), ("dump", (workdir / "image", "--kill"))):
            out = run_cli(verb, prog.pid, *args, check=False)
            lines = (out.stdout if verb == "check" else out.stderr).strip().splitlines()
            assert out.returncode == 1 and len(lines) == 1, out.stdout + out.stderr
            assert "shared memory" in lines[0] and f"pid {orphan}, outside the tree" in lines[0], lines[0]
        assert not (workdir / "image").exists() and pid_alive(prog.pid)
        prog.verify()
    finally:
        os.kill(orphan, signal.SIGKILL)


def _may_set_loginuid() -> bool:
    with open("/proc/self/status") as f:
        caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(caps >> 30 & 1)  # CAP_AUDIT_CONTROL


@pytest.mark.skipif(not os.path.exists("/proc/self/loginuid"), reason="kernel built without audit")
@pytest.mark.skipif(os.path.exists("/proc/self/loginuid") and not _may_set_loginuid(),
                    reason="no CAP_AUDIT_CONTROL: a process cannot be given a login uid here")
def test_the_audit_login_uid_comes_back(programs, workdir):
    """Found with zdtm (loginuid): the restored process had the restorer's login uid."""
    prog = programs(sys.executable, PROGRAMS / "py_loginuid.py")
    checkpoint_cycle(prog, workdir / "image")
