"""Checkpoint: freeze the tree, collect every resource (refusing unsupported ones by name),
write the image, then let the tree run on (or end it with `kill`)."""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from . import arch, ptrace_ext
from .context import DumpContext, OpenFile, TreeIndex, list_open_files
from .errors import Blocker, CkptError, Refused, Unsupported
from .freeze import FrozenTree, freeze
from .hostinfo import host_facts
from .image import ImageWriter
from .inject import RemoteMemory, RemoteThread, Scratch, find_gadget
from .pagemap import PageScanner
from .procfs import read_vmas
from .resources import claim, memory, process, signals, threads
from . import syscalls

SCRATCH_SIZE = 64 * 1024


def check(pid: int) -> list[Blocker]:
    """Everything that would stop `dump(pid)`; the tree runs on untouched."""
    tree = freeze(pid)
    try:
        _, blockers = _collect(tree, None)
        return blockers
    finally:
        tree.release()


def dump(pid: int, path: str, kill: bool = False) -> dict[str, Any]:
    """Write a complete image of the tree rooted at `pid` to `path`, or raise and leave
    neither an image nor a changed process behind. Returns the image's stats."""
    writer = ImageWriter(path)
    started = time.monotonic()
    try:
        tree = freeze(pid)
    except BaseException:
        writer.abort()
        raise
    try:
        manifest, blockers = _collect(tree, writer)
        if blockers:
            raise Refused(blockers)
        manifest["stats"]["freeze_ms"] = round((time.monotonic() - started) * 1000, 1)
        writer.commit(manifest)
    except OSError as err:
        writer.abort()
        tree.release()
        if err.errno == 28:
            raise CkptError(f"no space left on the device holding {path}; nothing was written") from None
        raise CkptError(f"dump failed: {err}") from None
    except BaseException:
        writer.abort()
        tree.release()
        raise
    if kill:
        tree.kill()
    else:
        tree.release()
    return manifest["stats"]


def _index_tree(tree: FrozenTree) -> tuple[TreeIndex, dict[int, list[OpenFile]]]:
    index = TreeIndex(pids=set(tree.processes))
    files = {}
    for pid in tree.processes:
        files[pid] = list_open_files(pid)
        for f in files[pid]:
            if f.link.startswith("socket:"):
                index.sockets.add(f.st.st_ino)
            if f.link.startswith("pipe:"):
                ends = index.pipe_ends.setdefault(f.st.st_ino, set())
                ends.update({os.O_RDONLY: "r", os.O_WRONLY: "w"}.get(f.access, "rw"))
    return index, files


def _collect(tree: FrozenTree, writer: ImageWriter | None) -> tuple[dict[str, Any], list[Blocker]]:
    index, open_files = _index_tree(tree)
    blockers: list[Blocker] = []
    processes = []
    for pid, tids in tree.processes.items():
        if pid != tree.root:
            blockers.append(Blocker(pid, "process", "child process",
                                    "process trees with children are not supported yet"))
            continue
        if not tids or tids[0] != pid:
            blockers.append(Blocker(pid, "process", "zombie leader", "main thread has exited"))
            continue
        processes.append(_collect_process(pid, tids, index, open_files[pid], writer, blockers))
    logical = sum(run[1] for p in processes for v in p["memory"]["vmas"] for run in v["pages"])
    written = sum(b["size"] for b in writer.blobs.values()) if writer else 0
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(),
        "tool_version": __version__,
        "owner_uid": os.getuid(),
        "root_pid": tree.root,
        "host": host_facts(),
        "processes": processes,
        "stats": {"bytes_written": written, "bytes_logical": logical, "dirty_tracking": "none",
                  "processes": len(processes), "threads": sum(len(p["threads"]) for p in processes)},
    }
    return manifest, blockers


def _collect_process(pid: int, tids: list[int], index: TreeIndex, files: list[OpenFile],
                     writer: ImageWriter | None, blockers: list[Blocker]) -> dict[str, Any]:
    mem = RemoteMemory(pid)
    vdso = next((v for v in read_vmas(pid) if v.path == "[vdso]"), None)
    if vdso is None:
        raise CkptError(f"pid {pid} has no vdso; cannot inject system calls")
    gadget = find_gadget(mem, vdso.start, vdso.end)
    remote = [RemoteThread(tid, gadget) for tid in tids]
    ctx = DumpContext(pid, index, remote[0], mem, None, writer)
    for t in remote:
        ctx.saved_masks[t.tid] = ptrace_ext.get_sigmask(t.tid)
        ptrace_ext.set_sigmask(t.tid, (1 << 64) - 1)  # nothing may be delivered mid-injection
    record: dict[str, Any] = {"pid": pid}
    try:
        scratch = remote[0].call("mmap", 0, SCRATCH_SIZE, 3, 0x22, -1, 0)
        ctx.scratch = Scratch(mem, scratch, SCRATCH_SIZE)
        try:
            record["process"] = _guarded(blockers, lambda: process.dump(ctx), {})
            record["signals"] = _guarded(blockers, lambda: signals.dump(ctx, tids), {})
            record["threads"] = _guarded(blockers, lambda: threads.dump(ctx, remote), [])
            record["files"], record["fds"] = _collect_files(ctx, files, blockers)
        finally:
            remote[0].call("munmap", scratch, SCRATCH_SIZE)
            ctx.scratch = None
        for t in remote:  # the live process resumes exactly where it was
            arch.fix_interrupted_syscall(t.saved, restored=False)
            t.put_back()
            ptrace_ext.set_sigmask(t.tid, ctx.saved_masks[t.tid])
        ctx.scanner = PageScanner(pid) if writer is not None else None
        try:
            record["memory"] = _guarded(blockers, lambda: memory.dump(ctx), {"vmas": []})
        finally:
            if ctx.scanner:
                ctx.scanner.close()
    finally:
        ctx.close()
        mem.close()
    return record


def _guarded(blockers: list[Blocker], collect, fallback):
    try:
        return collect()
    except Unsupported as refusal:
        blockers.extend(refusal.blockers)
        return fallback


def _collect_files(ctx: DumpContext, files: list[OpenFile],
                   blockers: list[Blocker]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Group fds into open file descriptions (dup'ed fds share one) and dump each once."""
    descriptions: list[list[OpenFile]] = []
    for f in files:
        for group in descriptions:
            head = group[0]
            if (head.st.st_dev, head.st.st_ino) == (f.st.st_dev, f.st.st_ino) and \
                    syscalls.kcmp(ctx.pid, ctx.pid, syscalls.KCMP_FILE, head.fd, f.fd) == 0:
                group.append(f)
                break
        else:
            descriptions.append([f])
    records, fds = [], []
    for group in descriptions:
        head = group[0]
        file_id = f"{ctx.pid}:{head.fd}"
        try:
            kind = claim(head, ctx)
            rec = {"id": file_id, "kind": kind.name, **kind.dump(head, ctx)}
        except Unsupported as refusal:
            blockers.extend(refusal.blockers)
            continue
        records.append(rec)
        fds += [{"fd": f.fd, "file": file_id, "cloexec": f.cloexec} for f in group]
    return records, sorted(fds, key=lambda r: r["fd"])
