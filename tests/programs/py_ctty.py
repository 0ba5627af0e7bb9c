"""A terminal session inside the tree, as pexpect or pty.fork() makes one: a child leads its
own session with a pty as controlling terminal, and its child runs in another process group
as the terminal's foreground job. After restore, job control must still work: ^C typed at
the master interrupts the foreground job and no one else, /dev/tty opens in both, and the
foreground group and session are as they were."""
import os
import pty
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
report = t.path + ".session"  # what the session's processes find, a line each


def note(line: str) -> None:
    with open(report, "a") as f:
        f.write(line + "\n")


def foreground_group() -> int:
    """Through /dev/tty, which only opens for a process with a controlling terminal."""
    fd = os.open("/dev/tty", os.O_RDWR)
    try:
        return os.tcgetpgrp(fd)
    finally:
        os.close(fd)


def run_job(go: int) -> None:
    os.setpgid(0, 0)
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    os.read(go, 1)  # the leader has made us the foreground job
    os.close(go)
    note("job ready")
    while not interrupted:
        time.sleep(0.01)
    ok = foreground_group() == os.getpgrp() != os.getsid(0) == os.getppid()
    note(f"job {'ok' if ok else 'wrong'}: foreground {foreground_group()}, group {os.getpgrp()}, "
         f"session {os.getsid(0)}")
    os._exit(0)


def run_leader() -> None:
    go_r, go_w = os.pipe()
    job = os.fork()
    if job == 0:
        os.close(go_w)
        run_job(go_r)
    os.close(go_r)
    try:
        os.setpgid(job, job)
    except PermissionError:
        pass  # the job did it first
    os.tcsetpgrp(0, job)
    signal.signal(signal.SIGINT, lambda *_: note("leader wrong: interrupted"))
    os.close(go_w)
    _, status = os.waitpid(job, 0)
    ok = os.getsid(0) == os.getpid() and foreground_group() == job and status == 0
    note(f"leader {'ok' if ok else 'wrong'}: foreground {foreground_group()}, job {job}, "
         f"status {status}, session {os.getsid(0)}")
    os._exit(0)


leader, master = pty.fork()
if leader == 0:
    run_leader()
while True:
    try:
        if "job ready" in open(report).read():
            break
    except FileNotFoundError:
        pass
    time.sleep(0.01)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

os.write(master, b"\x03")  # ^C on the terminal: SIGINT to its foreground job only
_, status = os.waitpid(leader, 0)
lines = open(report).read().splitlines()
t.check(status == 0, f"session leader ended with {status}: {lines}")
t.check(any(line.startswith("job ok") for line in lines), f"the foreground job: {lines}")
t.check(any(line.startswith("leader ok") for line in lines), f"the session leader: {lines}")
t.check(not any("wrong" in line for line in lines), f"{lines}")
t.passed()
