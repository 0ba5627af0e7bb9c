"""An O_PATH fd on a file then removed: nothing of the file is kept through such an fd, so
it cannot come back, and dump must say so by name."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
folder = tempfile.mkdtemp(prefix="ckpt-opath-")
path = os.path.join(folder, "gone")
with open(path, "wb") as f:
    f.write(b"data")
fd = os.open(path, os.O_PATH)
os.unlink(path)
os.rmdir(folder)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
t.check(os.fstat(fd).st_nlink == 0, "the O_PATH fd reaches another file")
t.passed()
