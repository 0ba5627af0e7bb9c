"""Checkpoint: freeze the tree, collect every resource (refusing unsupported ones by name),
write the image, then let the tree run on (or end it with `kill`)."""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from typing import Any

from . import faults, guard, incremental, procfs, ptrace_ext
from .context import DumpContext, OpenFile, Progress, TreeIndex, list_open_files, no_progress, ns_pids
from .errors import Blocker, CkptError, Refused, Unsupported
from .freeze import FrozenTree, check_root, freeze
from .fileid import FileIdentities
from .hostinfo import host_facts
from .image import BlobSink, ImageReader, ImageWriter
from .inject import RemoteMemory, RemoteThread, Scratch, syscall_gadget
from .pagemap import PageScanner
from .precopy import PreCopy, Unavailable, worth_precopying
from .procfs import read_stat
from .resources import RESOURCES, claim, process, shmem
from .version import VERSION
from . import syscalls

SCRATCH_SIZE = 64 * 1024
log = logging.getLogger(__name__)


def check(pid: int, tcp_close: bool = False) -> list[Blocker]:
    """Everything that would stop `dump(pid, tcp_close=...)`; the tree runs on untouched."""
    check_root(pid)
    pids = _tree_pids(pid)
    unfreezable = process.shared_address_spaces(pids) + process.group_stopped(pids)
    if unfreezable:
        return unfreezable  # freezing would wait forever, or fail
    shared = process.shared_tables(pids) + shmem.outside_sharers(pids)
    tree = freeze(pid)
    try:
        _, blockers = _collect(tree, None, tcp_close=tcp_close)
        return shared + blockers
    finally:
        tree.release()


def dump(pid: int, path: str, kill: bool = False, progress: Progress = no_progress,
         precopy: bool = True, parent: str | None = None, portable: bool = False,
         tcp_close: bool = False, durable: bool = True,
         sink: BlobSink | None = None) -> dict[str, Any]:
    """Write a complete image of the tree rooted at `pid` to `path`, or raise and leave
    neither an image nor a changed process behind. Returns the image's stats.

    With `precopy` (where the kernel allows) memory is copied while the tree still runs and
    only what it writes meanwhile is copied while it is frozen. Without `kill` the tree runs
    on as soon as its state is captured, before the image is committed to disk; with `kill`
    it stays frozen until the image is complete, then dies. With `parent` (an earlier image
    of the same tree) only memory pages that differ from it are stored (incremental.py).
    A `portable` image also carries a copy of every executable and library it maps
    (fileid.py), used at restore where the host's file is missing or another build.
    Connected TCP sockets are refused unless `tcp_close`: then they come back reset.
    Without `durable` nothing is forced to disk: for an image read once right away (a
    snapshot store ingests it) and then removed, its blobs need never leave the page cache.
    With a `sink` (image.BlobSink) the blobs go there as they are written, not into `path`.
    """
    check_root(pid)
    if parent is not None and sink is not None:
        raise ValueError("an incremental dump rereads its blobs: it cannot give them to a sink")
    if parent is not None:
        ImageReader(parent, verify_blobs=False)  # a clear error now, before anything is frozen
    pids = _refuse_before_touching(pid)
    host = host_facts()  # (now: reading /proc/cpuinfo takes milliseconds the freeze need not)
    writer = ImageWriter(path, durable=durable, sink=sink)
    copies: dict[int, PreCopy] = {}
    try:
        if precopy:
            copies = _precopy(pids, writer, progress)
            if copies:
                pids = _refuse_before_touching(pid)  # again: pre-copy gave it time to change
            faults.point("dump.after-precopy", log)
        outside = shmem.outside_sharers(pids)  # (not while frozen: it reads every process)
        if outside:
            raise Refused(outside)
        started = time.monotonic()
        tree = freeze(pid)
        for copy in copies.values():
            copy.read_frames_ahead()
    except BaseException:
        _close_all(copies)
        writer.abort()
        raise
    frozen = True
    try:
        faults.point("dump.after-freeze", log)
        progress("collecting", 0, 0)
        rounds = {str(p): c.rounds for p, c in copies.items()}
        try:
            manifest, blockers = _collect(tree, writer, progress, copies, portable, tcp_close, kill,
                                          host)
            for copy in copies.values():
                writer.adopted_checksum(copy.blob_name, copy.checksum())
            if blockers:
                raise Refused(blockers)
            faults.point("dump.after-memory", log)
            if not kill:
                tree.release()
                frozen = False
            manifest["stats"]["freeze_ms"] = round((time.monotonic() - started) * 1000, 1)
        finally:
            # no write tracking left behind, whatever happened; once the tree runs again,
            # as unregistering it walks every page table entry of the tracked memory
            _close_all(copies)
        tracking = ["uffd-wp"] if rounds else []
        if rounds:
            manifest["stats"]["precopy_rounds"] = rounds
        if parent is not None:
            progress("comparing with parent", 0, 0)
            manifest["stats"]["bytes_shared_with_parent"] = incremental.rebase(manifest, writer, parent)
            manifest["stats"]["bytes_written"] = sum(b["size"] for b in writer.blobs.values())
            tracking.append("page-compare")
        manifest["stats"]["dirty_tracking"] = "+".join(tracking) or "none"
        progress("committing", 0, 0)
        faults.point("dump.before-commit", log)
        writer.commit(manifest)
    except OSError as err:
        writer.abort()
        if frozen:
            tree.release()
        if err.errno == errno.ENOSPC:
            raise CkptError(f"no space left on the device holding {path}; nothing was written") from None
        raise CkptError(f"dump failed: {err}") from None
    except BaseException:
        writer.abort()
        if frozen:
            tree.release()
        raise
    if kill:
        tree.kill()
    return manifest["stats"]


