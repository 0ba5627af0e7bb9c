"""File locks of every kind, on files whose descriptions a forked child shares: a POSIX
write lock on a byte range and a POSIX read lock (the parent's), a flock() write lock and an
OFD read lock. After restore another process still sees each lock, owned by the parent."""
import fcntl
import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

FLOCK = struct.Struct("hhqqi4x")  # struct flock
F_OFD_SETLK = 37
t = ckpt_test.Protocol()
folder = tempfile.mkdtemp(prefix="ckpt-locks-")
paths = [os.path.join(folder, name) for name in ("posix", "read", "flock", "ofd")]
posix, read, flocked, ofd = fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o600) for p in paths]
fcntl.fcntl(posix, fcntl.F_SETLK, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 10, 10, 0))
fcntl.fcntl(read, fcntl.F_SETLK, FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
fcntl.flock(flocked, fcntl.LOCK_EX)
fcntl.fcntl(ofd, F_OFD_SETLK, FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 5, 1, 0))
hold_r, hold_w = os.pipe()
sharer = os.fork()
if sharer == 0:  # shares every description, holds no lock of its own
    os.close(hold_w)
    os.read(hold_r, 1)
    os._exit(0)
os.close(hold_r)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)


def seen_from_another_process(fd: int, kind: int, start: int, length: int) -> tuple[int, int, int, int]:
    """The lock F_GETLK reports to a new process asking for a write lock on the range."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        fresh = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        got = FLOCK.unpack(fcntl.fcntl(fresh, kind, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)))
        os.write(w, struct.pack("4q", got[0], got[2], got[3], got[4]))
        os._exit(0)
    os.waitpid(child, 0)
    return struct.unpack("4q", os.read(r, 32))


me = os.getpid()
t.check(seen_from_another_process(posix, fcntl.F_GETLK, 0, 0) == (fcntl.F_WRLCK, 10, 10, me),
        "the POSIX write lock on bytes 10-19 is not the parent's")
t.check(seen_from_another_process(read, fcntl.F_GETLK, 0, 0) == (fcntl.F_RDLCK, 0, 0, me),
        "the POSIX read lock on the whole file is not the parent's")
t.check(seen_from_another_process(ofd, 36, 0, 0)[:3] == (fcntl.F_RDLCK, 5, 1),  # F_OFD_GETLK
        "the OFD read lock on byte 5 is gone")
with open(f"/proc/self/fdinfo/{flocked}") as info:
    flocks = [line.split()[2:6] for line in info if line.startswith("lock:")]
t.check(flocks == [["FLOCK", "ADVISORY", "WRITE", str(me)]], f"the flock() lock: {flocks}")
os.close(hold_w)
os.waitpid(sharer, 0)
for p in paths:
    os.unlink(p)
os.rmdir(folder)
t.passed()
