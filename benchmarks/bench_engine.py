#!/usr/bin/env python3
"""Dump/restore throughput of the engine against plain-copy baselines, side by side.

    .venv/bin/python benchmarks/bench_engine.py [--sizes 256M,1G] [--dir /tmp --dir /dev/shm]
                                                [--repeat 3] [--profile] [--json out.json] [--lazy]

For every image directory and size it:
  1. measures baselines in this process: memcpy of SIZE bytes into fresh (never touched)
     memory and into warm (already faulted) memory, and writing SIZE bytes to a file in the
     image directory (page cache only, then the fsync on top);
  2. starts benchmarks/memhog.c holding SIZE bytes of random data, every page resident;
  3. dumps it once with jupyter_ckpt.engine.dump(pid, dir) (the process runs on; image thrown
     away) and once with kill=True, each in a worker process, and
     records the wall time, stats["freeze_ms"], the image size and a per-phase breakdown;
  4. restores it with jupyter_ckpt.engine.restore() in another worker, then asks the restored
     process to re-checksum its memory (it must report PASS); with --lazy, restores it once
     more with lazy=True (timing until it runs and until Restored.wait_pages() returns) and
     has it re-checksum again.

Ratios are throughput ratios: memcpy_time / op_time (1.0 = as fast as memcpy).
Fresh-memory costs dominate on VMs (the first touch of a page is expensive), and both dump
(fresh page cache) and restore (fresh anonymous memory) have to pay it, so "memcpy -> fresh"
is the honest bound; "memcpy -> warm" is the speed of light.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GiB = 1 << 30
PR_SET_CHILD_SUBREAPER = 36


# ------------------------------------------------------------------ helpers

def parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * mult)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def addr_of(buf) -> tuple[int, object]:
    anchor = ctypes.c_char.from_buffer(buf)
    return ctypes.addressof(anchor), anchor


def fresh_map(size: int) -> mmap.mmap:
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


# ------------------------------------------------------------------ baselines

class Baselines:
    """A SIZE-byte random source buffer kept for the whole run, plus a warm destination."""

    def __init__(self, size: int):
        self.size = size
        self.src = fresh_map(size)
        self.src_addr, self._a1 = addr_of(self.src)
        chunk = os.urandom(1 << 20)
        for off in range(0, size, len(chunk)):
            n = min(len(chunk), size - off)
            self.src[off:off + n] = chunk[:n]
        self.warm = fresh_map(size)
        self.warm_addr, self._a2 = addr_of(self.warm)
        ctypes.memset(self.warm_addr, 0, size)

    def memcpy_fresh(self) -> tuple[float, float]:
        dst = fresh_map(self.size)
        addr, anchor = addr_of(dst)
        t, c = time.perf_counter(), time.process_time()
        ctypes.memmove(addr, self.src_addr, self.size)
        elapsed, cpu = time.perf_counter() - t, time.process_time() - c
        del anchor
        dst.close()
        return elapsed, cpu

    def memcpy_warm(self) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        ctypes.memmove(self.warm_addr, self.src_addr, self.size)
        return time.perf_counter() - t, time.process_time() - c

    def write_file(self, directory: str) -> tuple[float, float, float]:
        """(seconds to write() into the page cache, its CPU seconds, seconds for the fsync)."""
        path = os.path.join(directory, f".bench-write-{os.getpid()}.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(self.src)
            t, c = time.perf_counter(), time.process_time()
            off = 0
            while off < self.size:
                off += os.write(fd, view[off:off + (64 << 20)])
            written, cpu = time.perf_counter() - t, time.process_time() - c
            t = time.perf_counter()
            os.fsync(fd)
            synced = time.perf_counter() - t
            view.release()
        finally:
            os.close(fd)
            os.unlink(path)
        return written, cpu, synced

    def close(self) -> None:
        del self._a1, self._a2
        self.src.close()
        self.warm.close()


# ------------------------------------------------------------------ workers (child processes)

DUMP_PHASES = [
    # (label, module (alternatives for other versions: a|b), attribute path); missing: skipped
    ("pre-copy (process running)", "jupyter_ckpt.engine.dumper|jupyter_ckpt.engine.dump", "_precopy"),
    ("freeze", "jupyter_ckpt.engine.dumper|jupyter_ckpt.engine.dump", "freeze"),
    ("collect (all resources)", "jupyter_ckpt.engine.dumper|jupyter_ckpt.engine.dump", "_collect"),
    ("memory.dump", "jupyter_ckpt.engine.resources.memory", "dump"),
    ("  pagemap scan", "jupyter_ckpt.engine.pagemap", "PageScanner.data_runs"),
    ("  blob map (fallocate+mmap)", "jupyter_ckpt.engine.image", "ImageWriter.map_blob"),
    ("  pre-copy: last pages (frozen)", "jupyter_ckpt.engine.precopy", "PreCopy.finish"),
    ("  read pages (process_vm_readv)", "jupyter_ckpt.engine.resources.memory", "_read_runs"),
    ("  hash+write blob", "jupyter_ckpt.engine.image", "BlobStream.write"),
    ("  seal blob (hash+msync)", "jupyter_ckpt.engine.image", "ImageWriter.seal_blob"),
    ("commit (hash adopted blobs, fsync, rename)", "jupyter_ckpt.engine.image", "ImageWriter.commit"),
    ("kill original", "jupyter_ckpt.engine.freeze", "FrozenTree.kill"),
]
RESTORE_PHASES = [
    ("load (manifest+verify)", "jupyter_ckpt.engine.restorer|jupyter_ckpt.engine.restore", "load"),
    ("  verify blobs (hash)", "jupyter_ckpt.engine.image", "ImageReader.verify"),
    ("spawn seed", "jupyter_ckpt.engine.restorer|jupyter_ckpt.engine.restore", "_spawn_seed"),
    ("memory.restore", "jupyter_ckpt.engine.resources.memory", "restore"),
    ("  write pages", "jupyter_ckpt.engine.resources.memory", "_write_pages"),
]


def _instrument(phases: list[tuple[str, str, str]]) -> dict[str, float]:
    """Wrap the named functions with timers; returns label -> accumulated seconds."""
    import functools
    import importlib

    acc: dict[str, float] = {}
    for label, modname, attr in phases:
        try:
            owner = None
            for candidate in modname.split("|"):
                try:
                    owner = importlib.import_module(candidate)
                    break
                except ImportError:
                    continue
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            orig = getattr(owner, name)
        except (ImportError, AttributeError):
            continue  # the engine changed shape: just skip this phase

        def wrap(fn, label=label):
            @functools.wraps(fn)
            def timed(*args, **kwargs):
                t = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    acc[label] = acc.get(label, 0.0) + time.perf_counter() - t
            return timed

        setattr(owner, name, wrap(orig))
    return acc


def _profiled(fn, enabled: bool):
    if not enabled:
        return fn(), None
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    result = prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
    return result, out.getvalue()


def cpu_seconds() -> float:
    """CPU time of this process so far, user + system (system includes the page faults and
    copies the kernel does for our process_vm_readv/writev calls)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker_dump(pid: int, image: str, profile: bool, precopy: str, kill: bool = True) -> dict:
    import inspect
    import jupyter_ckpt.engine as engine
    phases = _instrument(DUMP_PHASES)
    kwargs = {}
    if "precopy" in inspect.signature(engine.dump).parameters:
        kwargs["precopy"] = precopy == "on"
    elif precopy == "on":
        raise SystemExit("this engine has no pre-copy")
    t, c = time.perf_counter(), cpu_seconds()
    stats, prof = _profiled(lambda: engine.dump(pid, image, kill=kill, **kwargs), profile)
    return {"seconds": time.perf_counter() - t, "cpu": cpu_seconds() - c, "stats": stats,
            "phases": phases, "profile": prof}


