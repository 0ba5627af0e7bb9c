"""A pty whose /dev/pts node the program gave another owner, group and mode (as a terminal
server does for the user it serves): the node keeps them after restore."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

OWNER, GROUP, MODE = 13333, 44444, 0o640
t = ckpt_test.Protocol()
master, slave = os.openpty()
os.fchown(slave, OWNER, GROUP)
os.fchmod(slave, MODE)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
st = os.fstat(slave)
t.check((st.st_uid, st.st_gid) == (OWNER, GROUP), f"the pts node's owner is {st.st_uid}:{st.st_gid}")
t.check(st.st_mode & 0o7777 == MODE, f"the pts node's mode is {st.st_mode & 0o7777:o}")
t.passed()
