"""Interpreter state that must survive as is: a half-consumed generator, closures and a
lambda, files open at an offset (read, write and a raw fd), temporary files (an O_TMPFILE
one that never had a name, and a mkstemp one, opened O_NOFOLLOW, unlinked since), a
background thread ticking."""
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
here = os.path.dirname(os.path.abspath(t.path))


def numbers():
    total = 0
    for i in range(10**6):
        total += i
        yield i, total


gen = numbers()
consumed = [next(gen) for _ in range(37)]
squares = (i * i for i in range(10**6))
for _ in range(5):
    next(squares)


def make_counter(start):
    count = start

    def increment(step=1):
        nonlocal count
        count += step
        return count
    return increment


counter = make_counter(100)
counter(), counter(5)  # now 106
scale = 7
affine = lambda x: x * scale + len(consumed)  # noqa: E731  (a closure over module state)
adders = [lambda x, k=k: x + k for k in range(5)]

data_path = os.path.join(here, "state-data.bin")
pattern = bytes(range(256)) * 64
with open(data_path, "wb") as f:
    f.write(pattern)
reader = open(data_path, "rb")
reader.read(1234)
raw = os.open(data_path, os.O_RDONLY)
os.lseek(raw, 4321, os.SEEK_SET)
log_path = os.path.join(here, "state-log.txt")
writer = open(log_path, "w")
writer.write("before\n")
writer.flush()

scratch = tempfile.TemporaryFile(dir=here)  # O_TMPFILE: no name, ever
scratch.write(b"scratch data")
named_fd, named_path = tempfile.mkstemp(dir=here)  # O_NOFOLLOW
os.write(named_fd, b"unlinked data")
os.unlink(named_path)

ticks = {"n": 0}


def tick():
    while True:
        ticks["n"] += 1
        time.sleep(0.001)


threading.Thread(target=tick, name="ticker", daemon=True).start()
while ticks["n"] == 0:
    time.sleep(0.001)
t.ready()

while not t.verify_requested:
    time.sleep(0.002)

t.check(next(gen) == (37, sum(range(38))), "generator lost its place")
t.check(next(squares) == 25, "generator expression lost its place")
t.check(counter() == 107, "closure lost its cell")
t.check(affine(3) == 21 + 37, "lambda closure broke")
t.check([a(10) for a in adders] == [10, 11, 12, 13, 14], "default-arg lambdas broke")
t.check(reader.tell() == 1234, f"buffered reader at {reader.tell()}, expected 1234")
t.check(reader.read(16) == pattern[1234:1250], "buffered reader read the wrong bytes")
t.check(os.lseek(raw, 0, os.SEEK_CUR) == 4321, "raw fd offset changed")
t.check(os.read(raw, 8) == pattern[4321:4329], "raw fd read the wrong bytes")
writer.write("after\n")
writer.close()
with open(log_path) as f:
    content = f.read()
t.check(content == "before\nafter\n", f"log file holds {content!r}")
scratch.seek(0)
t.check(scratch.read() == b"scratch data", "the O_TMPFILE file lost its content")
scratch.write(b" and more")
t.check(os.pread(named_fd, 100, 0) == b"unlinked data", "the unlinked mkstemp file lost its content")
start = ticks["n"]
deadline = time.monotonic() + 60
while ticks["n"] < start + 20:
    t.check(time.monotonic() < deadline, "background thread stopped ticking")
    time.sleep(0.001)
t.passed()
