"""A Python program restored lazily (restore --lazy) that forks the ways a notebook does,
while its memory is still coming in: multiprocessing (fork), subprocess, and numpy work in
threads. It starts as soon as it runs again (STATUS.go exists, see lazy_memory.c)."""
import hashlib
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
arrays = [np.random.default_rng(seed).random(4_000_000) for seed in range(4)]  # 4 x 32 MB
digests = [hashlib.sha256(a.tobytes()).hexdigest() for a in arrays]
blob = bytes(range(256)) * (64 << 12)  # 16 MiB of bytes
blob_digest = hashlib.sha256(blob).hexdigest()


def digest(i: int) -> str:
    return hashlib.sha256(arrays[i].tobytes()).hexdigest()


t.ready()
while not os.path.exists(t.path + ".go"):
    time.sleep(0.001)

ctx = multiprocessing.get_context("fork")
with ctx.Pool(2) as pool:
    forked = pool.map(digest, range(4))
results = [None] * 4
threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, digest(i))) for i in range(4)]
for th in threads:
    th.start()
out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
for th in threads:
    th.join()
t.check(forked == digests, "multiprocessing children saw other memory")
t.check(results == digests, "threads saw other memory")
t.check(out.stdout.strip() == "42", f"subprocess: {out!r}")
t.check(hashlib.sha256(blob).hexdigest() == blob_digest, "bytes object changed")
t.passed()
