"""Address space: every mapping, and the pages in it that the file (or nothing) cannot supply.

Dump: mappings come from /proc/PID/smaps; PAGEMAP_SCAN finds pages with data (present or
swapped, never the shared zero page; for private file mappings only copy-on-write pages), and
process_vm_readv copies them in large batches straight into a mapped image blob (pages shared
with another process through /proc/PID/mem, which leaves them shared: pagemap.py). Pages of
private anonymous memory found to hold only zeros are then left out (zeropages.py), and so
are those a child still shares with its parent since a fork: they are saved with the parent.

Restore (in the seed process, driven by injected syscalls): drop everything the seed inherited
except the vdso block, move that block to where the image had it, then map every area at its
address (files from fds the engine sent over), write the saved pages with process_vm_writev
(or, in a lazy restore, register large private anonymous areas with a userfaultfd for
lazy.py to fill while the process runs) and set the final protections and madvise flags.
A parent restores the areas whose pages its children share before they are forked from it,
and they keep what they inherit (plan_sharing).
"""
from __future__ import annotations

import bisect
import errno
import mmap
import os
from mmap import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import xxhash

from .. import fileid, incremental, procfs, syscalls, uffd, zeropages
from ..arch import TASK_SIZE
from ..context import DumpContext, RestoreContext
from ..errors import CkptError, ImageError, RestoreConflict
from ..image import append_run
from ..inject import RemoteMemory, RemoteThread
from ..pagemap import PAGE_SIZE, PageScanner
from . import shmem, sysvshm
from .kind import Resource
from . import vdso as vdso_proxy

MAP_FIXED = 0x10
MAP_GROWSDOWN, MAP_NORESERVE, MAP_FIXED_NOREPLACE = 0x100, 0x4000, 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
PR_SET_VMA, PR_SET_VMA_ANON_NAME = 0x53564D41, 0
MMAP_MIN = 0x10000

SPECIAL = ("[vvar]", "[vvar_vclock]", "[vdso]")
# VmFlags we reproduce: name -> madvise advice (or None when a mapping flag carries it)
_MADVISE = {"dc": 10, "wf": 18, "dd": 16, "hg": 14, "nh": 15, "mg": 12}
_HANDLED_FLAGS = {"rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "ac", "sd", "gd", "nr", "de",
                  "ar"} | set(_MADVISE)
_REFUSED_FLAGS = {"lo": "locked in memory (mlock)", "io": "I/O memory", "pf": "raw PFN mapping",
                  "ht": "hugetlbfs", "uw": "userfaultfd write-protect", "ui": "userfaultfd minor",
                  "ss": "shadow stack", "sl": "sealed (mseal)", "um": "userfaultfd",
                  "dp": "droppable (MAP_DROPPABLE)"}


def _kind(vma: procfs.Vma, tmpfs_devices: set[tuple[int, int]]) -> str:
    if vma.path in SPECIAL:
        return vma.path.strip("[]")
    if shmem.is_shmem_path(vma.path) and (vma.shared or vma.path.startswith("/memfd:")):
        return "shmem"
    if _dev(vma.dev) in tmpfs_devices and vma.path.startswith("/"):
        return "shmem"  # a tmpfs file (POSIX shm, semaphores), linked or not: saved whole
    if vma.path.startswith("/SYSV") and vma.shared:
        return "sysv"
    if vma.path in ("", "[heap]", "[stack]") or vma.path.startswith("[anon:"):
        return "anon"
    if vma.path.startswith("/") and not vma.deleted:
        return "file"
    return "unsupported"


def _attach_prot(vmas: list[dict[str, Any]], first: dict[str, Any]) -> int:
    """Protection a SysV attach needs: the union over its parts (those mprotect'ed apart
    follow it), so a read-only first page does not make the whole attach read-only."""
    prot, end = 0, first["start"]
    for v in vmas:
        if v["kind"] == "sysv" and v["shmid"] == first["shmid"] and v["start"] == end \
                and v["offset"] == end - first["start"]:
            prot, end = prot | v["prot"], v["end"]
    return prot


def dump(ctx: DumpContext) -> dict[str, Any]:
    vmas = [v for v in procfs.read_vmas(ctx.pid) if v.path != "[vsyscall]"]
    if ctx.scanner is not None:
        ctx.scanner.sharing_within([(v.start, v.end) for v in vmas if v.shared_kb])
    parent = _Parent.of(ctx)
    try:
        records = [_dump_vma(ctx, vma, parent) for vma in vmas]
    finally:
        if parent is not None:
            parent.close()
    result: dict[str, Any] = {"vmas": records}
    vdso = next((v for v in vmas if v.path == "[vdso]"), None)
    if vdso and ctx.mem:
        code = ctx.mem.read(vdso.start, vdso.size)
        result["vdso_xxh3_128"] = xxhash.xxh3_128_hexdigest(code)
        result.update(vdso_proxy.dump(code, ctx.pid))
    with_data = _run_bytes(records)
    if ctx.writer is not None and ctx.precopy is not None:
        ctx.precopy.finish(records)  # most pages were copied before the freeze
        result["pages_blob"] = ctx.precopy.blob_name
        ctx.writer.adopt_blob(ctx.precopy.blob_name)
    elif ctx.writer is not None:
        result["pages_blob"] = _copy_pages(ctx, records)
    if ctx.writer is not None:
        result["zero_bytes"] = with_data - _run_bytes(records)  # left out, all zero
    for rec in records:
        rec.pop("tracked", None)
    return result


