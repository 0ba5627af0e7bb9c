"""FIFOs whose name was removed while they were open: one with both ends open in two
processes (a child writes, the parent reads) and bytes buffered, one opened read-write by a
single fd, and one whose reader has gone (writes fail with EPIPE). Each must come back as
one pipe with the same bytes, shared by every fd that shared it, under no name.
With a path argument (a FIFO whose reader is outside the tree), it also holds the write end
of that FIFO, removed too: a checkpoint must refuse it."""
import errno
import fcntl
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
here = os.path.dirname(t.path)
paths = {name: os.path.join(here, f"{name}.fifo") for name in ("shared", "rdwr", "orphan")}
for path in paths.values():
    os.mkfifo(path, 0o600)

reader = os.open(paths["shared"], os.O_RDONLY | os.O_NONBLOCK)
writer = os.open(paths["shared"], os.O_WRONLY)
spare_reader = os.dup(reader)
rdwr = os.open(paths["rdwr"], os.O_RDWR)
os.write(rdwr, b"to myself")
orphan_reader = os.open(paths["orphan"], os.O_RDONLY | os.O_NONBLOCK)
orphan_writer = os.open(paths["orphan"], os.O_WRONLY)
os.close(orphan_reader)
signal.signal(signal.SIGPIPE, signal.SIG_IGN)

go, went = os.pipe()
child = os.fork()
if child == 0:  # writes on the shared FIFO when told to, then exits
    os.close(reader)
    os.close(spare_reader)
    os.read(go, 1)
    os.write(writer, b"from the child")
    os._exit(0)
os.write(writer, b"buffered ")
if len(sys.argv) > 2:
    outside_writer = os.open(sys.argv[1], os.O_WRONLY)
    os.unlink(sys.argv[1])
for path in paths.values():
    os.unlink(path)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

t.check(not any(os.path.exists(p) for p in paths.values()), "a removed FIFO has a name again")
t.check(os.read(reader, 100) == b"buffered ", "the shared FIFO's bytes were lost")
os.write(went, b"x")
os.waitpid(child, 0)
t.check(os.read(spare_reader, 100) == b"from the child", "the child's end is not the parent's FIFO")
os.close(writer)
t.check(os.read(reader, 100) == b"", "a writer is still open somewhere")
t.check(fcntl.fcntl(reader, fcntl.F_GETFL) & os.O_NONBLOCK, "the reader is no longer non-blocking")
t.check(os.read(rdwr, 100) == b"to myself", "the read-write FIFO's bytes were lost")
os.write(rdwr, b"again")
t.check(os.read(rdwr, 100) == b"again", "the read-write FIFO no longer loops back")
try:
    os.write(orphan_writer, b"x")
    t.check(False, "a FIFO without readers accepted a write")
except OSError as err:
    t.check(err.errno == errno.EPIPE, f"a FIFO without readers: {err}")
t.passed()
