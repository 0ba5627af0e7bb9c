"""Restore while the original still runs: the copy comes back in a new PID namespace where it
sees its original PID, and both run on independently."""
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import HERE, Program, pid_alive, run_cli, wait_until
from forked import enter_container, run_forked

PROGRAM = f"""
import os, sys, time
sys.path.insert(0, {str(HERE)!r})
import ckpt_test
t = ckpt_test.Protocol()
me, parent = os.getpid(), os.getppid()
counter = 0
t.ready()
while not t.verify_requested:
    counter += 1
    time.sleep(0.001)
t.check(os.getpid() == me, f"pid {{os.getpid()}} != {{me}}")
t.check(os.getppid() == parent, f"parent pid {{os.getppid()}} != {{parent}}")
t.check(counter > 0, "never counted")
t.check(os.readlink("/proc/self") == str(me), f"/proc/self is {{os.readlink('/proc/self')}}, not {{me}}")
with open(f"/proc/{{me}}/stat") as by_pid, open("/proc/self/stat") as by_self:  # (as psutil reads)
    t.check(by_pid.read().split()[21] == by_self.read().split()[21], "/proc/<my pid> is another process")
t.passed()
"""


def test_restore_beside_running_original(programs, workdir):
    script = workdir / "prog.py"
    script.write_text(PROGRAM)
    prog = programs(sys.executable, script)
    image = workdir / "image"
    run_cli("dump", prog.pid, image)  # no --kill: the original runs on
    assert pid_alive(prog.pid)

    out = run_cli("restore", image, "--detach")
    copy = int(out.stdout.split()[-1])
    assert copy != prog.pid, "PID was taken, so the copy must live in a new PID namespace"
    assert "new PID namespace" in out.stderr
    assert os.readlink(f"/proc/{copy}/ns/pid") != os.readlink(f"/proc/{prog.pid}/ns/pid")
    with open(f"/proc/{copy}/status") as f:
        nspids = next(line for line in f if line.startswith("NSpid:")).split()[1:]
    assert nspids == [str(copy), str(prog.pid)], "inside, the copy has the original PID"

    os.kill(copy, signal.SIGUSR1)  # the copy verifies itself (pid and parent pid as before)
    wait_until(lambda: not pid_alive(copy), what="the copy to verify itself and exit")
    assert prog.lines().count("PASS") == 1, prog.lines()
    assert pid_alive(prog.pid), "the original must be untouched"
    prog.status.write_text("")  # the original's own verdict comes next
    prog.verify()


def test_a_copy_in_its_own_pid_namespace_can_be_checkpointed_again(programs, workdir):
    """A copy restored beside its original lives in a PID namespace below ours; its image
    records the PIDs it sees, and it comes back with them."""
    script = workdir / "prog.py"
    script.write_text(PROGRAM)
    prog = programs(sys.executable, script)
    _copy_checkpointed_again(prog, workdir)
    assert pid_alive(prog.pid)


def _copy_checkpointed_again(prog: Program, workdir) -> None:
    """Restore a copy beside the running `prog`, check and dump the copy, restore that, and
    let the second copy verify itself (its PID and parent PID are the original ones)."""
    run_cli("dump", prog.pid, workdir / "image")
    copy = int(run_cli("restore", workdir / "image", "--detach").stdout.split()[-1])
    assert copy != prog.pid

    run_cli("check", copy)
    run_cli("dump", copy, workdir / "again", "--kill")
    wait_until(lambda: not pid_alive(copy), what="the copy to be gone")
    again = json.loads((workdir / "again" / "manifest.json").read_text())
    assert again["root_pid"] == prog.pid, "the image records the PID the copy saw"

    second = int(run_cli("restore", workdir / "again", "--detach").stdout.split()[-1])
    os.kill(second, signal.SIGUSR1)
    wait_until(lambda: not pid_alive(second), what="the second copy to verify itself")
    assert prog.lines().count("PASS") == 1, prog.lines()


def test_inside_a_container(workdir):
    """As a CI job in a container: we are PID 1 of a PID namespace whose session leader is
    outside (/proc says session 0), and the program's parent is init. Its copy beside it
    gets our init's counterpart as its parent, and can be checked, dumped and restored."""
    script = workdir / "prog.py"
    script.write_text(PROGRAM)

    def work() -> None:
        assert os.getpid() == 1
        prog = Program([sys.executable, str(script)], workdir).start()
        _copy_checkpointed_again(prog, workdir)  # the copies' parent is PID 1, as prog's
        prog.status.write_text("")
        prog.verify()

    run_forked(work, enter_container, "in a container")


def test_a_process_that_sees_other_mounts_is_refused(workdir):
    """An image records paths, which mean to the restorer what they meant to the process
    only where the process sees our mounts (or a copy of them with its own /proc, as the
    copies above): one behind a mount of its own is refused by name, and runs on."""
    (workdir / "mnt").mkdir()
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs none {workdir}/mnt && exec sleep 600"])
    try:
        wait_until(lambda: proc.poll() is not None or open(f"/proc/{proc.pid}/comm").read() == "sleep\n",
                   what="the program behind its own mount")
        if proc.poll() is not None:
            pytest.skip("kernel feature missing: cannot mount tmpfs in a new mount namespace")
        refused = run_cli("check", proc.pid, check=False)
        assert refused.returncode == 1, refused.stdout
        assert refused.stdout.splitlines() == [
            f"pid {proc.pid} process: mnt namespace: sees other mounts than ours, so its paths "
            "mean other files"], refused.stdout
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