def _dump_vma(ctx: DumpContext, vma: procfs.Vma, parent: "_Parent | None") -> dict[str, Any]:
    where = f"{vma.start:#x}-{vma.end:#x}"
    kind = _kind(vma, ctx.tree.tmpfs_devices())
    if kind == "unsupported":
        if "ht" in vma.vmflags:  # whatever its path says (/anon_hugepage, /memfd:..., /SYSV...)
            raise ctx.refuse(where, "mapping", f"{vma.path}: hugetlb memory (huge pages) is not supported")
        what = "memfd" if vma.path.startswith("/memfd:") else "SysV shared memory" \
            if vma.path.startswith("/SYSV") else "mapping of a deleted file" if vma.deleted else "mapping"
        raise ctx.refuse(where, what, f"{vma.path or 'special mapping'}: not supported")
    ours = {"uw"} if ctx.precopy is not None else set()  # pre-copy's own write tracking
    for flag in (vma.vmflags - _HANDLED_FLAGS - ours) if kind not in ("vdso", "vvar", "vvar_vclock") else ():
        raise ctx.refuse(where, "mapping", f"{vma.path or 'anonymous'}: "
                         f"{_REFUSED_FLAGS.get(flag, 'VmFlag ' + flag)} is not supported")
    rec: dict[str, Any] = {"start": vma.start, "end": vma.end, "prot": vma.prot, "kind": kind,
                           "shared": vma.shared, "path": vma.path,
                           "growsdown": "gd" in vma.vmflags, "noreserve": "nr" in vma.vmflags,
                           "madvise": sorted(f for f in vma.vmflags if f in _MADVISE),
                           "pages": []}
    if ctx.precopy is not None:
        rec["tracked"] = ctx.precopy.tracks(vma)
    if kind == "file":
        if vma.shared and vma.prot & PROT_WRITE and not os.access(vma.path, os.W_OK):
            raise ctx.refuse(where, "shared file mapping", f"{vma.path}: not writable by us")
        st = os.stat(vma.path)
        if (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev)) != (vma.inode, *_dev(vma.dev)):
            raise ctx.refuse(where, "file mapping", f"{vma.path}: replaced on disk since mapped")
        rec["offset"] = vma.offset
        rec["file"] = ctx.tree.identities.facts(vma.path)
    source = f"/proc/{ctx.pid}/map_files/{vma.start:x}-{vma.end:x}"
    readable = kind in ("sysv", "shmem") and os.access(source, os.R_OK)
    if kind == "sysv":
        if not readable:
            raise ctx.refuse(where, "shared memory", "reading it takes CAP_CHECKPOINT_RESTORE "
                                                     "(through /proc/PID/map_files), which we lack")
        sysvshm.register(ctx, vma.inode, source)
        rec["shmid"] = vma.inode
        rec["offset"] = vma.offset
    if kind == "shmem":
        rec["shmem"] = shmem.register_mapping(ctx, vma, _dev(vma.dev), source, readable)
        rec["offset"] = vma.offset
    if kind in ("anon", "file", "shmem") and not vma.shared:
        if ctx.scanner is not None:
            runs = ctx.scanner.data_runs(vma.start, vma.end, anonymous_only=(kind == "file"))
            rec["pages"] = [[addr, length] for addr, length in runs]
        if kind in ("anon", "file") and not vma.shared and vma.shared_kb and parent is not None and runs:
            shared = parent.shared_runs(ctx.scanner, vma, runs, _lineage(kind, vma.path, vma.offset - vma.start))
            if shared:
                rec["cow"] = [[addr, length] for addr, length in shared]
                rec["pages"] = [[addr, length] for addr, length in _subtract(runs, shared)]
    return rec


def _lineage(kind: str, path: str, delta: int) -> tuple[str, int] | None:
    """What a child's private mapping must be in its parent too, for their shared pages to
    come back shared by inheritance: anonymous memory (None), or a private mapping of the
    same file with the same file offset at each address (`delta`: offset minus start)."""
    return (path, delta) if kind == "file" else None


