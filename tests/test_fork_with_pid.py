"""fork_with_pid, the fork that gives the child an exact PID, called (as a restore does in the
Jupyter server) from a process whose other threads contend for the GIL; and into a new PID
namespace, where the child's PID inside is not the one we know it by."""
import json
import os
import subprocess
import sys

from forked import CLONE_NEWPID, check, libc, run_forked
from jupyter_ckpt.engine import syscalls

FORKS = 12
CHILD_TIMEOUT = 2.0

# Three pure-Python threads keep asking for the GIL, and the process is large enough that
# each clone takes milliseconds: a thread's timed wait for the GIL expires during most of them.
CONTENDED = f"""
import json, os, random, select, signal, sys, threading
from jupyter_ckpt.engine import syscalls

stop = False
def spin():
    x = 0
    while not stop:
        x += 1
for _ in range(3):
    threading.Thread(target=spin, daemon=True).start()
ballast = bytearray(512 << 20)
for at in range(0, len(ballast), 4096):
    ballast[at] = 1
me = os.getpid()
wrong, hung, forks = [], 0, 0
pid = random.randrange(8000, 16000)
while forks < {FORKS} and not hung:
    pid += 7
    if os.path.exists(f"/proc/{{pid}}"):
        continue
    try:
        child = syscalls.fork_with_pid(pid)
    except FileExistsError:  # taken meanwhile by a process of the host's
        continue
    if child == 0:
        os._exit(0 if (os.getpid(), os.getppid()) == (pid, me) else 1)
    forks += 1
    if child != pid:
        wrong.append((pid, child))
    pidfd = os.pidfd_open(child)
    ready, _, _ = select.select([pidfd], [], [], {CHILD_TIMEOUT})
    os.close(pidfd)
    if not ready:
        hung += 1
        os.kill(child, signal.SIGKILL)
    status = os.waitpid(child, 0)[1]
    if ready and status != 0:
        wrong.append((pid, os.waitstatus_to_exitcode(status)))
stop = True
print(json.dumps({{"forks": forks, "hung": hung, "wrong": wrong}}))
"""


def test_exact_pid_forks_beside_threads_contending_for_the_gil():
    """Each child must come up with its PID as our child; none may hang waiting for the GIL
    (the copy of a wait that another thread had started when the clone happened)."""
    timeout = 60 + FORKS * CHILD_TIMEOUT
    out = subprocess.run([sys.executable, "-c", CONTENDED], capture_output=True, text=True,
                         timeout=timeout, check=True)
    result = json.loads(out.stdout)
    assert result["hung"] == 0, f"a child hung after fork_with_pid: {result}"
    assert result["wrong"] == [], f"(pid asked, pid or exit code got): {result['wrong']}"
    assert result["forks"] == FORKS


def _nspids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        return [int(n) for n in next(line for line in f if line.startswith("NSpid:")).split()[1:]]


def _fork_exact(pid: int) -> list[int]:
    """fork_with_pid(pid), whose child exits 0 if it has `pid`; checks that it is our child.
    Returns its PIDs (/proc's NSpid: ours first), read through the PID fork_with_pid returned.
    (Inside the namespace getppid() is 0: the parent is outside.)"""
    child = syscalls.fork_with_pid(pid)
    if child == 0:
        os._exit(0 if os.getpid() == pid else 1)
    with open(f"/proc/{child}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    status = os.waitpid(child, 0)[1]
    assert os.waitstatus_to_exitcode(status) == 0, f"child {child} for pid {pid} exited with {status}"
    assert int(fields["PPid"]) == os.getpid(), f"child {child}'s parent is {fields['PPid']}"
    return [int(n) for n in fields["NSpid"].split()]


def _in_new_pid_namespace() -> None:
    check(libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    go_r, go_w = os.pipe()
    init = os.fork()  # our next child is the namespace's PID 1, which must stay for the rest
    if init == 0:  # leaves when we are gone or done (closed go_w)
        os.close(go_w)
        os.read(go_r, 1)
        os._exit(0)
    os.close(go_r)
    try:
        # PID 2 is the namespace's next one: the fork's intermediate gets it and is the child
        for pid in (2, 40):
            nspids = _fork_exact(pid)
            assert len(nspids) == 2 and nspids[1] == pid, f"the child for PID {pid} has PIDs {nspids}"
    finally:
        os.close(go_w)
        os.waitpid(init, 0)


def test_exact_pid_fork_into_a_new_pid_namespace():
    """Children born in a namespace of their own: they have the PIDs asked for inside, and
    fork_with_pid returns the PIDs we know them by."""
    run_forked(_in_new_pid_namespace, lambda: None, "fork_with_pid in a new PID namespace", timeout=60)