def _tree_pids(root: int) -> list[int]:
    return procfs.tree_pids(root)  # [] if it is gone: freeze() reports it


def _refuse_before_touching(root: int) -> list[int]:
    """What must be refused before the tree is seized or any syscall is injected into it
    (pre-copy does both): a vfork() in progress, which no freeze can stop, seccomp,
    under which an injected syscall can kill the process, a stopped process (to be left
    stopped, not traced) and tables shared between processes. Returns the tree's pids, as
    the next steps' list of it (each scan of /proc reads every process on the host)."""
    pids = _tree_pids(root)
    blockers = (process.shared_address_spaces(pids) + process.group_stopped(pids)
                + process.shared_tables(pids))
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            continue
        blockers += process.seccomp_modes(pid, tids)
    if blockers:
        raise Refused(blockers)
    return pids


def _precopy(pids: list[int], writer: ImageWriter, progress: Progress) -> dict[int, PreCopy]:
    """Copy the memory of every process of the tree (`pids`) while it runs (see precopy.py)."""
    copies: dict[int, PreCopy] = {}
    if not worth_precopying(pids):
        return copies
    try:
        for pid in pids:
            if process.seccomp_modes(pid, [pid]):
                continue  # entered since we looked: refused once frozen, nothing injected here
            try:
                copies[pid] = PreCopy(pid, writer.blob_path(""), writer.stream_blob)
            except (Unavailable, FileNotFoundError, ProcessLookupError):
                continue  # this one is copied entirely while frozen
        progress("pre-copying", 0, 0)
        _run_together(list(copies.values()))
    except BaseException:
        _close_all(copies)
        raise
    return copies


_PRECOPY_THREADS = 8


def _run_together(copies: list[PreCopy]) -> None:
    """Pre-copy every process of the tree at once, so that all finish their last round at
    about the moment the tree is frozen as one. (One after another, the first would run on,
    and write, for as long as the others take, and all that would be copied while frozen.)
    If one fails, the others stop at their next piece."""
    if len(copies) <= 1:
        for copy in copies:
            copy.run()
        return
    with ThreadPoolExecutor(min(len(copies), _PRECOPY_THREADS), thread_name_prefix="ckpt-precopy") as pool:
        running = [pool.submit(copy.run) for copy in copies]
        try:
            wait(running, return_when=FIRST_EXCEPTION)
            for future in running:
                if future.done() and future.exception() is not None:
                    raise future.exception()
        except BaseException:
            for copy in copies:
                copy.cancelled = True
            raise


def _close_all(copies: dict[int, PreCopy]) -> None:
    for copy in copies.values():
        try:
            copy.close()
        except OSError as err:  # the process is gone or its memory unmapped: nothing to undo
            log.debug("pre-copy of pid %d: closing: %s", copy.pid, err)
    copies.clear()