class _Parent:
    """The parent of a process being dumped, when it is in the tree: pages of private
    memory the two still share copy-on-write (the same page frame at the same address, left
    so by a fork) are saved once, with the parent, and restored shared."""

    def __init__(self, pid: int, tmpfs_devices: set[tuple[int, int]]):
        self.scanner = PageScanner(pid)
        self.areas = [(v.start, v.end, _lineage(kind, v.path, v.offset - v.start))
                      for v in procfs.read_vmas(pid) if not v.shared
                      for kind in [_kind(v, tmpfs_devices)] if kind in ("anon", "file")]
        self.starts = [start for start, _, _ in self.areas]

    @classmethod
    def of(cls, ctx: DumpContext) -> "_Parent | None":
        if ctx.scanner is None or ctx.writer is None:
            return None
        ppid = int(procfs.read_stat(ctx.pid)[4])
        if ppid not in ctx.tree.pids or ppid in ctx.tree.zombies:
            return None
        return cls(ppid, ctx.tree.tmpfs_devices())

    def shared_runs(self, scanner: PageScanner, vma: procfs.Vma, runs: list[tuple[int, int]],
                    lineage: tuple[str, int] | None) -> list[tuple[int, int]]:
        """The parts of `runs` (pages with data in `vma`) on the same frames as the parent's
        pages, where the parent has a private mapping of the same `lineage` (_lineage)."""
        i = max(bisect.bisect_right(self.starts, vma.start) - 1, 0)
        areas = []
        while i < len(self.areas) and self.areas[i][0] < vma.end:
            if self.areas[i][1] > vma.start and self.areas[i][2] == lineage:
                areas.append(self.areas[i])
            i += 1
        shared: list[tuple[int, int]] = []
        for addr, length in runs:
            for start, end, _ in areas:
                lo, hi = max(addr, start), min(addr + length, end)
                if lo < hi:
                    shared += scanner.same_frames(self.scanner, lo, hi)
        return sorted(shared)

    def close(self) -> None:
        self.scanner.close()


