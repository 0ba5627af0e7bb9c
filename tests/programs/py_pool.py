"""multiprocessing as notebooks use it: a Pool of forked workers (fed through pipes, guarded
by POSIX semaphores that live in unlinked /dev/shm files) and a shared Value with its lock
(an arena in another such file). After restore the same workers compute again, and the
counter they share still counts across processes."""
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
fork = mp.get_context("fork")
counter = fork.Value("i", 0)


def work(x: int) -> tuple[int, int]:
    with counter.get_lock():
        counter.value += 1
    return x * x, os.getpid()


pool = fork.Pool(3)
first = pool.map(work, range(30))
workers = sorted(p.pid for p in pool._pool)
t.check(counter.value == 30, f"counter {counter.value} before the checkpoint")
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

second = pool.map(work, range(30))
t.check([square for square, _ in second] == [x * x for x in range(30)], f"results {second}")
t.check(counter.value == 60, f"counter {counter.value}: the workers' increments were lost")
t.check(sorted(p.pid for p in pool._pool) == workers, "the pool replaced its workers")
t.check({pid for _, pid in second} <= set(workers), "work done outside the pool")
pool.close()
pool.join()
t.passed()
