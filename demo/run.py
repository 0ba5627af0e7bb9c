"""jupyter-ckpt demo: checkpoint a live Python process holding notebook-like state, kill it,
restore it, and ask the restored process whether its state survived.

    scripts/demo            (sets up .venv, then runs this)
    python demo/run.py [--keep]

The process is a minimal kernel (demo/minikernel.py) that runs cells sent to it; see
demo/kernel.py for how a real Jupyter kernel would take its place.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel import JupyterKernel, KernelError, MiniKernel, alive  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
CAP_SYS_PTRACE, CAP_CHECKPOINT_RESTORE = 19, 40
ROWS = 200_000  # lines in the data file the kernel reads from (about 2.6 MB)

SETUP_CELLS = [
    "import hashlib, itertools, os, threading, time",
    # the array cell is chosen in main(): numpy if the venv has it
    None,
    "gen = (n * n for n in itertools.count())   # a generator, half consumed\n"
    "[next(gen) for _ in range(5)]",
    "square = lambda x: x * x",
    "f = open('measurements.csv')               # a file we are part-way through\n"
    "header = f.readline()\n"
    "rows = [f.readline() for _ in range(1000)]\n"
    "rows[-1]",
    "ticks = 0\n"
    "def tick():                                # a background thread, always busy\n"
    "    global ticks\n"
    "    while True:\n"
    "        ticks += 1\n"
    "        time.sleep(0.01)\n"
    "threading.Thread(target=tick, name='ticker', daemon=True).start()",
]
NUMPY_CELL = ("import numpy as np\n"
              "a = np.random.default_rng(7).standard_normal((1024, 1024))   # 8 MiB of data")
ARRAY_CELL = ("import array, random                  # (numpy not installed: a stdlib array)\n"
              "rng = random.Random(7)\n"
              "a = array.array('d', (rng.gauss(0, 1) for _ in range(1 << 20)))   # 8 MiB")
THREADS = "len(threading.enumerate()), hashlib.sha256(repr(sorted(t.name for t in threading.enumerate())).encode()).hexdigest()[:8]"
CHECKSUM = "hashlib.sha256(memoryview(a).cast('B')).hexdigest()[:16]"


class DemoFailed(Exception):
    pass


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, text: str) -> None:
    say(f"\n[{n}] {text}")


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-ckpt")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyter_ckpt"]


def run_cli(*args: str) -> str:
    say(f"    $ jupyter-ckpt {' '.join(args)}")
    proc = subprocess.run(cli() + list(args), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DemoFailed(f"jupyter-ckpt {args[0]} exited {proc.returncode}:\n"
                         f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def indent(text: str, prefix: str = "      ") -> str:
    return textwrap.indent(text.rstrip("\n"), prefix)


def preflight() -> None:
    """Fail early, with the reason, where the engine cannot work."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise DemoFailed("jupyter-ckpt runs on Linux x86_64 only")
    version = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    if version < (6, 7):
        raise DemoFailed(f"Linux {platform.release()} is too old: PAGEMAP_SCAN needs >= 6.7")
    if os.geteuid() != 0:
        with open("/proc/self/status") as f:
            caps = int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
        if not (caps >> CAP_SYS_PTRACE & 1 and caps >> CAP_CHECKPOINT_RESTORE & 1):
            raise DemoFailed("run as root (or with CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE)")


def make_data(workdir: Path) -> None:
    with open(workdir / "measurements.csv", "w") as f:
        f.write("n,n_squared\n")
        f.writelines(f"{n},{n * n}\n" for n in range(1, ROWS + 1))


def run_cells(kernel: MiniKernel | JupyterKernel, cells: list[str]) -> None:
    for number, code in enumerate(cells, 1):
        lines = code.splitlines()
        say(f"    In [{number}]: {lines[0]}")
        for line in lines[1:]:
            say(f"    {'':>{len(str(number)) + 5}}  {line}")
        result = kernel.execute(code)
        if result is not None:
            say(f"   Out[{number}]: {result}")