def _index_tree(tree: FrozenTree) -> tuple[TreeIndex, dict[int, list[OpenFile]]]:
    """The index phase: every kind sees every process and open file of the frozen tree."""
    # A tree restored into a PID namespace of its own lives below ours: the image records
    # the ids its processes see, so it can come back the same way.
    index = TreeIndex(pids=set(tree.processes), zombies=set(tree.zombies),
                      ns_depth=len(ns_pids(tree.root)) - 1, root=tree.root)
    files = {}
    for pid in tree.processes:
        files[pid] = list_open_files(pid)
        for kind in RESOURCES:
            if kind.index is not None:
                kind.index(index, pid, files[pid])
    return index, files


def _collect(tree: FrozenTree, writer: ImageWriter | None, progress: Progress = no_progress,
             copies: dict[int, PreCopy] | None = None,
             portable: bool = False, tcp_close: bool = False,
             kill: bool = False, host: dict[str, Any] | None = None
             ) -> tuple[dict[str, Any], list[Blocker]]:
    """The dump's phases over the frozen tree (kind.py): index, then each process's record
    (dump_process, its fds, dump_memory), then the tree-wide checks and sections."""
    log.info("phase index")
    index, open_files = _index_tree(tree)
    if portable and writer is not None:
        index.identities = FileIdentities(writer)
    index.progress = progress
    index.tcp_close = tcp_close
    index.kill = kill
    index.on_end = tree.on_end
    blockers: list[Blocker] = []
    registry = _FileRegistry()
    processes = []
    for pid, tids in tree.processes.items():
        if not tids or tids[0] != pid:
            blockers.append(Blocker(pid, "process", "zombie leader", "main thread has exited"))
            continue
        processes.append(_collect_process(pid, tids, index, open_files[pid], writer, blockers, registry,
                                          (copies or {}).get(pid)))
    zombies = [_zombie(pid, index) for pid in sorted(tree.zombies)]
    log.info("phase check")
    for kind in RESOURCES:
        if kind.check is not None:
            blockers += kind.check(index, processes)
    log.info("phase dump_section")
    sections = {kind.section: kind.dump_section(index) for kind in RESOURCES
                if kind.section and kind.dump_section is not None}
    zero = sum(p["memory"].get("zero_bytes", 0) for p in processes)
    logical = sum(run[1] for p in processes for v in p["memory"]["vmas"] for run in v["pages"]) \
        + zero + sum(seg[1] for obj in sections["shmem"].values() for seg in obj["data"])
    written = sum(b["size"] for b in writer.blobs.values()) if writer else 0
    manifest = {
        "created": datetime.now(timezone.utc).isoformat(),
        "tool_version": VERSION,
        "owner_uid": os.getuid(),
        "root_pid": index.inner(tree.root),
        "host": host or host_facts(),
        "processes": processes,
        "zombies": zombies,
        "files": registry.records,
        **sections,
        "stats": {"bytes_written": written, "bytes_logical": logical, "bytes_zero": zero,
                  "dirty_tracking": "none",
                  "processes": len(processes), "threads": sum(len(p["threads"]) for p in processes)},
    }
    return manifest, blockers


def _zombie(pid: int, index: TreeIndex) -> dict[str, Any]:
    stat = read_stat(pid)
    return {"pid": index.inner(pid), "ppid": index.inner(int(stat[4])), "exit_code": int(stat[52])}


