"""A zombie child in a process group of its own (it called setpgid(0, 0) before exiting),
not reaped: it cannot come back in that group, so a checkpoint must refuse it by name.
With --proc the program instead holds its own /proc/PID/status open at an offset, which
must come back reopened on the restored process."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
if "--proc" in sys.argv:
    status = open(f"/proc/{os.getpid()}/status")
    first = status.readline()
    t.ready()
    while not t.verify_requested:
        time.sleep(0.01)
    status.seek(0)
    t.check(status.readline() == first, "the reopened /proc file is not our own status")
    t.check(f"Pid:\t{os.getpid()}" in status.read(), "the /proc file is another process's")
    t.passed()
child = os.fork()
if child == 0:
    os.setpgid(0, 0)
    os._exit(3)
os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # ended, left a zombie
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
_, status = os.waitpid(child, 0)
t.check(os.waitstatus_to_exitcode(status) == 3, "the zombie's status")
t.passed()