def _subtract(runs: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(address, length) `runs` without the sorted (address, length) `holes`."""
    out: list[tuple[int, int]] = []
    for addr, length in runs:
        for lo, hi in _gaps([(a, a + n) for a, n in holes], addr, addr + length):
            out.append((lo, hi - lo))
    return out


def _gaps(spans: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The non-empty (from, to) parts of [start, end) outside the sorted (from, to) `spans`."""
    out: list[tuple[int, int]] = []
    pos = start
    for lo, hi in spans:
        if hi <= pos or lo >= end:
            continue
        if lo > pos:
            out.append((pos, lo))
        pos = max(pos, hi)
    if pos < end:
        out.append((pos, end))
    return out


def _clip(spans: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The sorted (from, to) `spans` cut to [start, end)."""
    return [(max(lo, start), min(hi, end)) for lo, hi in spans if lo < end and hi > start]


def _dev(text: str) -> tuple[int, int]:
    major, minor = text.split(":")
    return int(major, 16), int(minor, 16)


def _run_bytes(records: list[dict[str, Any]]) -> int:
    return sum(run[1] for rec in records for run in rec["pages"])


def _copy_pages(ctx: DumpContext, records: list[dict[str, Any]]) -> str:
    """Copy all saved pages into one blob, in record order, and give each run its blob
    offset. All-zero pages are left out where zeropages.droppable allows: runs are split
    around them, and the blob ends up shorter than the bytes read."""
    pieces = [(addr, length, rec) for rec in records for addr, length in rec["pages"]]
    total = sum(length for _, length, _ in pieces)
    for rec in records:
        rec["pages"] = []
    name = f"pages-{ctx.pid}.bin"
    assert ctx.writer is not None
    read = 0
    # process_vm_readv straight into a shared mapping of the blob, a few MiB per call, each
    # piece checksummed while it is still in the CPU cache (see MappedBlob). Reading through
    # a buffer and write()-ing it on instead costs one more full copy and measured no faster
    # (docs/benchmarks.md). Each chunk is read where the kept bytes end; its zero pages are
    # then squeezed out by moving what follows them down.
    with ctx.writer.fill_blob(name, total) as blob:
        for chunk, size in _chunked(pieces, _COPY_CHUNK):
            at = blob.done
            assert ctx.scanner is not None
            _read_runs(ctx.scanner, blob.address + at, [(a, n) for a, n, _ in chunk])
            source = at
            for addr, length, rec in chunk:
                parts = zeropages.split(blob.mapping, source, source + length) \
                    if zeropages.droppable(rec) else [(source, source + length, False)]
                for lo, hi, zero in parts:
                    if zero:
                        continue
                    if lo != at:
                        blob.mapping.move(at, lo, hi - lo)
                    append_run(rec["pages"], [addr + lo - source, hi - lo, at])
                    at += hi - lo
                source += length
            blob.filled(at)
            read += size
            ctx.progress("memory", read, total)
        blob.truncate()
    return name


_COPY_CHUNK = 4 << 20


def _chunked(runs: list[tuple[int, int, Any]], limit: int):
    """Split (address, length, tag) runs into consecutive groups of at most `limit` bytes
    (cutting runs if need be; each piece keeps its run's tag)."""
    group: list[tuple[int, int, Any]] = []
    size = 0
    for addr, length, tag in runs:
        while length:
            take = min(length, limit - size)
            group.append((addr, take, tag))
            size += take
            addr += take
            length -= take
            if size == limit:
                yield group, size
                group, size = [], 0
    if group:
        yield group, size


def _read_runs(scanner: PageScanner, base: int, runs: list[tuple[int, int]]) -> None:
    """Fast path process_vm_readv; via /proc/PID/mem the pages shared with another process
    (which process_vm_readv would unshare, see pagemap.py) and the areas it cannot read
    (PROT_NONE)."""
    pieces = scanner.split_shared(runs)
    done_bytes, i = 0, 0
    while i < len(pieces):
        batch = 0
        while i + batch < len(pieces) and not pieces[i + batch][2]:
            batch += 1
        n = syscalls.vm_read(scanner.pid, base + done_bytes,
                             [(a, length) for a, length, _ in pieces[i:i + batch]]) if batch else 0
        # advance over fully copied runs
        while batch and n >= pieces[i][1]:
            n -= pieces[i][1]
            done_bytes += pieces[i][1]
            i += 1
            batch -= 1
        if i == len(pieces):
            break
        addr, length, _ = pieces[i]  # shared, or where process_vm_readv stopped
        if scanner.read_shared(base + done_bytes, addr, length) != length:
            raise CkptError(f"pid {scanner.pid}: cannot read memory at {addr:#x} ({length} bytes)")
        done_bytes += length
        i += 1


# ---------------------------------------------------------------- restore

def files_to_map(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Files the image maps, with what they looked like at dump time (every mapping of a
    file must say the same, or the image is refused)."""
    files: dict[str, dict[str, Any]] = {}
    for v in rec["vmas"]:
        if v["kind"] == "file" and files.setdefault(v["path"], v["file"]) != v["file"]:
            raise ImageError(f"mappings of {v['path']} disagree about the file's size or time")
    return files


def shmem_to_map(rec: dict[str, Any]) -> list[str]:
    """Shared memory objects (by key, shmem.object_key) the image maps."""
    return sorted({v["shmem"] for v in rec["vmas"] if v["kind"] == "shmem"})


def open_mapped_file(path: str, facts: dict[str, Any], writable: bool,
                     image: fileid.BlobReader) -> int:
    """Open a file to be mapped, refusing when it is not the one that was mapped; a portable
    image's copy stands in for a missing or changed file mapped read-only or privately."""
    try:
        fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        why = fileid.mismatch(fd, facts)
        if why:
            os.close(fd)
    except OSError as err:
        why = err.strerror
    if not why:
        return fd
    if "blob" in facts and not writable:
        return fileid.open_copy(image, facts, path)
    raise RestoreConflict(f"mapped file {path} changed since the checkpoint ({why})"
                          if os.path.exists(path) else f"mapped file {path}: {why}")


def _special_block(vmas: list[procfs.Vma]) -> dict[str, tuple[int, int]]:
    return {v.path: (v.start, v.end) for v in vmas if v.path in SPECIAL}


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def find_hole(occupied: list[tuple[int, int]], size: int) -> int:
    """Highest free, page-aligned hole of `size` bytes below TASK_SIZE, top-down like mmap."""
    spans = sorted(occupied, key=lambda span: span[1])  # by end: a span inside another is passed over
    ceiling = TASK_SIZE
    for start, end in reversed(spans):
        if end <= ceiling and ceiling - end >= size + PAGE_SIZE:
            return ceiling - size - PAGE_SIZE
        ceiling = min(ceiling, start)
    if ceiling - MMAP_MIN >= size:
        return ceiling - size
    raise CkptError("no free address range for the restore's scratch area")


def prepare_address_space(thread: RemoteThread, mem: RemoteMemory, rec: dict[str, Any],
                          scratch_size: int, keep: Iterable[tuple[int, int]] = ()) -> int:
    """Empty the seed's address space but for its vdso block and the (from, to) ranges
    `keep` (memory inherited from its parent, see Inheritance), put that block where the
    image had it, and map a scratch area in a hole. Returns the scratch address."""
    seed = _special_block(procfs.read_vmas(thread.tid))
    want = {v["path"]: (v["start"], v["end"]) for v in rec["vmas"] if v["path"] in SPECIAL}
    vdso_start = seed["[vdso]"][0]
    code = mem.read(vdso_start, seed["[vdso]"][1] - vdso_start)
    proxy = _vdso_proxy(rec, want, seed, code)
    lo = min(s for s, _ in seed.values())
    hi = max(e for _, e in seed.values())
    for start, end in _gaps(sorted([(lo, hi), *keep]), 0, TASK_SIZE):
        thread.call("munmap", start, end - start)
    occupied = [(v["start"], v["end"]) for v in rec["vmas"]]
    if proxy is not None:  # this kernel's block goes where nothing of the image is
        if any(_overlaps(span, taken) for span in seed.values() for taken in occupied):
            to = find_hole(occupied + [(lo, hi)], hi - lo)
            seed = _move_block(thread, seed, {k: (to + s - lo, to + e - lo) for k, (s, e) in seed.items()})
        want = seed
        occupied += list(seed.values())
        image_vdso = next(v for v in rec["vmas"] if v["kind"] == "vdso")
        vdso_proxy.install_proxy(thread.call, mem, image_vdso["start"], proxy(seed["[vdso]"][0]))
    elif any(_overlaps(seed[k], want[k]) for k in seed) and seed != want:
        temp = find_hole(occupied + [(lo, hi)], hi - lo)
        seed = _move_block(thread, seed, {k: (temp + s - lo, temp + e - lo) for k, (s, e) in seed.items()})
    if seed != want:
        _move_block(thread, seed, want)
    scratch = find_hole(occupied, scratch_size)
    thread.call("mmap", scratch, scratch_size, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
    return scratch


def _vdso_proxy(rec: dict[str, Any], want: dict[str, tuple[int, int]],
                seed: dict[str, tuple[int, int]], code: bytes) -> Any:
    """None when this kernel's vdso block (`seed`, vdso `code`) is the image's (`want`);
    else a function of this vdso's final address giving the proxy's code (resources/vdso.py).
    Refuses an image whose vdso cannot be proxied (the host verdict has refused it already)."""
    if set(want) == set(seed) and all(want[k][1] - want[k][0] == seed[k][1] - seed[k][0] for k in want) \
            and xxhash.xxh3_128_hexdigest(code) == rec.get("vdso_xxh3_128", xxhash.xxh3_128_hexdigest(code)):
        return None
    if "[vdso]" not in want:
        raise RestoreConflict("the image has no vdso and this kernel's vdso block differs from its own")
    size = want["[vdso]"][1] - want["[vdso]"][0]
    here = vdso_proxy.symbols(code)
    problems = vdso_proxy.refusals(rec.get("vdso_symbols"), size, here, rec.get("vdso_getrandom"))
    if problems:
        raise RestoreConflict(f"this kernel's vdso differs from the checkpointed one: {problems[0]}")
    return lambda base: vdso_proxy.proxy_code(rec["vdso_symbols"], size, here, base)


def _move_block(thread: RemoteThread, now: dict[str, tuple[int, int]],
                to: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    for name in SPECIAL:
        if name not in now:
            continue
        start, end = now[name]
        thread.call("mremap", start, end - start, end - start, MREMAP_MAYMOVE | MREMAP_FIXED,
                    to[name][0])
        if name == "[vdso]":
            thread.set_gadget(thread.gadget - start + to[name][0])
    return to


@dataclass
class Inheritance:
    """How a process's pages shared copy-on-write with its parent (`cow` runs) come back.
    Shared: the parent maps and fills the areas holding them before its children are
    forked (`early`: their start addresses), and each child keeps the `kept` (from, to)
    ranges it inherits, writing only its own pages there. Or, where that cannot be (a lazy
    restore), `copy`: they are written as private copies of the saved pages of the parent
    (or of its parent, where the parent shared them in turn)."""
    copy: bool = False
    ancestors: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (pid, memory), parent first
    kept: list[tuple[int, int]] = field(default_factory=list)
    early: set[int] = field(default_factory=set)
    scratch: int = 0  # the scratch area the early restore made (the address space is prepared)


def plan_sharing(procs: list[dict[str, Any]], share: bool) -> dict[int, Inheritance]:
    """What every process of the tree inherits, or lends to its children (by pid).
    `share`: whether shared pages may come back shared (else they come back as copies)."""
    by_pid = {p["pid"]: p for p in procs}
    plans = {pid: Inheritance() for pid in by_pid}
    for p in procs:
        parent = by_pid.get(p["process"]["ppid"])
        with_cow = [v for v in p["memory"]["vmas"] if v.get("cow")]
        if parent is None or not with_cow:
            continue
        plan = plans[p["pid"]]
        if not share:
            plan.copy = True
            while parent is not None:
                plan.ancestors.append((parent["pid"], parent["memory"]))
                with_cow = any(v.get("cow") for v in parent["memory"]["vmas"])
                parent = by_pid.get(parent["process"]["ppid"]) if with_cow else None
            continue
        areas = [v for v in parent["memory"]["vmas"] if v["kind"] in ("anon", "file") and not v["shared"]]
        for v in with_cow:
            for area in areas:
                if area["start"] < v["end"] and v["start"] < area["end"] and same_lineage(v, area):
                    plan.kept.append((max(v["start"], area["start"]), min(v["end"], area["end"])))
                    plans[parent["pid"]].early.add(area["start"])
        plan.kept.sort()
    return plans


def same_lineage(v: dict[str, Any], area: dict[str, Any]) -> bool:
    """Whether a child's private mapping `v` may inherit the parent's `area` (_lineage)."""
    return v["kind"] == area["kind"] and (v["kind"] == "anon" or (
        v["path"] == area["path"] and v["offset"] - v["start"] == area["offset"] - area["start"]))


def early_files(rec: dict[str, Any], inheritance: Inheritance) -> list[str]:
    """Files restore_early maps (their fds must be in the process by then)."""
    return sorted({v["path"] for v in rec["vmas"] if v["start"] in inheritance.early and v["kind"] == "file"})


def restore_early(ctx: RestoreContext, rec: dict[str, Any], inheritance: Inheritance,
                  file_fds: dict[str, int]) -> None:
    """Map and fill the areas whose pages children of the process share, before they are
    forked from it, so that they inherit those pages (restore() then passes them over).
    `file_fds`: path -> fd in the process, for early_files."""
    vmas = [v for v in rec["vmas"] if v["start"] in inheritance.early]
    for v in vmas:
        _map_private(ctx, v, inheritance, file_fds.get(v["path"], -1))
    _write_pages(ctx, rec, vmas, inheritance)


def _writable(v: dict[str, Any], inheritance: Inheritance) -> bool:
    """Whether the restore writes pages into the area (mapped writable until it is done)."""
    return bool(v["pages"] or (inheritance.copy and v.get("cow")))


def _map_flags(v: dict[str, Any]) -> int:
    flags = (MAP_SHARED if v["shared"] else MAP_PRIVATE) | MAP_FIXED
    return flags | (MAP_GROWSDOWN if v["growsdown"] else 0) | (MAP_NORESERVE if v["noreserve"] else 0)


def _map_private(ctx: RestoreContext, v: dict[str, Any], inheritance: Inheritance, fd: int) -> None:
    """Map a private anonymous area (or one of the file `fd`), but for the parts kept from
    the parent: there, only the protection is set and the pages not shared with the parent
    are dropped (they read as zeros or the file's content, or get the process's own content
    written next)."""
    call = ctx.leader.call
    prot = v["prot"] | (PROT_READ | PROT_WRITE if _writable(v, inheritance) else 0)
    kept = _clip(inheritance.kept, v["start"], v["end"])
    for lo, hi in _gaps(kept, v["start"], v["end"]):
        if v["kind"] == "file":
            call("mmap", lo, hi - lo, prot, _map_flags(v), fd, v["offset"] + lo - v["start"])
        else:
            call("mmap", lo, hi - lo, prot, _map_flags(v) | MAP_ANONYMOUS, -1, 0)
    shared = [(addr, addr + length) for addr, length in v.get("cow", [])]
    for lo, hi in kept:
        call("mprotect", lo, hi - lo, prot)
        for start, end in _gaps(shared, lo, hi):
            call("madvise", start, end - start, mmap.MADV_DONTNEED)


def restore(ctx: RestoreContext, rec: dict[str, Any], file_fds: dict[str, int],
            shmem_fds: dict[str, int], inheritance: Inheritance | None = None) -> None:
    """Map every area and fill in its pages. `file_fds`: path -> fd in the restored process;
    `shmem_fds`: shared memory object key -> fd in the restored process; `inheritance`: its
    pages shared with its parent or children (plan_sharing)."""
    call = ctx.leader.call
    inheritance = inheritance or Inheritance()
    for v in rec["vmas"]:
        if v["kind"] in ("vdso", "vvar", "vvar_vclock") or v["start"] in inheritance.early:
            continue
        length = v["end"] - v["start"]
        flags = _map_flags(v)
        prot = v["prot"] | (PROT_READ | PROT_WRITE if _writable(v, inheritance) else 0)
        if v["kind"] == "file" and not v["shared"]:
            _map_private(ctx, v, inheritance, file_fds[v["path"]])
        elif v["kind"] == "file":
            call("mmap", v["start"], length, prot, flags, file_fds[v["path"]], v["offset"])
        elif v["kind"] == "shmem":
            call("mmap", v["start"], length, prot, flags, shmem_fds[v["shmem"]], v["offset"])
        elif v["kind"] == "sysv":
            sysvshm.ensure_segment(ctx, v["shmid"])
            if v["offset"] == 0:  # one attach maps the whole segment; later parts follow
                call("shmat", v["shmid"], v["start"], sysvshm.attach_flags(_attach_prot(rec["vmas"], v)))
        else:
            _map_private(ctx, v, inheritance, -1)
    on_demand = _lazy_vmas(rec) if ctx.lazy is not None else []
    _write_pages(ctx, rec, [v for v in rec["vmas"] if not any(v is w for w in on_demand)
                            and v["start"] not in inheritance.early], inheritance)
    if on_demand:
        _serve_lazily(ctx, rec, on_demand, inheritance)
    for v in rec["vmas"]:
        if v["kind"] in ("vdso", "vvar", "vvar_vclock"):
            continue
        length = v["end"] - v["start"]
        if (_writable(v, inheritance) and v["prot"] != PROT_READ | PROT_WRITE) or v["kind"] == "sysv":
            call("mprotect", v["start"], length, v["prot"])
        for flag in v["madvise"]:
            call("madvise", v["start"], length, _MADVISE[flag])
        if v["path"].startswith("[anon:"):
            name = ctx.scratch.cstring(v["path"][len("[anon:"):-1])
            call("prctl", PR_SET_VMA, PR_SET_VMA_ANON_NAME, v["start"], length, name)
            ctx.scratch.reset()


_PRIVATE_PAGES = ("anon", "file", "shmem")  # kinds whose private mappings hold saved pages

# Writing into a fresh address space is mostly page faults in the target, which run in the
# writing thread: several writers fault in parallel. Below a share this size one is quicker.
_WRITERS = min(4, os.cpu_count() or 1)
_MIN_SHARE = 64 << 20


def _write_in_parallel(pid: int, base: int, runs: list[tuple[int, int, int]]) -> int:
    """syscalls.vm_write_pairs over `runs`, split into equal shares for several threads
    (ctypes drops the GIL in the syscall). Returns the bytes written."""
    total = sum(length for _, length, _ in runs)
    workers = max(1, min(_WRITERS, total // _MIN_SHARE))
    if workers == 1 or not _can_start_threads():
        return syscalls.vm_write_pairs(pid, base, runs)
    shares = _split_evenly(runs, -(-total // workers))
    with ThreadPoolExecutor(len(shares), thread_name_prefix="ckpt-write") as pool:
        return sum(pool.map(lambda share: syscalls.vm_write_pairs(pid, base, share), shares))


def _can_start_threads() -> bool:
    """A process whose children are born in another PID namespace than its own may not
    start threads (clone fails with EINVAL): so it is in an unprivileged restore's helper,
    which enters a new PID namespace for good (userns.py)."""
    try:
        return os.readlink("/proc/self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")
    except FileNotFoundError:  # a new PID namespace that has no process yet
        return False


def _split_evenly(runs: list[tuple[int, int, int]], share: int) -> list[list[tuple[int, int, int]]]:
    """(address, length, offset) runs cut into consecutive groups of `share` bytes each
    (the last may hold less), splitting runs at page boundaries where needed."""
    share = -(-share // PAGE_SIZE) * PAGE_SIZE
    groups: list[list[tuple[int, int, int]]] = [[]]
    room = share
    for addr, length, off in runs:
        while length:
            if not room:
                groups.append([])
                room = share
            take = min(length, room)
            groups[-1].append((addr, take, off))
            addr, length, off, room = addr + take, length - take, off + take, room - take
    return groups


def _write_pages(ctx: RestoreContext, rec: dict[str, Any], vmas: list[dict[str, Any]],
                 inheritance: Inheritance) -> None:
    for v in vmas:
        if v["pages"] and (v["shared"] or v["kind"] not in _PRIVATE_PAGES):
            # the content of a shared mapping lives in its file or object: writing saved pages
            # there would write them into that file (schema.validate refuses this already)
            raise ImageError(f"pid {ctx.pid}: the image holds pages for the shared or special "
                             f"mapping {v['start']:#x}-{v['end']:#x} {v['path']}")
    sources = list(_runs_by_source(ctx, rec, vmas, inheritance))
    if not sources:
        return
    # Huge-page advice first (restore() repeats it, harmlessly): pages faulted in by the
    # writes below then come as the same kind of pages the process had, and 2 MiB at a time
    # instead of 512 separate 4 KiB faults.
    for v in vmas:
        for flag in ("hg", "nh"):
            if _writable(v, inheritance) and flag in v["madvise"]:
                ctx.leader.call("madvise", v["start"], v["end"] - v["start"], _MADVISE[flag])
    written = 0
    total = sum(n for _, _, runs in sources for _, n, _ in runs)
    for image, name, source_runs in sources:
        # (a page source: an image file's mapping, or a store's chunks, fetched as ensured)
        blob = image.page_source(name) if name else None
        if blob is None:
            raise CkptError(f"pid {ctx.ns_pid}: memory pages missing from {image.path}")
        try:  # each run from its own place in the blob (pre-copied pages are not in run order)
            for part in _slices(source_runs, _PROGRESS_STEP):  # (fetched, written, reported)
                blob.ensure([(offset, offset + length) for _, length, offset in part])
                written += _write_in_parallel(ctx.pid, blob.address, part)
                ctx.progress("memory", written, total)
        finally:
            blob.close()
    if written != total:
        raise CkptError(f"pid {ctx.pid}: wrote {written} of {total} bytes of memory")


_PROGRESS_STEP = 64 << 20  # bytes of pages fetched and written between progress reports


def _slices(runs: list[tuple[int, int, int]], size: int) -> Iterator[list[tuple[int, int, int]]]:
    """`runs` (address, length, offset) in consecutive groups of about `size` bytes each."""
    group: list[tuple[int, int, int]] = []
    held = 0
    for run in runs:
        group.append(run)
        held += run[1]
        if held >= size:
            yield group
            group, held = [], 0
    if group:
        yield group


def _runs_by_source(ctx: RestoreContext, rec: dict[str, Any], vmas: list[dict[str, Any]],
                    inheritance: Inheritance):
    """(image, blob name, runs) for each blob the pages of `vmas` come from: this image's
    blob, or (incremental images) a base image's; with `inheritance.copy`, the parent's
    too, for the pages shared with it."""
    by_source: dict[tuple[int, int, str], list[tuple[int, int, int]]] = {}
    for v in vmas:
        for run in v["pages"]:
            key = (run[3] if len(run) == 4 else -1, ctx.ns_pid, rec["pages_blob"])
            by_source.setdefault(key, []).append(tuple(run[:3]))
        if inheritance.copy and v.get("cow"):
            for pid, memory, run in _ancestor_runs(inheritance.ancestors, v["cow"]):
                key = (run[3] if len(run) == 4 else -1, pid, memory["pages_blob"])
                by_source.setdefault(key, []).append(tuple(run[:3]))
    for (source, pid, blob), source_runs in by_source.items():
        image = ctx.image if source < 0 else ctx.image.bases[source]
        name = blob if source < 0 else incremental.pages_blob_of(image, pid)
        yield image, name, source_runs


def _ancestor_runs(ancestors: list[tuple[int, dict[str, Any]]], cow: list[list[int]]):
    """(pid, memory record, run) for the saved runs of the `ancestors` (parent first) that
    hold the content of the `cow` runs: the parent's own pages there, or where it shared
    them with its parent in turn, that one's. Where none saved a page, it was all zeros:
    nothing to write."""
    wanted = [(a, a + n) for a, n in cow]
    for pid, memory in ancestors:
        starts = [lo for lo, _ in wanted]
        further: list[tuple[int, int]] = []
        for v in memory["vmas"]:
            for run in v["pages"]:
                for lo, hi in _clip_sorted(wanted, starts, run[0], run[0] + run[1]):
                    yield pid, memory, [lo, hi - lo, run[2] + lo - run[0], *run[3:]]
            for addr, length in v.get("cow", []):
                further += _clip_sorted(wanted, starts, addr, addr + length)
        wanted = sorted(further)
        if not wanted:
            return


def _clip_sorted(spans: list[tuple[int, int]], starts: list[int], start: int,
                 end: int) -> list[tuple[int, int]]:
    """_clip over disjoint sorted `spans` whose starts are `starts` (found by bisection)."""
    i = max(bisect.bisect_right(starts, start) - 1, 0)
    out = []
    while i < len(spans) and spans[i][0] < end:
        lo, hi = max(spans[i][0], start), min(spans[i][1], end)
        if lo < hi:
            out.append((lo, hi))
        i += 1
    return out


# Lazy restore (lazy.py): areas of private anonymous memory with at least this much data are
# left unwritten, registered with a userfaultfd, and filled in while the process runs.
LAZY_MIN_BYTES = 1 << 20


def _lazy_vmas(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Areas to fill on demand: private anonymous memory with enough data. Not areas wiped
    on fork (a child must see them empty, while lazily it would get the pending content)."""
    return [v for v in rec["vmas"] if v["kind"] == "anon" and not v["shared"] and "wf" not in v["madvise"]
            and sum(run[1] for run in v["pages"] + v.get("cow", [])) >= LAZY_MIN_BYTES]


def _serve_lazily(ctx: RestoreContext, rec: dict[str, Any], vmas: list[dict[str, Any]],
                  inheritance: Inheritance) -> None:
    """Register `vmas` for missing-page faults with a userfaultfd made in the process, and
    hand it with the content they lack to the page server."""
    try:
        fd = uffd.open_in(ctx.leader, os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        raise CkptError(f"lazy restore: userfaultfd in pid {ctx.pid}: {err.strerror}") from None
    from .. import lazy  # (only a lazy restore loads the page server's module)

    try:
        try:
            uffd.api(fd, lazy.FEATURES)
        except OSError as err:
            why = "it takes CAP_SYS_PTRACE" if err.errno == errno.EPERM else err.strerror
            raise CkptError(f"lazy restore: userfaultfd with fork and remap events: {why}") from None
        for v in vmas:
            try:
                uffd.register(fd, v["start"], v["end"] - v["start"], uffd.UFFDIO_REGISTER_MODE_MISSING)
            except OSError as err:
                raise CkptError(f"lazy restore: pid {ctx.pid} {v['start']:#x}-{v['end']:#x}: "
                                f"cannot register with userfaultfd: {err.strerror}") from None
        runs = []
        for image, name, source_runs in _runs_by_source(ctx, rec, vmas, inheritance):
            base = ctx.lazy.blob_address(image, name) if name else None
            if base is None:
                raise CkptError(f"pid {ctx.ns_pid}: memory pages missing from {image.path}")
            runs += [(addr, length, base + offset) for addr, length, offset in source_runs]
    except BaseException:
        os.close(fd)
        raise
    ctx.lazy.add(ctx.pid, fd, runs)


def _empty() -> dict[str, Any]:
    return {"vmas": []}


MEMORY = Resource("memory", record="memory", empty=_empty, dump_memory=dump)
