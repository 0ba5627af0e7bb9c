"""The Python side of the test protocol (see programs/ckpt_test.h): for Python test programs.

    import ckpt_test
    t = ckpt_test.Protocol()      # status file = last argument; installs SIGUSR1
    ... set up state ...
    t.ready()
    while not t.verify_requested: ... keep working ...
    t.check(condition, "why")   # FAIL and exit 1 if false
    t.passed()
"""
import signal
import sys


class Protocol:
    def __init__(self) -> None:
        self.path = sys.argv[-1]
        self.verify_requested = False
        signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_usr1(self, signum, frame) -> None:
        self.verify_requested = True

    def _status(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def ready(self) -> None:
        self._status("ready")

    def check(self, condition: bool, why: str) -> None:
        if not condition:
            self._status(f"FAIL {why}")
            sys.exit(1)

    def passed(self) -> None:
        self._status("PASS")
        sys.exit(0)