def demo(workdir: Path, kernel_kind: str) -> bool:
    have_numpy = importlib.util.find_spec("numpy") is not None
    cells = [c if c is not None else (NUMPY_CELL if have_numpy else ARRAY_CELL) for c in SETUP_CELLS]
    make_data(workdir)
    image = workdir / "image"
    # Restored processes outlive the restorer (restore --detach); as a subreaper we become
    # their parent instead of init, and can collect them at the end.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    kernel = JupyterKernel(workdir) if kernel_kind == "jupyter" else MiniKernel(workdir)
    try:
        pid = kernel.start()
        what = "an ipykernel" if kernel_kind == "jupyter" else "a kernel-like worker process"
        step(1, f"Started {what}, pid {pid}, and ran some cells in it:")
        run_cells(kernel, cells)
        ask = kernel.execute
        time.sleep(0.2)  # let the ticker tick a little
        before = {
            "pid": ask("os.getpid()"),
            "parent": ask("os.getppid()"),
            "threads": ask(THREADS),
            "checksum": ask(CHECKSUM),
            "square": ask("square(12)"),
            "offset": ask("f.tell(), os.lseek(f.fileno(), 0, os.SEEK_CUR)"),
            "ticks": ask("ticks"),
        }

        step(2, "Checkpoint it, then kill it (--kill ends it once the image is complete; "
                "--tcp-close: its ZeroMQ connections come back reset, and the client reconnects):")
        say(indent(run_cli("check", str(pid), "--tcp-close")))
        say(indent(run_cli("dump", str(pid), str(image), "--kill", "--tcp-close")))
        kernel.reap()  # we were its parent: collect it so its pid is free again
        try:
            os.kill(pid, 0)
            gone = f"pid {pid} still exists!"
        except ProcessLookupError:
            gone = f"pid {pid}: no such process"
        say(f"    the process is gone: kill -0 {pid} -> {gone}")
        if alive(pid):
            raise DemoFailed(f"pid {pid} survived dump --kill")

        step(3, "The image on disk:")
        say(indent(run_cli("inspect", str(image))))

        step(4, "Restore it (--detach: return once it runs, print its pid):")
        restored = int(run_cli("restore", str(image), "--detach").split()[-1])
        say(f"      {restored}")
        say("    its parent was the restorer, which has now exited; it is re-parented to this\n"
            "    demo, which made itself a child subreaper (else it would go to init)")
        kernel.pid = restored
        kernel.reconnect()

        step(5, "Ask the restored process about its state:")
        t1 = int(ask("ticks"))
        time.sleep(0.3)
        t2 = int(ask("ticks"))
        rows = [
            ("pid", before["pid"], ask("os.getpid()"), None),
            ("parent pid", before["parent"], ask("os.getppid()"), "(this demo)"),
            ("threads (names)", before["threads"], ask(THREADS), None),
            ("array checksum", before["checksum"], ask(CHECKSUM), None),
            ("next(gen)", "(25 next)", ask("next(gen)"), "25"),
            ("square(12)", before["square"], ask("square(12)"), None),
            ("file offset (tell, lseek)", before["offset"],
             ask("f.tell(), os.lseek(f.fileno(), 0, os.SEEK_CUR)"), None),
            ("next line of the file", "(row 1001 next)", ask("f.readline()"), repr("1001,1002001\n")),
            ("ticker thread", f"ticks={before['ticks']}", f"ticks={t1}, 0.3 s later {t2}",
             "(still ticking)" if t2 > t1 >= int(before["ticks"]) else "NOT ticking"),
        ]
        ok_all = True
        say(f"    {'':<26} {'before the dump':<26} {'after the restore':<28}")
        for label, old, new, expect in rows:
            if label == "parent pid":
                ok = int(new) == os.getpid()
            elif label == "ticker thread":
                ok = expect == "(still ticking)"
            else:
                ok = new == (expect if expect is not None else old)
            ok_all &= ok
            note = "ok" if ok else "DIFFERENT"
            if label in ("parent pid", "ticker thread") and ok:
                note = f"ok {expect}"
            say(f"    {label:<26} {str(old):<26} {str(new):<28} {note}")
        return ok_all
    finally:
        kernel.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory and image")
    parser.add_argument("--kernel", choices=("mini", "jupyter"), default="jupyter",
                        help="mini: demo/minikernel.py over FIFOs (default); "
                             "jupyter: a real ipykernel via jupyter_client")
    args = parser.parse_args()
    say("jupyter-ckpt demo: checkpoint a live Python process, kill it, bring it back.")
    workdir = Path(tempfile.mkdtemp(prefix="jupyter-ckpt-demo-"))
    passed: bool | None = None  # None: the demo could not finish
    try:
        preflight()
        passed = demo(workdir, args.kernel)
    except (DemoFailed, KernelError) as err:
        say(f"\ndemo FAILED: {err}")
        log = workdir / "kernel.log"
        if log.exists() and log.stat().st_size:
            say("kernel log (last lines):\n" + indent(log.read_text(errors="replace")[-1500:], "    "))
    finally:
        if args.keep or not passed:
            say(f"\n(work directory and image kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if passed:
        say("\nEverything survived: same pid, same memory; the generator, the lambda, the open "
            "file and the thread carried on.")
        return 0
    if passed is False:
        say("\nSome state did not survive the restore (see DIFFERENT above).")
    return 1


if __name__ == "__main__":
    sys.exit(main())
