"""Eight busy CPython threads sharing locks; after restore every invariant must still hold,
every thread must still be alive and progressing, with the same native thread ids.

    thread 0, 1   ping-pong a turn under a Condition (each round hands the turn over)
    thread 2      answers Event handoffs from the main thread (go -> ack)
    thread 3-7    spin on a shared counter under a Lock
Every thread bumps the shared total and its own counter in the same critical section, and
keeps a private count of its own, so total == sum(per) == sum(private) at any quiet point.
"""
import ctypes
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

N = 8
PR_SET_NAME = 15
libc = ctypes.CDLL(None, use_errno=True)
GUARD = 60.0  # seconds before a stuck wait reports FAIL instead of hanging forever

t = ckpt_test.Protocol()
lock = threading.Lock()
shared = {"total": 0}
per = [0] * N
private = [0] * N
native_at_start = [0] * N
native_now = [0] * N
recheck = threading.Event()
stop = threading.Event()
errors = []

cond = threading.Condition()
turn = {"who": 0, "rounds": 0}
pings = [0, 0]

go, ack = threading.Event(), threading.Event()
handoffs = {"n": 0}


def bump(i, mine):
    with lock:
        shared["total"] += 1
        per[i] += 1
        if per[i] != mine + 1:
            errors.append(f"thread {i}: shared slot {per[i]} != private {mine + 1}")
    return mine + 1


def worker(i):
    libc.prctl(PR_SET_NAME, f"busy-{i}".encode(), 0, 0, 0)  # the kernel's name, per thread
    native_at_start[i] = threading.get_native_id()
    mine = 0
    while not stop.is_set():
        if i < 2:
            with cond:
                while turn["who"] != i and not stop.is_set():
                    cond.wait()
                if stop.is_set():
                    break
                turn["rounds"] += 1
                pings[i] += 1
                turn["who"] = 1 - i
                cond.notify_all()
        elif i == 2 and go.is_set():
            go.clear()
            handoffs["n"] += 1
            ack.set()
        mine = bump(i, mine)
        if recheck.is_set():
            native_now[i] = threading.get_native_id()
    private[i] = mine


def wait_for(predicate, why):
    deadline = time.monotonic() + GUARD
    while not predicate():
        t.check(time.monotonic() < deadline, why)
        time.sleep(0.005)


def handoff(why):
    ack.clear()
    before = handoffs["n"]
    go.set()
    t.check(ack.wait(GUARD), why)
    t.check(handoffs["n"] == before + 1, f"handoff count {handoffs['n']}, expected {before + 1}")


workers = [threading.Thread(target=worker, args=(i,), name=f"busy-{i}") for i in range(N)]
for w in workers:
    w.start()
wait_for(lambda: all(native_at_start) and all(per), "threads did not start")
handoff("event handoff before the checkpoint got no answer")
t._status("tids " + " ".join(str(n) for n in native_at_start))
t.ready()

while not t.verify_requested:
    time.sleep(0.005)

# Still alive, still the same kernel threads, still progressing.
t.check(all(w.is_alive() for w in workers), "a worker thread died")
t.check(threading.active_count() == N + 1, f"{threading.active_count()} threads, expected {N + 1}")
t.check([w.native_id for w in workers] == native_at_start, "Thread.native_id changed")
recheck.set()
wait_for(lambda: all(native_now), "not every thread reported its native id after restore")
t.check(native_now == native_at_start,
        f"native ids after restore {native_now} != before {native_at_start}")
with lock:
    snapshot = list(per)
    t.check(shared["total"] == sum(per), f"total {shared['total']} != sum(per) {sum(per)}")
wait_for(lambda: all(per[i] > snapshot[i] for i in range(N)),
         "some thread makes no progress after restore")
with cond:
    rounds_before = turn["rounds"]
wait_for(lambda: turn["rounds"] > rounds_before + 10, "the Condition ping-pong stalled")
handoff("event handoff after restore got no answer")

stop.set()
with cond:
    cond.notify_all()
for w in workers:
    w.join(GUARD)
    t.check(not w.is_alive(), f"{w.name} did not stop")
t.check(not errors, f"lock invariant broken: {errors[:3]}")
t.check(shared["total"] == sum(per) == sum(private),
        f"total {shared['total']}, per {sum(per)}, private {sum(private)}")
t.check(per == private, f"per-thread counters {per} != private {private}")
t.check(turn["rounds"] == pings[0] + pings[1] and abs(pings[0] - pings[1]) <= 1,
        f"ping-pong rounds {turn['rounds']} pings {pings}")
t.passed()
