"""The smallest dump -> kill -> restore cycle, for a C program and a Python one."""
import sys

from conftest import HERE, checkpoint_cycle


def test_c_counter(cc, programs, workdir):
    prog = programs(cc("counter"))
    checkpoint_cycle(prog, workdir / "image")


def test_python_counter(programs, workdir):
    script = workdir / "counter.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import ckpt_test\n"
        "t = ckpt_test.Protocol()\n"
        "n = 0\n"
        "gen = (i * i for i in range(10**9))\n"
        "first = [next(gen) for _ in range(5)]\n"
        "t.ready()\n"
        "while not t.verify_requested:\n"
        "    n += 1\n"
        "    time.sleep(0.001)\n"
        "t.check(next(gen) == 25, 'generator lost its place')\n"
        "t.check(n > 0, 'loop never ran')\n"
        "t.passed()\n")
    prog = programs(sys.executable, script)
    checkpoint_cycle(prog, workdir / "image")
