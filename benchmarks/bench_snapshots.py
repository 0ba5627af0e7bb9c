#!/usr/bin/env python3
"""Snapshot benchmark (issue 6): real ipykernels holding numpy state, dumped, stored, restored.

    .venv/bin/python benchmarks/bench_snapshots.py [--sizes 1G,4G] [--half-zero 1G] [--quick]
                                                   [--dir /tmp] [--no-dill] [--json out.json]

Cases: an idle kernel; for every size a kernel holding SIZE of random float64 arrays;
for the --half-zero sizes a kernel holding SIZE/2 of np.zeros + SIZE/2 random; for the first
random size also a second snapshot after changing 1% of the array (dump(parent=first image),
then put into the same SnapshotStore as the first).

Per case, in this process (the kernel's parent, so restore works: ipykernel exits if its
parent PID changes): engine.dump(precopy=True) -> freeze ms, dump s, image bytes;
engine.dump(precopy=False) (the previous behaviour); SnapshotStore.put_image -> new (zstd)
bytes in the store; dill.dump_session inside the kernel (time, peak RSS growth via
/proc/PID/status VmHWM after resetting it with clear_refs 5) and dill.load_session in a fresh
interpreter (time); kill; engine.restore -> restore s; the restored kernel must answer with
the same array checksum.

Baselines in the same run: memcpy of SIZE bytes into fresh (never touched) memory and into
warm memory, numpy copyto from a warm source. dill is a benchmark-only dependency
(pip install dill).
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import jupyter_client  # noqa: E402

from jupyter_ckpt import engine  # noqa: E402
from jupyter_ckpt.store import SnapshotStore  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


def parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * mult)


def label(n: int) -> str:
    return f"{n / GiB:g}G" if n >= GiB else f"{n / MiB:g}M"


def loadavg() -> str:
    return open("/proc/loadavg").read().split(" ")[0:3].__str__()


def status_kib(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------ baselines

def memcpy_baseline(size: int) -> dict[str, float]:
    """Seconds to copy `size` bytes from warm memory into fresh memory and into warm memory."""
    src = np.frombuffer(mmap.mmap(-1, size), dtype=np.uint8)
    src[:] = 1  # fault it in
    out = {}
    fresh_map = mmap.mmap(-1, size)
    dst = np.frombuffer(fresh_map, dtype=np.uint8)
    t = time.perf_counter()
    np.copyto(dst, src)
    out["fresh_s"] = time.perf_counter() - t
    t = time.perf_counter()
    np.copyto(dst, src)
    out["warm_s"] = time.perf_counter() - t
    del dst
    fresh_map.close()
    # fresh memory the way numpy allocates it (large arrays get MADV_HUGEPAGE)
    dst = np.empty(size, dtype=np.uint8)
    t = time.perf_counter()
    np.copyto(dst, src)
    out["fresh_np_s"] = time.perf_counter() - t
    del dst, src
    # the ratio baseline: the faster (stricter) of the two fresh copies
    out["fresh_best_s"] = min(out["fresh_s"], out["fresh_np_s"])
    return out


# ------------------------------------------------------------------ kernel

class Kernel:
    def __init__(self, workdir: Path):
        self.log = open(workdir / "kernel.log", "ab")
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(stdout=self.log, stderr=self.log, cwd=str(workdir))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.pid = self.km.provisioner.process.pid

    def run(self, code: str, timeout: float = 600) -> str:
        out: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        text = "".join(out)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel error: {text}")
        return text

    def wait_for_output(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if "alive" in self.run("print('alive')", timeout=5):
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError("restored kernel never produced output")

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    def close(self, pid: int) -> None:
        try:
            self.kc.stop_channels()
        except Exception:
            pass
        self.kill(pid)
        try:
            self.km.cleanup_resources()
        except Exception:
            pass
        self.log.close()


SETUP = {
    "idle": "import numpy as np\nstate = []\n",
    "random": (
        "import numpy as np\n"
        "rng = np.random.default_rng({seed})\n"
        "state = [rng.random({n} // 8)]\n"),
    "halfzero": (
        "import numpy as np\n"
        "rng = np.random.default_rng({seed})\n"
        "state = [np.zeros({n} // 16), rng.random({n} // 16)]\n"
        "state[0][:] = 0.0  # make the zero half resident, as a kernel that computed it would\n"),
}
CHECKSUM = "print('SUM', sum(float(a[::4096].sum()) for a in state), sum(a.nbytes for a in state))"


def checksum(k: "Kernel") -> str:
    """The SUM line only: a restored kernel may also print IPython's history-database warning
    ("Session/line number was not unique in database"): its history.sqlite moved on after
    the snapshot."""
    return next((l for l in k.run(CHECKSUM).splitlines() if l.startswith("SUM")), "")

DILL_DUMP = r"""
import dill, time, os, gc
open('/proc/self/clear_refs', 'w').write('5')
rss0 = int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])
t = time.perf_counter()
dill.dump_session({path!r})
dt = time.perf_counter() - t
hwm = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
print('DILL', dt, (hwm - rss0) * 1024, os.path.getsize({path!r}))
"""
DILL_LOAD = r"""
import sys, time
import dill
def kib(key):
    return int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1])
