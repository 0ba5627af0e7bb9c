#!/usr/bin/env python3
"""Wall time of the command line on a small process: what a user pays per operation when
memory is not what dominates (start-up, imports, /proc scans).

    .venv/bin/python benchmarks/bench_small.py [--size 10M] [--repeat 10]
                                               [--engine before=/old/checkout --engine after=.]

Every round starts benchmarks/memhog.c holding SIZE bytes, times `jupyter-ckpt dump PID DIR
--kill` and `jupyter-ckpt restore DIR --detach` as a user would run them (a new interpreter
each, its bytecode cached as in an installed package; one warm-up round is not counted), and
has the restored memhog re-checksum its memory (it must say PASS). In the same round it times the bare interpreter start (`python -c pass`, site included), the floor no
Python command can go below. With --engine (repeatable) each source tree's command line is
timed in turn within every round. Run as root; needs gcc.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import build_memhog, parse_size, wait_status  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
CLI = [sys.executable, "-m", "jupyter_ckpt.cli"]
TARGET = 0.08  # seconds, issue 13
# As installed: bytecode cached (an environment that forbids writing it would time the compiler)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str], tree: Path = HERE.parent) -> tuple[tuple[float, float], subprocess.CompletedProcess]:
    """((wall seconds, CPU seconds of the command), its result). On a busy machine the CPU
    time is the steadier figure: the wall time includes waiting for a CPU."""
    t, c = time.perf_counter(), children_cpu()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tree, env=ENV)
    elapsed, cpu = time.perf_counter() - t, children_cpu() - c
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return (elapsed, cpu), proc


def one_round(memhog: str, size: int, workdir: str,
              engines: list[tuple[str, Path]]) -> dict[str, tuple[float, float]]:
    r = {"python": timed([sys.executable, "-c", "pass"])[0]}
    for label, tree in engines:
        for key, seconds in cycle(memhog, size, workdir, tree).items():
            r[f"{key} [{label}]" if len(engines) > 1 else key] = seconds
    return r


def cycle(memhog: str, size: int, workdir: str, tree: Path) -> dict[str, tuple[float, float]]:
    status = os.path.join(workdir, f"status-{time.monotonic_ns()}")
    image = os.path.join(workdir, f"image-{time.monotonic_ns()}")
    hog = subprocess.Popen([memhog, status, str(size)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r: dict[str, tuple[float, float]] = {}
    try:
        ready = wait_status(status, ("ready",), 60, hog.pid).split()
        if ready[0] != "ready":
            raise SystemExit(" ".join(ready))
        r["dump --kill"], _ = timed(CLI + ["dump", str(hog.pid), image, "--kill"], tree)
        hog.wait(timeout=30)
        r["restore --detach"], out = timed(CLI + ["restore", image, "--detach"], tree)
        pid = int(out.stdout.split()[-1])
        os.kill(pid, signal.SIGUSR1)
        verdict = wait_status(status, ("PASS", "FAIL"), 60, pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        if not (verdict.startswith("PASS") and verdict.split()[1] == ready[1]):
            raise SystemExit(f"restored memhog: {verdict}")
    finally:
        if hog.poll() is None:
            hog.kill()
            hog.wait()
        shutil.rmtree(image, ignore_errors=True)
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="10M")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--engine", action="append", dest="engines", metavar="LABEL=PATH",
                   help="time the command line of this source tree (repeatable)")
    args = p.parse_args()
    if ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    size = parse_size(args.size)
    workdir = tempfile.mkdtemp(prefix="ckpt-bench-small-")
    try:
        memhog = build_memhog(workdir)
        engines = [(spec.partition("=")[0], Path(spec.partition("=")[2]).resolve())
                   for spec in args.engines or [f"engine={HERE.parent}"]]
        one_round(memhog, size, workdir, engines)  # warm-up: bytecode caches, page cache
        rounds = [one_round(memhog, size, workdir, engines) for _ in range(args.repeat)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    python = min(r["python"][0] for r in rounds)
    print(f"\n== CLI on a {args.size} process, {len(rounds)} rounds (restored memory: PASS every round) ==")
    print(f"{'command':<40}{'best s':>8}{'median':>8}{'cpu s':>7}{'vs 0.08 s':>10}{'minus python':>13}")
    for key in rounds[0]:
        label = "python -c pass" if key == "python" else f"jupyter-ckpt {key}"
        times = [r[key][0] for r in rounds]
        best = min(times)
        cpu = statistics.median(r[key][1] for r in rounds)
        print(f"{label:<40}{best:8.3f}{statistics.median(times):8.3f}{cpu:7.3f}{best / TARGET:9.2f}x"
              f"{best - python:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
