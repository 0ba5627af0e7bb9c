"""An open file that its path no longer reaches though it still has a name: 'linked' gives it
a second name and unlinks the first; 'replaced' keeps a second name (a backup hard link) and
renames another file over its path, as an editor's atomic save does. The fd must keep
reaching the original file."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
folder = tempfile.mkdtemp(prefix="ckpt-moved-")
path = os.path.join(folder, "data")
with open(path, "wb") as f:
    f.write(b"original")
fd = os.open(path, os.O_RDONLY)
if sys.argv[1] == "linked":
    os.link(path, path + ".link")
    os.unlink(path)
else:
    os.link(path, path + ".backup")
    with open(path + ".new", "wb") as f:
        f.write(b"replacement")
    os.rename(path + ".new", path)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
t.check(os.pread(fd, 100, 0) == b"original", "the fd reaches another file")
for name in os.listdir(folder):
    os.unlink(os.path.join(folder, name))
os.rmdir(folder)
t.passed()
