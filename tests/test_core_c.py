"""Engine core against real C programs: registers (xmm/ymm), threads blocked in syscalls,
signals, memory layouts and file descriptors. Each program checks its own state after
dump --kill + restore (protocol in programs/ckpt_test.h)."""
from __future__ import annotations

import os
import signal

import pytest

from conftest import checkpoint_cycle, manifest, run_cli, wait_until

PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_has(flag: str) -> bool:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return flag in line.split(":", 1)[1].split()
    return False


def checkable(prog) -> None:
    """`check PID` reports nothing in the way (and leaves the program running)."""
    out = run_cli("check", prog.pid)
    assert "can be checkpointed" in out.stdout, out.stdout


def info(prog, key: str) -> str:
    """A value the program published in its status file as `info KEY VALUE`."""
    for line in prog.lines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["info", key]:
            return parts[2]
    raise AssertionError(f"program did not publish {key}: {prog.lines()}")


def saved_bytes_in(image, start: int, end: int) -> int:
    """Bytes of page data the image holds for addresses in [start, end)."""
    total = 0
    for proc in manifest(image)["processes"]:
        for vma in proc["memory"]["vmas"]:
            for addr, length, _ in vma["pages"]:
                lo, hi = max(addr, start), min(addr + length, end)
                total += max(0, hi - lo)
    return total


# ------------------------------------------------------------------ registers

def test_xmm_doubles_and_control_words(cc, programs, workdir):
    prog = programs(cc("fpu_xmm"))
    checkable(prog)
    checkpoint_cycle(prog, workdir / "image")


def test_ymm_avx_state(cc, programs, workdir):
    if not cpu_has("avx"):
        pytest.skip("CPU lacks the avx feature")
    prog = programs(cc("fpu_ymm"))
    checkable(prog)
    checkpoint_cycle(prog, workdir / "image")


# ------------------------------------------------------------------ threads in syscalls

# thread name -> the syscalls (x86_64 numbers) it may be blocked in
BLOCKED_IN = {"epoll": {232, 281, 441}, "cond": {202}, "sleeprel": {230}, "sleepabs": {230},
              "read": {0}, "poll": {7, 271}}


def thread_names(pid: int) -> dict[str, int]:
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names[f.read().strip()] = int(tid)
    return names


def blocked_syscall(pid: int, tid: int) -> int | None:
    with open(f"/proc/{pid}/task/{tid}/syscall") as f:
        first = f.read().split()[0]
    return None if first == "running" or first.startswith("-") else int(first)


def test_threads_blocked_in_syscalls(cc, programs, workdir):
    prog = programs(cc("blocked_threads"))
    tids = thread_names(prog.pid)
    assert set(BLOCKED_IN) <= set(tids), tids
    waiting = {**BLOCKED_IN, "sleeprel": {202}, "sleepabs": {202}}  # on a semaphore for now
    for name, numbers in waiting.items():
        wait_until(lambda: blocked_syscall(prog.pid, tids[name]) in numbers,
                   what=f"thread {name} to block in its syscall")
    checkable(prog)  # (its freeze interrupts them all once: the live program must not notice)
    os.kill(prog.pid, signal.SIGUSR2)  # the sleepers start their hour-long sleeps now
    for name in ("sleeprel", "sleepabs"):
        wait_until(lambda: blocked_syscall(prog.pid, tids[name]) in BLOCKED_IN[name],
                   what=f"thread {name} to fall asleep")
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    # every thread was caught inside its syscall and is set to resume it as the kernel would
    restart = {t["tid"]: t["restart"] for t in manifest(image)["processes"][0]["threads"]}
    for name in ("epoll", "cond", "read", "poll", "sleepabs"):
        assert restart[tids[name]] == "restart", (name, restart)
    # a restored relative sleep has no kernel restart block: it returns EINTR with the time
    # left written out, and the caller sleeps on (the program checks the total time slept)
    assert restart[tids["sleeprel"]] == "eintr", restart


# ------------------------------------------------------------------ signals

def test_signal_state(cc, programs, workdir):
    prog = programs(cc("signals"))
    checkable(prog)
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    proc = manifest(image)["processes"][0]
    assert proc["threads"][0]["restart"] == "restart"  # caught in read(), restarted on resume
    sig = proc["signals"]
    assert len(sig["shared_pending"]) >= 2  # the two queued SIGRTMIN+2 (maybe a SIGALRM too)
    assert sum(len(v) for v in sig["thread_pending"].values()) == 1


# ------------------------------------------------------------------ memory

def test_memory_layouts(cc, programs, workdir):
    prog = programs(cc("memory"))
    checkable(prog)
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    vmas = manifest(image)["processes"][0]["memory"]["vmas"]

    # private file mapping: only the two copy-on-write pages are stored, not the clean ones
    private = [v for v in vmas if v["path"] == str(workdir / "private.dat")]
    assert private, "private.dat mapping missing from the image"
    assert sum(n for v in private for _, n, _ in v["pages"]) == 2 * PAGE
    # shared file mapping: the file holds the data, the image none
    shared = [v for v in vmas if v["path"] == str(workdir / "shared.dat")]
    assert shared and all(v["shared"] and not v["pages"] for v in shared)
    # sparse 64 MiB region: exactly its two touched pages (a read-only touch maps the zero page)
    sparse = int(info(prog, "sparse"), 16)
    assert saved_bytes_in(image, sparse, sparse + (64 << 20)) == 2 * PAGE
    # guarded area: the data page and the PROT_NONE page that holds data, not the empty guard
    guarded = int(info(prog, "guarded"), 16)
    assert saved_bytes_in(image, guarded, guarded + 4 * PAGE) == 2 * PAGE
    prots = {v["start"]: v["prot"] for v in vmas}
    assert prots.get(guarded) == 0 and prots.get(guarded + 2 * PAGE) == 0
    # the 256 MiB block is saved whole
    assert manifest(image)["stats"]["bytes_logical"] >= 256 << 20


# ------------------------------------------------------------------ files

def test_file_descriptors(cc, programs, workdir):
    prog = programs(cc("files"))
    checkable(prog)
    image = workdir / "image"
    checkpoint_cycle(prog, image)
    (log := workdir / "log.txt")
    assert log.read_text() == "line1\nline2\nline3\n"
    assert not (workdir / "gone.txt").exists()


def test_mapping_larger_than_one_transfer(cc, programs, workdir):
    """A 2.25 GiB mapping with every page written: more than one process_vm_* call's worth."""
    prog = programs(cc("huge_run"), timeout=120)
    checkpoint_cycle(prog, workdir / "image")
