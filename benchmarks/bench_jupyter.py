#!/usr/bin/env python3
"""Checkpoint and restore through a real Jupyter Server's REST API, against the engine alone
and against the fresh-memory copy rate (issue 13's targets).

    .venv/bin/python benchmarks/bench_jupyter.py [--sizes 0.1,2,8] [--dir /var/tmp]
                                                 [--eager | --auto] [--json out.json]

Per size (GiB of random float64 in a numpy array, on top of the kernel's own ~60 MiB):
  1. fresh copy: memcpy of SIZE bytes into never-touched memory (the cost any restore pays
     to make SIZE of memory exist);
  2. a server (the package's config, a store in --dir) and a notebook kernel filled with SIZE;
  3. engine dump: jupyter_ckpt.engine.dump of that kernel into an image directory in --dir,
     from this process (the kernel runs on; TCP connections reset, as the server's own
     checkpoint does);
  4. REST checkpoint: POST /api/ckpt/kernels/ID/snapshots (into the store: the first one
     stores every chunk), then a second one after a small cell (the store has the rest);
  5. the server is stopped (its kernels end) and a new one started; then POST .../restore,
     and the time from that request to the first cell's output over the kernel websocket,
     and to GET /api/ckpt/kernels/ID/restore saying "all memory in".
The table gives each time and the ratios of the targets: REST checkpoint / engine dump
(<= 1.25), first cell after the restore request (<= 1 s), all memory in / fresh copy (<= 1.0).
On a busy machine wall times are mostly waiting for a CPU: the CPU time of the engine dump
(this process) and of the first REST checkpoint (the server process) are given too.
--eager restores with CheckpointConfig.lazy_restore off, for comparison.

--auto measures instead what automatic snapshots (CheckpointConfig.auto_snapshot) add to a
cell: per size, a kernel filled with SIZE runs a small cell with them off, then on (the cell
waits for the snapshot's freeze), waiting each time until the snapshot is stored; then cells
back to back (each also waits for the previous one's snapshot to be stored). The table gives
the median time from execute_request to execute_reply over the websocket in each case, the
snapshot's freeze and what it added to the store.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from jupyter_server_harness import KernelSocket, Server  # noqa: E402

GiB = 1 << 30
_COPY_SOURCE = 256 << 20


def fresh_copy_seconds(size: int) -> float:
    """memcpy of `size` bytes from a warm buffer into fresh anonymous memory."""
    src = mmap.mmap(-1, _COPY_SOURCE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    src.write(os.urandom(1 << 20) * (_COPY_SOURCE >> 20))
    dst = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    s_anchor = ctypes.c_char.from_buffer(src)
    d_anchor = ctypes.c_char.from_buffer(dst)
    s_addr, d_addr = ctypes.addressof(s_anchor), ctypes.addressof(d_anchor)
    t = time.perf_counter()
    for off in range(0, size, _COPY_SOURCE):
        ctypes.memmove(d_addr + off, s_addr, min(_COPY_SOURCE, size - off))
    seconds = time.perf_counter() - t
    del s_anchor, d_anchor
    src.close()
    dst.close()
    return seconds


def fill_kernel(ks: KernelSocket, size: int) -> None:
    code = (f"import numpy as np\nbig = np.random.default_rng(1).random({size // 8})\n"
            "print(big.nbytes)")
    status, out, _ = ks.execute(code, timeout=600)
    assert status == "ok", out


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds `pid` (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ckpt_post(server: Server, kernel_id: str) -> tuple[float, dict]:
    t = time.perf_counter()
    status, model = server.request("POST", f"api/ckpt/kernels/{kernel_id}/snapshots", {})
    seconds = time.perf_counter() - t
    assert status == 201, f"{model}\n{server.log()}"
    return seconds, model


def kernel_pid(ks: KernelSocket) -> int:
    return int(ks.execute("import os; print(os.getpid())")[1])


def first_output(server: Server, kernel_id: str, deadline: float) -> None:
    """A cell's output, as soon as the kernel answers (retrying while IOPub connects)."""
    ks = KernelSocket(server, kernel_id)
    try:
        while time.monotonic() < deadline:
            try:
                if "alive" in ks.execute("print('alive')", timeout=2)[1]:
                    return
            except TimeoutError:
                pass
        raise TimeoutError("the restored kernel gave no output")
    finally:
        ks.close()