rss0 = kib('VmRSS')
t = time.perf_counter()
dill.load_session(sys.argv[1])
dt = time.perf_counter() - t
print('DILL', dt, (kib('VmHWM') - rss0) * 1024, sum(a.nbytes for a in state), kib('VmRSS') * 1024)
"""  # in a fresh interpreter (like a restore): time and peak RSS growth (VmHWM: ru_maxrss
# would start at this process's high-water mark, inherited through fork)


def own_hwm_reset() -> int:
    """Reset this process's VmHWM to its VmRSS (clear_refs 5); returns VmRSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_kib(os.getpid(), "VmRSS") * 1024


class AnonPeak:
    """Peak growth of this process's private memory (RssAnon) while in the `with` block,
    sampled every 2 ms. VmHWM also counts the image blob we map to write or read it: page
    cache, shared and reclaimable, not memory the dump or restore holds on its own."""

    def __enter__(self) -> "AnonPeak":
        import threading
        self.base = self.peak = status_kib(os.getpid(), "RssAnon") * 1024
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, status_kib(os.getpid(), "RssAnon") * 1024)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_kib(os.getpid(), "RssAnon") * 1024)

    @property
    def growth(self) -> int:
        return self.peak - self.base


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def dir_disk(path: Path) -> int:
    """Allocated bytes (holes not counted)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def run_case(name: str, kind: str, size: int, base: Path, args, incremental: bool,
             seed: int) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="case-", dir=base))
    store = SnapshotStore(str(work / "store"))  # one store per case (the +1% image joins it)
    rows: list[dict] = []
    row: dict = {"case": name, "size": size, "load_before": loadavg()}
    k = Kernel(work)
    pid = k.pid
    try:
        t = time.perf_counter()
        k.run(SETUP[kind].format(n=size, seed=seed))
        row["setup_s"] = time.perf_counter() - t
        want = checksum(k)
        row["rss_bytes"] = status_kib(pid, "VmRSS") * 1024

        # previous behaviour: precopy off (image thrown away)
        img0 = work / "img-noprecopy"
        t = time.perf_counter()
        st0 = engine.dump(pid, str(img0), precopy=False, tcp_close=True)
        row["noprecopy_dump_s"] = time.perf_counter() - t
        row["noprecopy_freeze_ms"] = st0["freeze_ms"]
        shutil.rmtree(img0)
        k.run("print('ok')")

        # pre-copy (default)
        img1 = work / "img1"
        k_hwm0 = status_kib(pid, "VmHWM")
        rss0 = own_hwm_reset()
        t = time.perf_counter()
        with AnonPeak() as anon:
            st = engine.dump(pid, str(img1), precopy=True, tcp_close=True)
        row["dump_s"] = time.perf_counter() - t
        row["dumper_peak"] = status_kib(os.getpid(), "VmHWM") * 1024 - rss0  # this process
        row["dumper_anon_peak"] = anon.growth
        row["kernel_hwm_growth"] = (status_kib(pid, "VmHWM") - k_hwm0) * 1024
        row["freeze_ms"] = st["freeze_ms"]
        row["dirty_tracking"] = st.get("dirty_tracking")
        row["bytes_logical"] = st.get("bytes_logical")
        row["bytes_written"] = st.get("bytes_written")
        row["image_bytes"] = dir_bytes(img1)
        row["image_disk_bytes"] = dir_disk(img1)
        t = time.perf_counter()
        info = store.put_image(str(img1), {"case": name})
        row["put_s"] = time.perf_counter() - t
        row["store_new_bytes"] = info.new_bytes
        row["store_stored_bytes"] = info.stored_bytes
        row["store_zero_bytes"] = info.zero_bytes
        row["store_logical_bytes"] = info.logical_bytes
        k.run("print('ok')")

        if incremental:
            inc: dict = {"case": f"{name} +1% (parent)", "size": size}
            k.run("a = state[-1]; n = a.size // 100; a[:n] = rng.random(n)\n")  # 1% of the array
            want_inc = checksum(k)
            img2 = work / "img2"
            t = time.perf_counter()
            st2 = engine.dump(pid, str(img2), precopy=True, parent=str(img1), tcp_close=True)
            inc["dump_s"] = time.perf_counter() - t
            inc["freeze_ms"] = st2["freeze_ms"]
            inc["dirty_tracking"] = st2.get("dirty_tracking")
            inc["bytes_logical"] = st2.get("bytes_logical")
            inc["bytes_written"] = st2.get("bytes_written")
            inc["bytes_shared_with_parent"] = st2.get("bytes_shared_with_parent")
            inc["image_bytes"] = dir_bytes(img2)
            t = time.perf_counter()
            info2 = store.put_image(str(img2), {"case": inc["case"]})
            inc["put_s"] = time.perf_counter() - t
            inc["store_new_bytes"] = info2.new_bytes
            inc["store_stored_bytes"] = info2.stored_bytes
            inc["store_zero_bytes"] = info2.zero_bytes
            inc["store_logical_bytes"] = info2.logical_bytes
            # a full (non-incremental) second dump, for comparison
            img2f = work / "img2-full"
            engine.dump(pid, str(img2f), precopy=True, tcp_close=True)
            inc["full_second_image_bytes"] = dir_bytes(img2f)
            shutil.rmtree(img2f)
            # restore the incremental image (needs its parent) and check it
            k.kill(pid)
            t = time.perf_counter()
            r = engine.restore(str(img2))
            inc["restore_s"] = time.perf_counter() - t
            pid = r.pid
            k.wait_for_output()
            got = checksum(k)
            inc["restore_ok"] = got == want_inc
            inc["restore_checked_s"] = time.perf_counter() - t
            rows.append(inc)

        if args.dill and kind != "idle" or args.dill_idle:
            pkl = work / "session.pkl"
            try:
                out = k.run(DILL_DUMP.format(path=str(pkl))).split()
                row["dill_dump_s"], row["dill_dump_peak"] = float(out[1]), int(out[2])
                row["dill_file_bytes"] = int(out[3])
                import subprocess
                out = subprocess.run([sys.executable, "-c", DILL_LOAD, str(pkl)], check=True,
                                     capture_output=True, text=True, cwd=str(work)).stdout.split()
                row["dill_load_s"], row["dill_load_peak"] = float(out[1]), int(out[2])
            except Exception as err:  # noqa: BLE001
                row["dill_error"] = str(err).strip().splitlines()[-1][:200]
            if pkl.exists():
                pkl.unlink()

        # restore the first (full) image
        k.kill(pid)
        rss0 = own_hwm_reset()
        t = time.perf_counter()
        try:
            with AnonPeak() as anon:
                r = engine.restore(str(img1))
        except Exception as err:  # noqa: BLE001
            row["restore_error"] = str(err)[:200]
            print(f"RESTORE FAILED: {err}", flush=True)
            row["load_after"] = loadavg()
            rows.insert(0, row)
            return rows
        row["restore_s"] = time.perf_counter() - t
        row["restorer_peak"] = status_kib(os.getpid(), "VmHWM") * 1024 - rss0
        row["restorer_anon_peak"] = anon.growth
        pid = r.pid
        row["restored_rss"] = status_kib(pid, "VmRSS") * 1024
        k.wait_for_output()
        got = checksum(k)
        row["restore_ok"] = got == want
        if got != want:
            row["restore_want"], row["restore_got"] = want, got
        row["restore_checked_s"] = time.perf_counter() - t
        row["load_after"] = loadavg()
    finally:
        k.close(pid)
        shutil.rmtree(work, ignore_errors=True)
    rows.insert(0, row)
    return rows


# ------------------------------------------------------------------ report

def fmt_rows(rows: list[dict], memcpy: dict[int, dict]) -> str:
    hdr = ("| case | freeze ms (pre-copy) | freeze ms (no pre-copy) | dump s | dump GB/s (x memcpy fresh) "
           "| no-pre-copy dump s | image bytes | store new bytes (zstd) | restore s | restore GB/s (x memcpy fresh) "
           "| dill dump s / peak | dill load s | our dump / restore peak (private memory) | restored ok |")
    lines = [hdr, "|" + "---|" * hdr.count(" | ").__add__(1)]
    for r in rows:
        data = r["size"]
        mc = memcpy.get(r["size"])
        mc_rate = data / mc["fresh_best_s"] / 1e9 if mc and data else None

        def rate(sec):
            if not data or not sec:
                return "-"
            g = data / sec / 1e9
            return f"{g:.2f}" + (f" ({g / mc_rate:.2f}x)" if mc_rate else "")

        dill_d = (f"{r['dill_dump_s']:.2f} / {r['dill_dump_peak'] / MiB:.0f} MiB" if "dill_dump_s" in r
                  else ("failed: " + r["dill_error"][:60] if "dill_error" in r else "-"))
        # (dill_load_peak stays in --json only: VmHWM deltas of load_session came out ~0 or
        # negative, so it is not a trustworthy number; see docs/benchmarks.md)
        dill_l = f"{r['dill_load_s']:.2f}" if "dill_load_s" in r else "-"
        lines.append(
            f"| {r['case']} | {r['freeze_ms']:.0f} | "
            f"{r['noprecopy_freeze_ms']:.0f} | " if "noprecopy_freeze_ms" in r else
            f"| {r['case']} | {r['freeze_ms']:.0f} | - | ")
        lines[-1] += (
            f"{r['dump_s']:.2f} | {rate(r['dump_s'])} | "
            f"{r['noprecopy_dump_s']:.2f} | " if "noprecopy_dump_s" in r else
            f"{r['dump_s']:.2f} | {rate(r['dump_s']) if 'parent' not in r['case'] else '-'} | - | ")
        lines[-1] += (
            f"{r['image_bytes'] / MiB:.1f} MiB"
            + (f" ({r['image_disk_bytes'] / MiB:.0f} on disk)" if "image_disk_bytes" in r else "")
            + f" | {r['store_new_bytes'] / MiB:.1f} MiB | "
            + (f"{r['restore_s']:.2f} | {rate(r['restore_s']) if 'parent' not in r['case'] else '-'} | "
               if "restore_s" in r else "FAILED (engine bug) | - | ")
            + f"{dill_d} | {dill_l} | "
            + (f"{r['dumper_anon_peak'] / MiB:.0f} / " if "dumper_anon_peak" in r else "- / ")
            + (f"{r['restorer_anon_peak'] / MiB:.0f} MiB" if "restorer_anon_peak" in r else "-")
            + (f" ({r['dumper_peak'] / MiB:.0f} / {r['restorer_peak'] / MiB:.0f} with the mapped image)"
               if "dumper_peak" in r and "restorer_peak" in r else "")
            + f" | {r.get('restore_ok')} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1G,4G", help="random-array sizes (default 1G,4G)")
    p.add_argument("--half-zero", default="1G", help="half-zero sizes (default 1G; '' for none)")
    p.add_argument("--quick", action="store_true", help="256M random + half zero, no 4G")
    p.add_argument("--dir", default="/tmp", help="where images and the store go (default /tmp)")
    p.add_argument("--no-dill", dest="dill", action="store_false")
    p.add_argument("--dill-idle", action="store_true", help="also try dill on the idle kernel")
    p.add_argument("--no-idle", dest="idle", action="store_false")
    p.add_argument("--json", help="write raw numbers here")
    args = p.parse_args()
    if args.quick:
        args.sizes, args.half_zero = "256M", "256M"
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    halfz = [parse_size(s) for s in args.half_zero.split(",") if s]
    if args.dill:
        try:
            import dill  # noqa: F401
        except ImportError:
            sys.exit("dill is missing: .venv/bin/pip install dill (benchmark-only), or --no-dill")

    print(f"load before: {loadavg()}  cpus: {os.cpu_count()}", flush=True)
    memcpy = {}
    for s in sorted(set(sizes + halfz)):
        memcpy[s] = memcpy_baseline(s)
        print(f"memcpy {label(s)}: fresh {s / memcpy[s]['fresh_s'] / 1e9:.2f} GB/s, "
              f"fresh numpy {s / memcpy[s]['fresh_np_s'] / 1e9:.2f} GB/s, "
              f"warm {s / memcpy[s]['warm_s'] / 1e9:.2f} GB/s", flush=True)

    base = Path(tempfile.mkdtemp(prefix="bench-snapshots-", dir=args.dir))
    rows: list[dict] = []
    try:
        cases = []
        if args.idle:
            cases.append(("idle", "idle", 0, False))
        for i, s in enumerate(sizes):
            cases.append((f"{label(s)} random", "random", s, i == 0))
        for s in halfz:
            cases.append((f"{label(s)} half zeros", "halfzero", s, False))
        for seed, (name, kind, s, inc) in enumerate(cases, 1):
            print(f"--- {name} (load {loadavg()})", flush=True)
            got = run_case(name, kind, s, base, args, inc, seed)
            for r in got:
                print(json.dumps(r), flush=True)
            rows.extend(got)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print()
    print(fmt_rows(rows, memcpy))
    print()
    print(f"load after: {loadavg()}")
    for s, m in memcpy.items():
        print(f"memcpy {label(s)}: fresh {m['fresh_s']:.2f} s ({s / m['fresh_s'] / 1e9:.2f} GB/s), "
              f"fresh numpy/THP {m['fresh_np_s']:.2f} s ({s / m['fresh_np_s'] / 1e9:.2f} GB/s), "
              f"warm {m['warm_s']:.2f} s ({s / m['warm_s'] / 1e9:.2f} GB/s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "memcpy": {str(k): v for k, v in memcpy.items()}},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