def _collect_process(pid: int, tids: list[int], index: TreeIndex, files: list[OpenFile],
                     writer: ImageWriter | None, blockers: list[Blocker],
                     registry: "_FileRegistry", precopy: PreCopy | None = None) -> dict[str, Any]:
    """One process's record: every kind's dump_process with its threads held in injected
    calls (a kind that refuses leaves its empty part), its fds, then, the threads put back
    where they were, every kind's dump_memory."""
    seccomp = process.seccomp_modes(pid, tids)  # read while frozen, before any injection
    if seccomp:
        blockers.extend(seccomp)
        return {"pid": index.inner(pid), "fds": [],
                **{kind.record: kind.empty() for kind in RESOURCES if kind.record}}
    mem = RemoteMemory(pid)
    gadget = syscall_gadget(mem)
    remote = [RemoteThread(tid, gadget) for tid in tids]
    ctx = DumpContext(pid, index, remote[0], mem, None, writer, progress=index.progress, precopy=precopy,
                      threads=remote)
    code = guard.find_code(mem)
    for t in remote:
        ctx.saved_masks[t.tid] = ptrace_ext.get_sigmask(t.tid)
        if code:  # if we die from here on, the thread still resumes as it was
            guard.arm(t, mem, ctx.saved_masks[t.tid], code)
        t.block_signals()
    record: dict[str, Any] = {"pid": index.inner(pid)}
    try:
        try:
            scratch = remote[0].mmap_scratch(SCRATCH_SIZE)
            ctx.scratch = Scratch(mem, scratch, SCRATCH_SIZE)
            try:
                log.info("pid %d: phase dump_process", pid)
                for kind in RESOURCES:
                    if kind.record and kind.dump_process is not None:
                        record[kind.record] = _guarded(blockers, lambda: kind.dump_process(ctx), kind.empty())
                log.info("pid %d: phase fds", pid)
                record["fds"] = registry.collect(ctx, files, blockers)
            finally:
                remote[0].call("munmap", scratch, SCRATCH_SIZE)
                ctx.scratch = None
        finally:
            _put_back(remote, ctx.saved_masks)  # even on failure: the original must run on
        ctx.scanner = PageScanner(pid) if writer is not None else None
        try:
            log.info("pid %d: phase dump_memory", pid)
            for kind in RESOURCES:
                if kind.record and kind.dump_memory is not None:
                    record[kind.record] = _guarded(blockers, lambda: kind.dump_memory(ctx), kind.empty())
        finally:
            if ctx.scanner:
                ctx.scanner.close()
    finally:
        ctx.close()
        mem.close()
    return record


def _put_back(threads: list[RemoteThread], masks: dict[int, int]) -> None:
    """Let every thread resume exactly where it was frozen, with its own signal mask."""
    for t in threads:
        try:
            t.restore_live(masks[t.tid])
        except ptrace_ext.PtraceError as err:
            log.debug("tid %d: not put back (%s): the thread is gone", t.tid, err)


_F_GETSIG, _F_GETOWN_EX = 11, 16


def _refuse_signal_driven_io(f: OpenFile, ctx: DumpContext) -> None:
    """An open file's owner and signal for O_ASYNC I/O (F_SETOWN, F_SETSIG) belong to its
    open file description and are not restored: refused by name rather than lost."""
    if f.flags & os.O_ASYNC:
        raise ctx.refuse(f"fd {f.fd}", "signal-driven I/O", f"{f.link}: O_ASYNC is not restored")
    if f.flags & os.O_PATH:
        return  # (fcntl refuses these commands on it: it has no owner)
    dup = ctx.dup_of(f.fd)
    owner_kind, owner = struct.unpack("ii", fcntl.fcntl(dup, _F_GETOWN_EX, bytes(8)))
    signo = fcntl.fcntl(dup, _F_GETSIG)
    if owner or signo:
        raise ctx.refuse(f"fd {f.fd}", "file owner", f"{f.link}: an owner (F_SETOWN {owner}) "
                         f"or signal (F_SETSIG {signo}) for signal-driven I/O is not restored")


def _guarded(blockers: list[Blocker], collect, fallback):
    try:
        return collect()
    except Unsupported as refusal:
        blockers.extend(refusal.blockers)
        return fallback


class _FileRegistry:
    """Open file descriptions of the whole tree: fds that share one (dup'ed, or inherited
    over fork) refer to one record, dumped once, so restore shares it again."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._heads: list[tuple[OpenFile, str]] = []

    def _find(self, f: OpenFile) -> str | None:
        for head, file_id in self._heads:
            if (head.st.st_dev, head.st.st_ino) == (f.st.st_dev, f.st.st_ino) and \
                    syscalls.kcmp(head.pid, f.pid, syscalls.KCMP_FILE, head.fd, f.fd) == 0:
                return file_id
        return None

    def collect(self, ctx: DumpContext, files: list[OpenFile], blockers: list[Blocker]) -> list[dict[str, Any]]:
        fds = []
        for f in files:
            file_id = self._find(f)
            if file_id is None:
                file_id = f"{f.pid}:{f.fd}"
                try:
                    kind = claim(f, ctx)
                    rec = {"id": file_id, "kind": kind.name, "owner": ctx.tree.inner(f.pid),
                           **kind.dump(f, ctx)}
                    _refuse_signal_driven_io(f, ctx)  # (after the kind's own, more telling refusals)
                except Unsupported as refusal:
                    blockers.extend(refusal.blockers)
                    continue
                self.records.append(rec)
                self._heads.append((f, file_id))
            fds.append({"fd": f.fd, "file": file_id, "cloexec": f.cloexec})
        return fds