def one_size(size: int, root: Path, eager: bool) -> dict:
    from jupyter_ckpt import engine

    result: dict = {"size_gib": round(size / GiB, 2)}
    result["fresh_copy_s"] = fresh_copy_seconds(size + (64 << 20))
    work = Path(tempfile.mkdtemp(prefix="bench-jupyter-", dir=root))
    args = ["--CheckpointConfig.lazy_restore=False"] if eager else []
    try:
        server = Server(work, work / "ckpt", args=args).start()
        try:
            kernel_id = server.start_notebook_kernel()
            ks = KernelSocket(server, kernel_id)
            fill_kernel(ks, size)
            pid = kernel_pid(ks)
            t, cpu = time.perf_counter(), own_cpu()
            stats = engine.dump(pid, str(work / "engine-image"), tcp_close=True)
            result["engine_dump_s"] = time.perf_counter() - t
            result["engine_dump_cpu_s"] = own_cpu() - cpu
            result["engine_freeze_ms"] = stats.get("freeze_ms")
            shutil.rmtree(work / "engine-image")
            ks.close()
            ks = KernelSocket(server, kernel_id)
            ks.wait_for_output()
            cpu = process_cpu(server.proc.pid)
            result["rest_ckpt_s"], model = ckpt_post(server, kernel_id)
            result["rest_ckpt_cpu_s"] = process_cpu(server.proc.pid) - cpu
            result["rest_freeze_ms"] = model["freeze_ms"]
            ks.close()  # (a long checkpoint may outlast the websocket: a fresh one)
            ks = KernelSocket(server, kernel_id)
            ks.wait_for_output()
            ks.execute("small = list(range(1000))")
            result["rest_ckpt2_s"], model = ckpt_post(server, kernel_id)
            ks.close()
        finally:
            server.stop()
        server = Server(work, work / "ckpt", args=args).start()
        try:
            t = time.perf_counter()
            status, restored = server.request("POST", f"api/ckpt/snapshots/{model['id']}/restore", {})
            result["restore_response_s"] = time.perf_counter() - t
            assert status == 200, f"{restored}\n{server.log()}"
            first_output(server, kernel_id, time.monotonic() + 120)
            result["first_cell_s"] = time.perf_counter() - t
            while True:
                status, info = server.request("GET", f"api/ckpt/kernels/{kernel_id}/restore")
                if info["status"] not in ("restoring", "ready"):
                    break
                time.sleep(0.02)
            result["all_in_s"] = time.perf_counter() - t
            assert info["status"] == "all memory in", info
            result["lazy"] = info["lazy"]
            ks = KernelSocket(server, kernel_id)
            check = ks.execute("print(big.nbytes)")[1].strip()
            ks.close()
            assert check == str(size // 8 * 8), check
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["ratio_ckpt_vs_dump"] = result["rest_ckpt_s"] / result["engine_dump_s"]
    result["ratio_ckpt_vs_dump_cpu"] = result["rest_ckpt_cpu_s"] / result["engine_dump_cpu_s"]
    result["ratio_all_in_vs_fresh_copy"] = result["all_in_s"] / result["fresh_copy_s"]
    return result


def timed_cell(ks: KernelSocket, code: str) -> float:
    t = time.perf_counter()
    status, out, _ = ks.execute(code)
    assert status == "ok", out
    return time.perf_counter() - t


def settled(server: Server) -> None:
    """Until the server has no snapshot operation left (the last one stored)."""
    while server.request("GET", "api/ckpt/operations")[1]:
        time.sleep(0.01)


def auto_size(size: int, root: Path, rounds: int = 5) -> dict:
    """What an automatic snapshot before each cell costs a cell of a kernel holding `size`."""
    result: dict = {"size_gib": round(size / GiB, 2)}
    work = Path(tempfile.mkdtemp(prefix="bench-jupyter-auto-", dir=root))
    try:
        server = Server(work, work / "ckpt", args=["--CheckpointConfig.auto_snapshot=True",
                                                    f"--CheckpointConfig.auto_keep={2 * rounds + 2}"])
        server.start()
        try:
            kernel_id = server.start_notebook_kernel()
            ks = KernelSocket(server, kernel_id)
            fill_kernel(ks, size)
            settled(server)
            server.request("PUT", "api/ckpt/auto", {"enabled": False})
            off = sorted(timed_cell(ks, "n = 1") for _ in range(rounds))
            server.request("PUT", "api/ckpt/auto", {"enabled": True})
            on = []
            for _ in range(rounds):
                settled(server)
                on.append(timed_cell(ks, "n += 1"))
            t = time.perf_counter()
            settled(server)
            result["stored_after_s"] = time.perf_counter() - t
            back_to_back = sorted(timed_cell(ks, "n += 1") for _ in range(rounds))
            settled(server)
            ks.close()
            snaps = [s for s in server.request("GET", "api/ckpt/snapshots")[1] if s["auto"]]
            later = snaps[:2 * rounds - 1]  # (not the first: it stored the whole kernel)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    on.sort()
    result["cell_off_ms"] = off[len(off) // 2] * 1000
    result["cell_auto_ms"] = on[len(on) // 2] * 1000
    result["delay_ms"] = result["cell_auto_ms"] - result["cell_off_ms"]
    result["back_to_back_ms"] = back_to_back[len(back_to_back) // 2] * 1000
    result["freeze_ms"] = sorted(s["freeze_ms"] for s in later)[len(later) // 2]
    result["stored_mib"] = sorted(s["stored_bytes"] for s in later)[len(later) // 2] / (1 << 20)
    return result


AUTO_COLUMNS = [("size_gib", "GiB", "{:g}"), ("cell_off_ms", "cell, auto off ms", "{:.0f}"),
                ("cell_auto_ms", "cell, auto on ms", "{:.0f}"),
                ("delay_ms", "added ms", "{:.0f}"), ("freeze_ms", "freeze ms", "{}"),
                ("stored_after_s", "stored after s", "{:.2f}"),
                ("back_to_back_ms", "back-to-back cell ms", "{:.0f}"),
                ("stored_mib", "stored MiB", "{:.1f}")]

COLUMNS = [("size_gib", "GiB", "{:g}"), ("engine_dump_s", "dump s", "{:.2f}"),
           ("rest_ckpt_s", "REST ckpt s", "{:.2f}"), ("rest_ckpt2_s", "2nd ckpt s", "{:.2f}"),
           ("rest_freeze_ms", "freeze ms", "{}"),
           ("ratio_ckpt_vs_dump", "ckpt/dump", "{:.2f}"),
           ("engine_dump_cpu_s", "dump cpu s", "{:.2f}"), ("rest_ckpt_cpu_s", "ckpt cpu s", "{:.2f}"),
           ("ratio_ckpt_vs_dump_cpu", "cpu ckpt/dump", "{:.2f}"),
           ("restore_response_s", "restore resp s", "{:.2f}"),
           ("first_cell_s", "1st cell s", "{:.2f}"), ("all_in_s", "all in s", "{:.2f}"),
           ("fresh_copy_s", "fresh copy s", "{:.2f}"),
           ("ratio_all_in_vs_fresh_copy", "all-in/fresh", "{:.2f}")]


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = " | ".join(c[1] for c in columns)
    lines = [f"| {head} |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.format(r[key]) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.1,2,8", help="GiB per kernel, comma-separated")
    parser.add_argument("--dir", default="/var/tmp", help="where servers keep their stores")
    parser.add_argument("--eager", action="store_true", help="restore with lazy_restore off")
    parser.add_argument("--auto", action="store_true",
                        help="measure what automatic snapshots add to a cell instead")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    rows = []
    for text in args.sizes.split(","):
        size = int(float(text) * GiB)
        rows.append(auto_size(size, Path(args.dir)) if args.auto
                    else one_size(size, Path(args.dir), args.eager))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows, AUTO_COLUMNS if args.auto else COLUMNS))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
