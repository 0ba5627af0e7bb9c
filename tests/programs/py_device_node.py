"""A private node of /dev/null's device (mode 0700, made with mknod), open and then unlinked:
not /dev/null itself, so its mode and inode must stay those of the private node."""
import os
import stat
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
folder = tempfile.mkdtemp(prefix="ckpt-devnode-")
node = os.path.join(folder, "null")
os.mknod(node, stat.S_IFCHR | 0o700, os.makedev(1, 3))
fd = os.open(node, os.O_RDWR)
os.unlink(node)
os.rmdir(folder)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
st = os.fstat(fd)
t.check((st.st_mode, st.st_rdev) == (stat.S_IFCHR | 0o700, os.makedev(1, 3)),
        f"fd {fd} is no longer the private node: mode {st.st_mode:o}")
t.check(st.st_nlink == 0, "the private node has a name again")
t.passed()
