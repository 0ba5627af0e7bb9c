"""Shared memory the tree shares with a process outside it: an orphan, forked from the tree
and re-parented away (or a memfd passed on), keeps using it. The tree must be refused by name:
restored, it would no longer share that memory with the orphan.

argv[1]: "anon" (a MAP_SHARED anonymous mapping) or "memfd" (an fd of a memfd, not mapped);
argv[2]: a file where the orphan's pid is written, for the test to end it."""
import mmap
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

kind, pid_file = sys.argv[1], sys.argv[2]
if kind == "anon":
    shared = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)
else:
    fd = os.memfd_create("handed-on")
    os.write(fd, b"state the orphan reads")
t = ckpt_test.Protocol()
readable, writable = os.pipe()
middle = os.fork()
if middle == 0:  # the middle exits at once: its child is re-parented outside the tree
    orphan = os.fork()
    if orphan == 0:
        for stdio in (0, 1, 2, readable, writable):
            os.close(stdio)
        while True:
            time.sleep(1)
    os.write(writable, str(orphan).encode())
    os._exit(0)
os.close(writable)
os.waitpid(middle, 0)
orphan = int(os.read(readable, 32))
os.close(readable)
with open(pid_file, "w") as f:
    f.write(str(orphan))
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
t.passed()
