"""pidfds, as asyncio (Python 3.12+) waits for subprocesses: one on a running child, one on
a child that has exited but is not reaped yet. After restore the first still delivers a
signal and then reports the child's end; the second is readable at once and gives the exit
status. With --outside it also holds a pidfd on its parent, which is outside the tree."""
import os
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
running = subprocess.Popen(["sleep", "1000"])
running_fd = os.pidfd_open(running.pid)
ended = os.fork()
if ended == 0:
    os._exit(7)
ended_fd = os.pidfd_open(ended)
while not select.select([ended_fd], [], [], 0)[0]:  # readable once it has exited
    time.sleep(0.01)
if "--outside" in sys.argv:
    parent_fd = os.pidfd_open(os.getppid())
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

t.check(not select.select([running_fd], [], [], 0)[0], "the running child's pidfd says it ended")
signal.pidfd_send_signal(running_fd, signal.SIGTERM)
t.check(bool(select.select([running_fd], [], [], 10)[0]), "the running child's end was not reported")
info = os.waitid(os.P_PIDFD, running_fd, os.WEXITED)
t.check((info.si_pid, info.si_code, info.si_status) == (running.pid, os.CLD_KILLED, signal.SIGTERM),
        f"the running child's end: {info}")
t.check(bool(select.select([ended_fd], [], [], 0)[0]), "the ended child's pidfd is not readable")
info = os.waitid(os.P_PIDFD, ended_fd, os.WEXITED)
t.check((info.si_pid, info.si_status) == (ended, 7), f"the ended child's status: {info}")
t.passed()
