"""inotify, as file watchers (watchdog) use it: watches on a directory and on a file, with a
gap in the watch descriptors left by a watch removed before the checkpoint. After restore
the same descriptors report new events, in order, and nothing else is waiting."""
import ctypes
import os
import select
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

IN_MODIFY, IN_CREATE, IN_DELETE = 0x2, 0x100, 0x200
libc = ctypes.CDLL(None, use_errno=True)
t = ckpt_test.Protocol()
here = os.path.join(os.path.dirname(os.path.abspath(t.path)), "watched")
os.makedirs(here, exist_ok=True)
log = os.path.join(here, "..", "watched.log")
open(log, "w").close()


def events(fd: int) -> list[tuple[int, int, str]]:
    """(wd, mask, name) of every event waiting."""
    found = []
    while select.select([fd], [], [], 0.5)[0]:
        data = os.read(fd, 65536)
        while data:
            wd, mask, _, length = struct.unpack_from("iIII", data)
            name = data[16:16 + length].rstrip(b"\0").decode()
            found.append((wd, mask, name))
            data = data[16 + length:]
    return found


fd = libc.inotify_init1(0)
directory = libc.inotify_add_watch(fd, here.encode(), IN_CREATE | IN_DELETE)
removed = libc.inotify_add_watch(fd, b"/tmp", IN_CREATE)
libc.inotify_rm_watch(fd, removed)
log_watch = libc.inotify_add_watch(fd, os.path.abspath(log).encode(), IN_MODIFY)
t.check((directory, removed, log_watch) == (1, 2, 3), f"watch descriptors {directory, removed, log_watch}")
events(fd)  # the IN_IGNORED of the removed watch
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

open(os.path.join(here, "new-file"), "w").close()
with open(log, "a") as f:
    f.write("x")
got = events(fd)
t.check(got == [(1, IN_CREATE, "new-file"), (3, IN_MODIFY, "")], f"events after restore: {got}")
t.passed()
