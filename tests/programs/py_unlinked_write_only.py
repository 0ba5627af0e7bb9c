"""A log-like file opened write-only, written, then unlinked while open: after restore the fd
still writes at its offset into a file holding the same bytes, still unlinked."""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
path = os.path.join(tempfile.mkdtemp(prefix="ckpt-wronly-"), "log")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
content = b"written before the checkpoint\n" * 1000
os.write(fd, content)
os.unlink(path)
os.rmdir(os.path.dirname(path))
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
os.write(fd, b"after")
with open(f"/proc/self/fd/{fd}", "rb") as again:
    data = again.read()
t.check(data == content + b"after", f"the unlinked file holds {len(data)} bytes")
t.check(os.fstat(fd).st_nlink == 0, "the file has a name again")
t.passed()
