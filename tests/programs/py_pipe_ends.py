"""Pipes whose other end no one holds any more, as a finished subprocess leaves them: the
read end keeps its buffered bytes and then reads end-of-file; a write end whose reader is
gone (argv[1], its reader was the test's) fails with EPIPE."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
writer = int(sys.argv[1])
child = subprocess.Popen(["/bin/echo", "from a finished child"], stdout=subprocess.PIPE)
child.wait()  # its stdout stays open here: the bytes are in it, and no one can write more
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

got = child.stdout.read()  # to end-of-file
t.check(got == b"from a finished child\n", f"the finished child's output: {got!r}")
try:
    os.write(writer, b"x")
    t.check(False, "a pipe without readers accepted a write")
except BrokenPipeError:
    pass
t.passed()
