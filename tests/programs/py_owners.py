"""State that is not restored and must be refused by name, the program running on: a
parent-death signal on a thread (--pdeath) or signal-driven I/O on a pipe (--fown: O_ASYNC
with F_SETOWN and F_SETSIG)."""
import ctypes
import fcntl
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

PR_SET_PDEATHSIG = 1
t = ckpt_test.Protocol()
if "--pdeath" in sys.argv:
    libc = ctypes.CDLL(None, use_errno=True)
    set_up = threading.Event()

    def worker() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGUSR2, 0, 0, 0)
        set_up.set()
        while True:
            time.sleep(0.01)

    threading.Thread(target=worker, daemon=True).start()
    set_up.wait()
if "--fown" in sys.argv:
    r, w = os.pipe()
    signal.signal(signal.SIGRTMIN + 1, lambda *_: None)
    fcntl.fcntl(r, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(r, 10, signal.SIGRTMIN + 1)  # F_SETSIG
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
t.passed()
