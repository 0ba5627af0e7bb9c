"""A file given unusual permissions (set-user-id, set-group-id) and an old modification time,
then unlinked while open (zdtm file_attr): after restore its content, mode and times are the
ones it had, not those of a file written anew, and its /proc fd link reads as it did
(zdtm unlink_multiple_largefiles)."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

MODE = 0o6604
ATIME_NS, MTIME_NS = 1_000_000_000 * 98_765 + 123, 1_000_000_000 * 123_456 + 456_789

t = ckpt_test.Protocol()
path = os.path.join(tempfile.mkdtemp(prefix="ckpt-attrs-"), "data")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
content = os.urandom(300_000)
os.write(fd, content)
os.fchmod(fd, MODE)
os.utime(fd, ns=(ATIME_NS, MTIME_NS))
os.unlink(path)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
st = os.fstat(fd)  # before reading it: a read may move the access time
t.check(st.st_mode & 0o7777 == MODE, f"mode {st.st_mode & 0o7777:o}, not {MODE:o}")
t.check(st.st_mtime_ns == MTIME_NS, f"mtime {st.st_mtime_ns}, not {MTIME_NS}")
t.check(st.st_atime_ns == ATIME_NS, f"atime {st.st_atime_ns}, not {ATIME_NS}")
t.check(os.pread(fd, len(content) + 1, 0) == content, "the content differs")
t.check(st.st_nlink == 0, "the file has a name again")
link = os.readlink(f"/proc/self/fd/{fd}")
t.check(link == path + " (deleted)", f"the fd now reads as {link}")
os.rmdir(os.path.dirname(path))
t.passed()
