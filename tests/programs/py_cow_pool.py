"""A forked multiprocessing Pool whose workers still share, copy-on-write, 32 MiB that the
parent wrote before forking them (data loaded once, then used by forked workers). Before
the checkpoint and after the restore, the workers read it (their results prove the content)
and the parent checks that every page of it is on the same page frame in each worker as in
itself (/proc/PID/pagemap, as root): shared, not one copy per process."""
import ctypes
import hashlib
import multiprocessing as mp
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
t = ckpt_test.Protocol()
data = bytearray(hashlib.shake_256(b"cow").digest(1 << 20) * 32)
digest = hashlib.sha256(data).hexdigest()
address = ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))
first, last = -(-address // PAGE), (address + len(data)) // PAGE  # whole pages of it


def frames(pid: int) -> list[int]:
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(first * 8)
        entries = struct.unpack(f"<{last - first}Q", f.read((last - first) * 8))
    return [e & ((1 << 55) - 1) if e >> 63 else 0 for e in entries]


def work(_: int) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), os.getpid()


def check_round(when: str) -> None:
    results = pool.map(work, range(12), chunksize=1)
    t.check({d for d, _ in results} == {digest}, f"{when}: a worker sees other data")
    ours = frames(os.getpid())
    t.check(all(ours), f"{when}: no frame numbers (not root?)")
    for worker in sorted(p.pid for p in pool._pool):
        theirs = frames(worker)
        apart = sum(a != b for a, b in zip(ours, theirs))
        t.check(apart == 0, f"{when}: worker {worker} has {apart} of {len(ours)} pages of its own")


pool = mp.get_context("fork").Pool(3)
check_round("before the checkpoint")
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
check_round("after the restore")
pool.close()
pool.join()
t.passed()