def worker_restore(image: str, profile: bool, lazy: bool = False) -> dict:
    import jupyter_ckpt.engine as engine
    phases = _instrument(RESTORE_PHASES)
    t, c = time.perf_counter(), cpu_seconds()
    kwargs = {"lazy": True} if lazy else {}
    restored, prof = _profiled(lambda: engine.restore(image, stdio="null", **kwargs), profile)
    out = {"seconds": time.perf_counter() - t, "cpu": cpu_seconds() - c, "pid": restored.pid,
           "phases": phases, "profile": prof}
    if lazy:  # the process runs already; we serve its memory until all is in
        restored.wait_pages()
        out["pages_seconds"] = time.perf_counter() - t
        out["pages_cpu"] = cpu_seconds() - c
    return out


def run_worker(engine: str | None, *args: str) -> dict:
    env = dict(os.environ)
    if engine:  # benchmark another checkout of the engine (e.g. the previous commit)
        env["PYTHONPATH"] = engine + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True,
                          text=True, cwd=engine or REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {args[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ the subject process

def build_memhog(workdir: str) -> str:
    out = os.path.join(workdir, "memhog")
    subprocess.run(["gcc", "-O2", "-Wall", str(HERE / "memhog.c"), "-o", out], check=True)
    return out


def wait_status(path: str, prefixes: tuple[str, ...], timeout: float, pid: int) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefixes):
                    return line
        except FileNotFoundError:
            pass
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = (0, 0) if os.path.exists(f"/proc/{pid}") else (pid, -1)
        if done:
            why = (f"signal {os.WTERMSIG(status)}" if status > 0 and os.WIFSIGNALED(status)
                   else f"status {status}")
            return f"FAIL memhog {pid} ended ({why}) before saying {'/'.join(prefixes)}"
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for memhog {pid} to say {prefixes}")


def rss_bytes(pid: int, field: str = "Rss") -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def du_bytes(path: str) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of a directory's files."""
    apparent = allocated = 0
    for entry in os.scandir(path):
        st = entry.stat(follow_symlinks=False)
        apparent += st.st_size
        allocated += st.st_blocks * 512
    return apparent, allocated


def cpu_pressure() -> float:
    """The share of the last 10 s in which some runnable task waited for a CPU (PSI)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_idle(limit: float, threshold: float = 15.0) -> float:
    """On a shared machine: wait (at most `limit` s) for the CPU pressure to drop."""
    deadline = time.monotonic() + limit
    while cpu_pressure() > threshold and time.monotonic() < deadline:
        time.sleep(1)
    return cpu_pressure()


def one_round(memhog: str, size: int, directory: str, base: Baselines, engines: list, args) -> dict:
    r: dict = {"engines": {}}
    r["cpu_pressure"] = wait_idle(args.wait_idle) if args.wait_idle else cpu_pressure()
    # baselines, interleaved with the engine runs so they see the same machine state
    r["memcpy_fresh"], r["memcpy_fresh_cpu"] = base.memcpy_fresh()
    r["memcpy_warm"], r["memcpy_warm_cpu"] = base.memcpy_warm()
    r["write_file"], r["write_file_cpu"], r["fsync_file"] = base.write_file(directory)
    r["write_fsync"] = r["write_file"] + r["fsync_file"]
    r["write_fsync_cpu"] = r["write_file_cpu"]
    for label, engine, precopy in engines:
        r["engines"][label] = cycle(memhog, size, directory, engine, precopy, args)
    return r


def cycle(memhog: str, size: int, directory: str, engine: str | None, precopy: str, args) -> dict:
    """memhog -> dump --kill -> restore -> the restored memhog re-checks its memory."""
    r: dict = {}
    status = os.path.join(directory, f".bench-status-{os.getpid()}-{time.monotonic_ns()}")
    hog = subprocess.Popen([memhog, status, str(size), "thp" if args.thp else "nothp", str(args.workers)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    image = os.path.join(directory, f"bench-image-{hog.pid}-{time.monotonic_ns()}")
    profile = "1" if args.profile else "0"
    try:
        ready = wait_status(status, ("ready",), 600, hog.pid).split()
        if ready[0] != "ready":
            raise SystemExit(" ".join(ready))
        checksum = ready[1]
        r["rss"] = rss_bytes(hog.pid)
        r["thp"] = rss_bytes(hog.pid, "AnonHugePages")
        if args.live:  # dump without kill first: the process runs on once captured
            live = run_worker(engine, "dump", str(hog.pid), image + "-live", "0", precopy, "live")
            shutil.rmtree(image + "-live", ignore_errors=True)
            r["live_dump"] = live["seconds"]
            r["live_dump_cpu"] = live["cpu"]
            r["live_freeze_ms"] = live["stats"]["freeze_ms"]
        d = run_worker(engine, "dump", str(hog.pid), image, profile, precopy)
        hog.wait(timeout=60)  # dump --kill ended it; reap so its PID is free again
        r["dump"] = d["seconds"]
        r["dump_cpu"] = d["cpu"]
        r["freeze_ms"] = d["stats"]["freeze_ms"]
        r["bytes_written"] = d["stats"]["bytes_written"]
        r["image_apparent"], r["image_allocated"] = du_bytes(image)
        r["dump_phases"] = d["phases"]
        r["dump_profile"] = d["profile"]
        if args.drop_caches:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        rs = run_worker(engine, "restore", image, profile)
        r["restore"] = rs["seconds"]
        r["restore_cpu"] = rs["cpu"]
        r["restore_phases"] = rs["phases"]
        r["restore_profile"] = rs["profile"]
        pid = rs["pid"]
        try:
            r["restored_rss"] = rss_bytes(pid)
            r["restored_thp"] = rss_bytes(pid, "AnonHugePages")
            os.kill(pid, signal.SIGUSR1)  # restored process: re-checksum your memory
        except ProcessLookupError:
            r["restored_rss"] = r["restored_thp"] = 0
        verdict = wait_status(status, ("PASS", "FAIL"), 600, pid)
        try:
            os.waitpid(pid, 0)  # we are its subreaper
        except ChildProcessError:
            pass
        r["verified"] = verdict.startswith("PASS") and verdict.split()[1] == checksum
        r["verdict"] = verdict
        if args.lazy:  # again from the same image, lazily: time until it runs, until all is in
            Path(status).write_text("")
            lz = run_worker(engine, "restore", image, "0", "lazy")
            r["restore_lazy"], r["restore_lazy_cpu"] = lz["seconds"], lz["cpu"]
            r["restore_lazy_pages"], r["restore_lazy_pages_cpu"] = lz["pages_seconds"], lz["pages_cpu"]
            try:
                os.kill(lz["pid"], signal.SIGUSR1)
            except ProcessLookupError:
                pass
            verdict = wait_status(status, ("PASS", "FAIL"), 600, lz["pid"])
            try:
                os.waitpid(lz["pid"], 0)
            except ChildProcessError:
                pass
            r["verified"] = r["verified"] and verdict.startswith("PASS") and verdict.split()[1] == checksum
            if not verdict.startswith("PASS"):
                r["verdict"] = f"lazy: {verdict}"
    finally:
        if hog.poll() is None:
            hog.kill()
            hog.wait()
        shutil.rmtree(image, ignore_errors=True)
        shutil.rmtree(image + "-live", ignore_errors=True)
        try:
            os.unlink(status)
        except FileNotFoundError:
            pass
    return r


def prewarm(nbytes: int) -> float:
    """Touch and free nbytes of memory once, so that later "fresh" allocations in this run
    reuse pages the hypervisor already backs (the very first touch of guest memory can be
    10x slower still, and would otherwise land on whichever step happens to go first)."""
    t = time.perf_counter()
    m = fresh_map(nbytes)
    addr, anchor = addr_of(m)
    ctypes.memset(addr, 0, nbytes)
    del anchor
    m.close()
    return time.perf_counter() - t


# ------------------------------------------------------------------ report

def median(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def best(rounds: list[dict], key: str) -> float:
    return min(r[key] for r in rounds)


def median_phases(rounds: list[dict], key: str, order: list) -> list[tuple[str, float]]:
    labels = [label for label, *_ in order if any(label in r[key] for r in rounds)]
    return [(lb, statistics.median(r[key].get(lb, 0.0) for r in rounds)) for lb in labels]


def report(size: int, directory: str, fstype: str, rounds: list[dict], workers: int = 0) -> str:
    """Wall times: best and median of the rounds; CPU: best. Throughput and ratios use the
    best wall times (on a shared machine, noise only ever adds time)."""
    fresh, warm = best(rounds, "memcpy_fresh"), best(rounds, "memcpy_warm")
    workers = f" in {workers} worker processes" if workers else ""
    lines = [f"\n== {human(size)}{workers} via {directory} ({fstype}), {len(rounds)} round(s); CPU pressure "
             f"(PSI avg10) at round starts {min(r['cpu_pressure'] for r in rounds):.0f}"
             f"-{max(r['cpu_pressure'] for r in rounds):.0f}% ==",
             f"{'operation':<30}{'best s':>8}{'median':>8}{'cpu s':>7}{'GiB/s':>7}"
             f"{'vs memcpy fresh':>16}{'vs warm':>8}"]

    def row(name: str, runs: list[dict], key: str) -> None:
        t = best(runs, key)
        lines.append(f"{name:<30}{t:8.3f}{median(runs, key):8.3f}{best(runs, key + '_cpu'):7.3f}"
                     f"{size / t / GiB:7.2f}{fresh / t:15.2f}x{warm / t:7.2f}x")

    row("memcpy -> fresh memory", rounds, "memcpy_fresh")
    row("memcpy -> warm memory", rounds, "memcpy_warm")
    row("write() file (page cache)", rounds, "write_file")
    row("write() file + fsync", rounds, "write_fsync")
    labels = list(rounds[0]["engines"])
    for label in labels:
        runs = [r["engines"][label] for r in rounds]
        tag = f" [{label}]" if len(labels) > 1 else ""
        if "live_dump" in runs[0]:
            row(f"dump, process runs on{tag}", runs, "live_dump")
        row(f"dump --kill{tag}", runs, "dump")
        row(f"restore{tag}", runs, "restore")
        if "restore_lazy" in runs[0]:
            row(f"restore --lazy, runs{tag}", runs, "restore_lazy")
            row(f"restore --lazy, all in{tag}", runs, "restore_lazy_pages")
    for label in labels:
        runs = [r["engines"][label] for r in rounds]
        tag = f" [{label}]" if len(labels) > 1 else ""
        ok = all(r["verified"] for r in runs)
        lines.append("")
        if tag:
            lines.append(f"{label}:")
        if "live_freeze_ms" in runs[0]:
            lines.append(f"  {'frozen: dump, process runs on':<32}{best(runs, 'live_freeze_ms') / 1000:.3f} s best, "
                         f"{median(runs, 'live_freeze_ms') / 1000:.3f} s median")
        lines.append(f"  {'frozen: dump --kill':<32}{best(runs, 'freeze_ms') / 1000:.3f} s best, "
                     f"{median(runs, 'freeze_ms') / 1000:.3f} s median")
        lines.append(f"  {'subject RSS / image size':<32}{human(median(runs, 'rss'))} / "
                     f"{human(median(runs, 'image_apparent'))} "
                     f"({human(median(runs, 'image_allocated'))} allocated)")
        if median(runs, "thp") or median(runs, "restored_thp"):
            lines.append(f"  {'huge pages: subject / restored':<32}{human(median(runs, 'thp'))} / "
                         f"{human(median(runs, 'restored_thp'))}")
        lines.append(f"  {'restored memory checksum':<32}{'PASS' if ok else 'FAIL'}"
                     + ("" if ok else "  " + "; ".join(r["verdict"] for r in runs)))
        lines.append("  dump phases, median s: " + ", ".join(
            f"{lb.strip()} {v:.3f}" for lb, v in median_phases(runs, "dump_phases", DUMP_PHASES)))
        lines.append("  restore phases, median s: " + ", ".join(
            f"{lb.strip()} {v:.3f}" for lb, v in median_phases(runs, "restore_phases", RESTORE_PHASES)))
    return "\n".join(lines)


def fs_type(path: str) -> str:
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, typ, *_ = line.split()
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, kind = mnt, typ
    return kind


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *rest = sys.argv[2:]
        if kind == "dump":
            out = worker_dump(int(rest[0]), rest[1], rest[2] == "1", rest[3], rest[4:] != ["live"])
        else:
            out = worker_restore(rest[0], rest[1] == "1", rest[2:] == ["lazy"])
        print(json.dumps(out))
        return 0

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1G", help="comma-separated sizes, e.g. 256M,1G (default 1G)")
    p.add_argument("--dir", action="append", dest="dirs",
                   help="where images go (repeatable; default: a temporary directory in /tmp)")
    p.add_argument("--repeat", type=int, default=1, help="rounds per size and directory (median)")
    p.add_argument("--engine", action="append", dest="engines", metavar="[LABEL=]PATH",
                   help="benchmark the engine in this source tree instead of the installed one "
                        "(repeatable, to compare checkouts side by side in one run)")
    p.add_argument("--precopy", choices=("off", "on", "both"), default="both",
                   help="dump with the engine's pre-copy (memory copied while the process runs, "
                        "only what it dirtied copied while frozen) off, on, or both side by side "
                        "(default; 'on' is skipped for engines without it)")
    p.add_argument("--prewarm", default="4x", metavar="SIZE|Nx",
                   help="touch and free this much memory first (default 4x the largest size; 0: off)")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="before each round wait up to this long for CPU pressure (PSI) < 15%%")
    p.add_argument("--no-live", dest="live", action="store_false",
                   help="skip the extra dump without --kill (measures the freeze of a process "
                        "that runs on, whose image is committed after it is released)")
    p.add_argument("--thp", action="store_true", help="subject uses MADV_HUGEPAGE")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="the subject is a tree: a parent and N worker processes holding SIZE/N "
                        "each (the freeze of a whole tree)")
    p.add_argument("--drop-caches", action="store_true",
                   help="drop the page cache between dump and restore (cold restore; root)")
    p.add_argument("--profile", action="store_true", help="print cProfile tops of dump and restore")
    p.add_argument("--json", help="also write all raw numbers to this file")
    p.add_argument("--lazy", action="store_true",
                   help="also restore lazily: time until the process runs, and until all its "
                        "pages are in")
    args = p.parse_args()

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:  # restored processes come back to us
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    trees: list[tuple[str, str | None]] = []
    for spec in args.engines or []:
        label, _, path = spec.rpartition("=")
        path = os.path.abspath(path)
        trees.append((label or os.path.basename(path.rstrip("/")), path))
    trees = trees or [("engine", None)]
    tmp_dirs = [tempfile.mkdtemp(prefix="ckpt-bench-", dir=d) for d in args.dirs or ["/tmp"]]
    results = []
    try:
        memhog = build_memhog(tmp_dirs[0])
        print(f"machine: {os.cpu_count()} cpus, {human(os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))}"
              f" RAM, Linux {os.uname().release}, python {sys.version.split()[0]}", flush=True)
        engines: list[tuple[str, str | None, str]] = []  # (label, source tree, precopy)
        for label, path in trees:
            probe = subprocess.run(
                [sys.executable, "-c", "import inspect, jupyter_ckpt, jupyter_ckpt.engine as e; "
                 "print(jupyter_ckpt.__file__, 'precopy' in inspect.signature(e.dump).parameters)"],
                capture_output=True, text=True, cwd=path or REPO,
                env={**os.environ, **({"PYTHONPATH": path} if path else {})})
            where, has_precopy = probe.stdout.split()
            print(f"engine {label}: {os.path.dirname(os.path.dirname(where))}"
                  f"{' (has pre-copy)' if has_precopy == 'True' else ''}")
            if args.precopy in ("off", "both") or has_precopy != "True":
                engines.append((label, path, "off"))
            if args.precopy in ("on", "both") and has_precopy == "True":
                engines.append((f"{label}+precopy", path, "on"))
        warm = (int(float(args.prewarm[:-1]) * max(sizes)) if args.prewarm.endswith("x")
                else parse_size(args.prewarm))
        if warm:
            print(f"prewarm: touched {human(warm)} in {prewarm(warm):.2f} s", flush=True)
        for size in sizes:
            base = Baselines(size)
            try:
                for directory in tmp_dirs:
                    rounds = []
                    for i in range(args.repeat):
                        r = one_round(memhog, size, directory, base, engines, args)
                        rounds.append(r)
                        print(f"  [{human(size)} {directory} round {i + 1}, cpu pressure "
                              f"{r['cpu_pressure']:.0f}%] memcpy fresh "
                              f"{r['memcpy_fresh']:.3f}s warm {r['memcpy_warm']:.3f}s; " + "; ".join(
                                  f"{lb}: dump {e['dump']:.3f}s restore {e['restore']:.3f}s "
                                  f"{'PASS' if e['verified'] else 'FAIL'}"
                                  for lb, e in r["engines"].items()), flush=True)
                        if args.profile:
                            for lb, e in r["engines"].items():
                                print(f"---- {lb} dump profile\n" + e["dump_profile"])
                                print(f"---- {lb} restore profile\n" + e["restore_profile"], flush=True)
                    print(report(size, directory, fs_type(os.path.realpath(directory)), rounds, args.workers),
                          flush=True)
                    results.append({"size": size, "dir": directory, "rounds": rounds})
            finally:
                base.close()
    finally:
        for t in tmp_dirs:
            shutil.rmtree(t, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(e["verified"] for res in results for r in res["rounds"]
                    for e in r["engines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
