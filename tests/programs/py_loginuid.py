"""A process whose audit login uid is not the restorer's (zdtm loginuid): it must come back
with its own, not the one the restore inherited from the process restoring it."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

LOGINUID = 4242

t = ckpt_test.Protocol()
with open("/proc/self/loginuid", "w") as f:  # (as root, with CAP_AUDIT_CONTROL)
    f.write(str(LOGINUID))
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
with open("/proc/self/loginuid") as f:
    now = int(f.read())
t.check(now == LOGINUID, f"audit login uid {now}, not {LOGINUID}")
t.passed()
