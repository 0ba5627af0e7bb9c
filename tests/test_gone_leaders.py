"""A process group or session outlives its leader. A copy restored in a PID namespace of its
own inherits its restorer's group and session; when their leader has exited by the time the
copy is checkpointed again, the dump still records them (they are outside the copy's
namespace) instead of failing on the leader's missing /proc entry."""
import os
import signal
import subprocess

from conftest import CLI, pid_alive, run_cli, wait_until


def test_a_copy_whose_session_leader_is_gone_can_be_checkpointed(cc, programs, workdir):
    prog = programs(cc("counter"))
    run_cli("dump", prog.pid, workdir / "image")
    # restored from a shell that leads a session of its own, and is gone once it returns
    script = f'exec {" ".join(CLI)} restore {workdir / "image"} --detach'
    shell = subprocess.run(["setsid", "--wait", "sh", "-c", script], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120)
    assert shell.returncode == 0, shell.stderr
    copy = int(shell.stdout.split()[-1])
    with open(f"/proc/{copy}/stat") as f:
        sid = int(f.read().rsplit(")", 1)[1].split()[4])
    assert sid != copy and not pid_alive(sid), "the copy's session leader must be gone"

    run_cli("dump", copy, workdir / "again", "--kill")
    wait_until(lambda: not pid_alive(copy), what="the copy to end")
    second = int(run_cli("restore", workdir / "again", "--detach").stdout.split()[-1])
    os.kill(second, signal.SIGUSR1)  # (the original runs on beside it, writing nothing yet)
    wait_until(lambda: not pid_alive(second), what="the second copy to verify itself")
    assert prog.lines().count("PASS") == 1, prog.lines()
