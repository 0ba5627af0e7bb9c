"""Incremental images (dump --parent): a second image after a small change stores only what
changed, restores on its own (it finds its base), and refuses to if its base changed."""
import json
import shutil
import sys

from conftest import HERE, run_cli, wait_until

PROGRAM = f"""
import hashlib, os, sys, time
sys.path.insert(0, {str(HERE)!r})
import ckpt_test
t = ckpt_test.Protocol()
data = bytearray(os.urandom(64 << 20))
step = open(os.path.join(os.path.dirname(t.path), "step"), "w")
t.ready()
changed = False
while not t.verify_requested:
    if not changed and os.path.exists(os.path.join(os.path.dirname(t.path), "change")):
        data[:len(data) // 100] = os.urandom(len(data) // 100)   # 1% of the buffer
        expected = hashlib.sha256(data).hexdigest()  # what the restored buffer must hash to
        changed = True
        step.write("changed"); step.flush()
    time.sleep(0.01)
t.check(changed and hashlib.sha256(data).hexdigest() == expected, "buffer content differs after restore")
t.passed()
"""


def test_second_image_stores_only_what_changed(programs, workdir):
    script = workdir / "prog.py"
    script.write_text(PROGRAM)
    prog = programs(sys.executable, script)
    first, second = workdir / "first", workdir / "second"
    run_cli("dump", prog.pid, first)
    (workdir / "change").write_text("")
    wait_until(lambda: (workdir / "step").exists() and (workdir / "step").read_text() == "changed")

    run_cli("dump", prog.pid, second, "--parent", first, "--kill")
    prog.reap()
    one = json.loads(run_cli("inspect", first, "--json").stdout)
    two = json.loads(run_cli("inspect", second, "--json").stdout)
    assert "page-compare" in two["dirty_tracking"]
    assert two["bytes_logical"] >= 64 << 20
    assert two["bytes_written"] <= 0.05 * one["bytes_written"], (one["bytes_written"], two["bytes_written"])

    moved = workdir / "moved"
    shutil.move(str(first), moved)
    out = run_cli("restore", second, "--detach", check=False)
    assert out.returncode != 0 and "builds on" in out.stderr and len(out.stderr.splitlines()) == 1
    shutil.move(str(moved), first)
    prog.restore(second)
    prog.verify()

