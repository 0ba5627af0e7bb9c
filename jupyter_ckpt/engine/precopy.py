"""Pre-copy: copy a process's memory while it keeps running, then freeze it only to copy
the pages it wrote meanwhile.

Dirty pages are tracked without soft-dirty bits (this kernel has none): a userfaultfd made
inside the target with UFFD_FEATURE_WP_ASYNC write-protects its private writable mappings;
the kernel lifts the protection by itself on the first write to a page (no handler, no
stall), and PAGEMAP_SCAN with PM_SCAN_WP_MATCHING returns exactly the pages written since
the last scan while protecting them again. Rounds repeat while the dirty set shrinks.

Copies go to one blob; a page copied again later supersedes its earlier copy (the final
map points at the newest one). The blob only grows, so it is checksummed as it is written
and its writeback starts as it goes: commit neither reads it again nor waits long for the
disk. While the process runs, a reader thread copies the next piece of memory while the
previous one is checked for zeros and written. A page found all zero is recorded as such
and not written (zeropages.py): that check, too, is done mostly while the process runs.
Registration is undone before the process runs freely again, and on any failure, so the
process is left as it was.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import fcntl
import logging
import mmap
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

import xxhash

from . import faults, guard, ptrace_ext, uffd, zeropages
from .errors import CkptError
from .image import _SYNC_FILE_RANGE_WRITE, _WRITEBACK, BlobStream
from .libc import libc
from .inject import RemoteMemory, RemoteThread, syscall_gadget
from .pagemap import PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_SIZE, PageScanner
from .procfs import Vma, read_vmas
from .uffd import (UFFD_API, UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_UNPOPULATED, UFFD_USER_MODE_ONLY,
                   UFFDIO_API, UFFDIO_REGISTER, UFFDIO_REGISTER_MODE_WP, UFFDIO_UNREGISTER)

log = logging.getLogger(__name__)

PAGE_IS_WRITTEN = 1 << 1
PM_SCAN_WP_MATCHING = 1
_MAX_ROUNDS = 4
_PFN_MASK = (1 << 55) - 1
_CHUNK = 4 << 20  # per read; two such buffers: one being read into, one being written out
ZERO = -1  # the "blob offset" of a page found all zero: nothing of it is stored


# Below this much private memory in the tree pre-copy is skipped: copying it all while
# frozen takes a few ms, less than setting up write tracking and copying twice.
# JUPYTER_CKPT_PRECOPY_MIN (bytes) overrides it (0: always pre-copy, as the tests do).
PRECOPY_MIN = 32 << 20
PRECOPY_MIN_ENV = "JUPYTER_CKPT_PRECOPY_MIN"


def worth_precopying(pids: list[int]) -> bool:
    """Whether the tree holds enough memory for pre-copy to shorten its freeze."""
    limit = int(os.environ.get(PRECOPY_MIN_ENV, PRECOPY_MIN))
    if limit <= 0:
        return True
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"RssAnon:"):
                        total += int(line.split()[1]) << 10  # kB
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone: the freeze reports it
        if total >= limit:
            return True
    return False


class Unavailable(Exception):
    """Pre-copy cannot track this process (old kernel, no userfaultfd): dump without it."""


def _trackable(vma: Vma) -> bool:
    return not vma.shared and vma.perms[1] == "w" and not vma.path.startswith("[v") \
        and "uw" not in vma.vmflags and "um" not in vma.vmflags and "ht" not in vma.vmflags


class DirtyTracker:
    """Write-protection based dirty tracking of one process's private writable memory."""

    def __init__(self, pid: int):
        self.pid = pid
        self.fd = _userfaultfd_in(pid)
        self.ranges: list[tuple[int, int]] = []
        try:
            api = struct.pack("QQQ", UFFD_API, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, 0)
            fcntl.ioctl(self.fd, UFFDIO_API, bytearray(api))
        except OSError as err:
            os.close(self.fd)
            raise Unavailable(f"userfaultfd write-protect tracking: {err.strerror}") from None

    def register(self, vmas: Iterable[Vma]) -> None:
        for vma in vmas:
            if not _trackable(vma):
                continue
            arg = bytearray(struct.pack("QQQQ", vma.start, vma.size, UFFDIO_REGISTER_MODE_WP, 0))
            try:
                fcntl.ioctl(self.fd, UFFDIO_REGISTER, arg)
            except OSError:
                continue  # not registrable (e.g. gone meanwhile): it is copied whole when frozen
            self.ranges.append((vma.start, vma.end))

    def tracks(self, vma: Vma) -> bool:
        """Whether writes to this mapping since registration were seen. A mapping made since
        has no registration ("uw"). (One moved here by mremap still has it: page frames
        tell those pages apart, see PreCopy.finish.)"""
        if "uw" not in vma.vmflags:
            return False
        return any(s <= vma.start and vma.end <= e for s, e in self.ranges)

    def close(self) -> None:
        """Undo every registration: the process's mappings are as they were."""
        for start, end in self.ranges:
            try:
                fcntl.ioctl(self.fd, UFFDIO_UNREGISTER, bytearray(struct.pack("QQ", start, end - start)))
            except OSError as err:  # unmapped since: nothing registered there any more
                log.debug("pid %d: unregistering %#x-%#x: %s", self.pid, start, end, err)
        self.ranges.clear()
        os.close(self.fd)


def _userfaultfd_in(pid: int) -> int:
    """A userfaultfd for `pid`'s address space: made by it (injected), handed to us. It never
    enters the process's fd table (uffd.open_in_own_thread): a dump killed at any moment
    leaves none there. That needs a guarded thread (guard.py) and Linux >= 6.9."""
    try:
        ptrace_ext.seize(pid, ptrace_ext.O_TRACESYSGOOD | ptrace_ext.O_TRACECLONE)
    except ptrace_ext.PtraceError as err:
        raise Unavailable(f"cannot trace pid {pid}: {err}") from None
    try:
        ptrace_ext.interrupt(pid)
        stop = ptrace_ext.wait(pid)
        if stop.event != ptrace_ext.EVENT_STOP:
            raise Unavailable(f"pid {pid}: {stop.describe()}")
        mem = RemoteMemory(pid)
        try:
            try:
                thread = RemoteThread(pid, syscall_gadget(mem))
                mask = ptrace_ext.get_sigmask(pid)
                code = guard.find_code(mem)
                if not code or not guard.arm(thread, mem, mask, code):
                    raise Unavailable(f"pid {pid}: its thread cannot be guarded while we inject")
            except CkptError as err:
                raise Unavailable(str(err)) from None
            thread.block_signals()
            try:
                try:
                    fd = uffd.open_in_own_thread(thread, mem, os.O_CLOEXEC | os.O_NONBLOCK | UFFD_USER_MODE_ONLY)
                except OSError as err:
                    raise Unavailable(f"userfaultfd: {err.strerror}") from None
                except faults.InjectedFault:
                    raise
                except CkptError as err:
                    raise Unavailable(str(err)) from None
            finally:
                thread.restore_live(mask)
        finally:
            mem.close()
        return fd
    finally:
        ptrace_ext.detach(pid)


class PreCopy:
    """Pages of one process copied ahead of its freeze, into a blob in `blob_dir`, or
    into the stream `open_stream(blob name)` gives (no file) if it gives one."""

    def __init__(self, pid: int, blob_dir: str,
                 open_stream: Callable[[str], BlobStream | None] | None = None):
        self.pid = pid
        self.blob_name = f"pages-{pid}.bin"
        self.tracker = DirtyTracker(pid)
        self.stream = open_stream(self.blob_name) if open_stream is not None else None
        self.blob = -1
        try:
            if self.stream is None:
                self.blob = os.open(os.path.join(blob_dir, self.blob_name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            self.tracker.close()
            raise
        self.size = 0
        # blob offsets below are ZERO for pages found all zero
        self.first: list[list[int]] = []  # [start, end, offset] of the first round, by address
        self.newer: dict[int, int] = {}  # page -> offset of a later copy (supersedes `first`)
        self.rounds: list[int] = []  # bytes copied per round
        self._frozen = False
        # Page frame of every copied page when it was copied: a page is reused only if it is
        # unwritten *and* still on the same frame, which also rejects pages that mremap moved
        # onto an address copied earlier for another mapping.
        # Raw pagemap entries (frame number and flags, 8 bytes a page) are compared as bytes:
        # any difference, not only another frame, just means the page is copied again.
        self.frames: dict[int, bytearray] = {}  # first-round interval start -> entries
        self.newer_frames: dict[int, bytes] = {}
        self.pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self.frames_visible = _frames_visible()
        self._ahead: list[tuple[int, int, bytes]] = []  # (start, end, entries) read while frozen
        self._ahead_thread: threading.Thread | None = None
        self.scanner = PageScanner(pid)
        self._bufs = [mmap.mmap(-1, _CHUNK) for _ in range(2)]  # mmaps: zeropages compares in place
        self._bases = [ctypes.addressof(ctypes.c_char.from_buffer(b)) for b in self._bufs]
        self._digest = xxhash.xxh3_128()  # of the blob's bytes [0, size)
        self._written_back = 0  # bytes of the blob handed to writeback
        self.cancelled = False  # set from another thread: stop copying at the next piece

    def checksum(self) -> str:
        """xxh3-128 of the blob as written so far (the image's checksum of it)."""
        return self._digest.hexdigest()

    def run(self) -> None:
        """Copy everything, then what was written meanwhile, while that keeps shrinking."""
        self.tracker.register(read_vmas(self.pid))
        self.rounds.append(self._copy(self._scan(written_only=False), first=True))
        faults.point("dump.during-precopy", log)
        while len(self.rounds) < _MAX_ROUNDS:
            copied = self._copy(self._scan(written_only=True), first=False)
            self.rounds.append(copied)
            if copied == 0 or copied >= self.rounds[-2]:
                break
        if self.stream is not None:
            # The freeze must not wait for the stream: let it catch up, then copy what was
            # written meanwhile.
            self.stream.drain()
            self.rounds.append(self._copy(self._scan(written_only=True), first=False))

    def _scan(self, written_only: bool) -> list[tuple[int, int]]:
        runs: list[tuple[int, int]] = []
        for start, end in self.tracker.ranges:
            runs += self.scanner.scan(start, end, required=PAGE_IS_WRITTEN if written_only else 0,
                                      anyof=PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                                      flags=PM_SCAN_WP_MATCHING)
        return runs

    def _copy(self, runs: list[tuple[int, int]], first: bool, keep_zeros: bool = False) -> int:
        """Append copies of `runs`; returns the bytes copied (unreadable pages are skipped).
        All-zero pages are recorded as ZERO and not written, unless `keep_zeros`.
        While the process runs, the next piece is read in a thread while one is stored."""
        pieces = [(addr + done, min(length - done, _CHUNK))
                  for addr, length in runs for done in range(0, length, _CHUNK)]
        if self._frozen or len(pieces) < 2:
            return sum(self._store(0, self._fill(0, a, n), first, keep_zeros) for a, n in pieces)
        copied = 0
        with ThreadPoolExecutor(1, thread_name_prefix="ckpt-read") as reader:
            ahead = reader.submit(self._fill, 0, *pieces[0])
            for i in range(len(pieces)):
                filled = ahead.result()
                if i + 1 < len(pieces):
                    ahead = reader.submit(self._fill, (i + 1) % 2, *pieces[i + 1])
                copied += self._store(i % 2, filled, first, keep_zeros)
        return copied

    def _fill(self, slot: int, addr: int, length: int) -> list[tuple[int, int, int, bytes]]:
        """Read [addr, addr+length) into buffer `slot`: (address, buffer offset, bytes,
        page entries) segments of what could be read. The page entries are read just
        before the pages: a page replaced in between then shows another frame at the
        freeze, and is copied again."""
        if self.cancelled:
            raise CkptError(f"pid {self.pid}: pre-copy cancelled")
        segments: list[tuple[int, int, int, bytes]] = []
        frames = self._frames(addr, length)
        done = at = 0
        while done < length:
            # (through the scanner: it keeps pages shared with another process shared)
            n = self.scanner.read(self._bases[slot] + at, addr + done, length - done)
            n -= n % PAGE_SIZE
            if n == 0 and self._frozen:
                n = self._read_forced(addr + done, slot, at)  # PROT_NONE with data: via /proc/PID/mem
            if n == 0:
                done += PAGE_SIZE  # not readable while running: copied when frozen
                continue
            segments.append((addr + done, at, n, frames[done // PAGE_SIZE * 8:(done + n) // PAGE_SIZE * 8]))
            done += n
            at += n
        return segments

    def _store(self, slot: int, segments: list[tuple[int, int, int, bytes]], first: bool,
               keep_zeros: bool) -> int:
        """Append the segments read into buffer `slot` to the blob and record them."""
        buf = self._bufs[slot]
        for start, at, n, frames in segments:
            pieces = [(at, at + n, False)] if keep_zeros else zeropages.split(buf, at, at + n)
            for lo, hi, zero in pieces:
                offset = ZERO if zero else self.size
                if not zero:
                    self._append(memoryview(buf)[lo:hi])
                entries = frames[(lo - at) // PAGE_SIZE * 8:(hi - at) // PAGE_SIZE * 8]
                self._record(start + lo - at, hi - lo, offset, entries, first)
        return sum(n for _, _, n, _ in segments)

    def _append(self, data: memoryview) -> None:
        """Write `data` at the end of the blob, checksum it while it is in cache, and start
        its writeback every few MiB."""
        if self.stream is not None:
            self.stream.write(data)
            self._digest.update(data)
            self.size += len(data)
            data.release()
            return
        done = 0
        while done < len(data):
            n = os.pwrite(self.blob, data[done:], self.size + done)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += n
        self._digest.update(data)
        data.release()
        self.size += done
        if self.size - self._written_back >= _WRITEBACK:
            libc.sync_file_range(self.blob, self._written_back, self.size - self._written_back,
                             _SYNC_FILE_RANGE_WRITE)  # only a hint: errors surface at fsync
            self._written_back = self.size

    def _record(self, start: int, length: int, offset: int, frames: bytes, first: bool) -> None:
        """Note where the copy of [start, start+length) is (or ZERO), and the page entries
        it was taken with."""
        if first:
            last = self.first[-1] if self.first else None
            if last and _continues(last, start, offset):
                last[1] += length
                self.frames[last[0]] += frames
            else:
                self.first.append([start, start + length, offset])
                self.frames[start] = bytearray(frames)
            return
        for i, page in enumerate(range(start, start + length, PAGE_SIZE)):
            self.newer[page] = ZERO if offset == ZERO else offset + i * PAGE_SIZE
            self.newer_frames[page] = frames[i * 8:i * 8 + 8]

    def read_frames_ahead(self) -> None:
        """With the process just frozen: read the pagemap entries of everything copied so
        far in a thread, while the rest of its state is collected; finish() compares them.
        (Reading pagemap is a page table walk: ~50 ms at 4 GiB that need not add up.)"""
        if not self.frames_visible or not self.first:
            return
        spans: list[list[int]] = []
        for start, end, _ in self.first:
            if spans and spans[-1][1] == start:
                spans[-1][1] = end
            else:
                spans.append([start, end])
        self._ahead_thread = threading.Thread(target=self._read_spans, args=(spans,),
                                              name="ckpt-pagemap", daemon=True)
        self._ahead_thread.start()

    def _read_spans(self, spans: list[list[int]]) -> None:
        try:
            self._ahead = [(start, end, self._read_frames(start, end - start)) for start, end in spans]
        except OSError:
            self._ahead = []  # finish() reads them itself, and reports what fails

    def _frames(self, addr: int, length: int) -> bytes:
        """Raw pagemap entries of [addr, addr+length), 8 bytes a page."""
        if self._ahead_thread is not None:
            self._ahead_thread.join()
            self._ahead_thread = None
        i = bisect.bisect_right(self._ahead, (addr, float("inf"))) - 1
        if i >= 0 and self._ahead[i][0] <= addr and addr + length <= self._ahead[i][1]:
            at = (addr - self._ahead[i][0]) // PAGE_SIZE * 8
            return self._ahead[i][2][at:at + length // PAGE_SIZE * 8]
        return self._read_frames(addr, length)

    def _read_frames(self, addr: int, length: int) -> bytes:
        return os.pread(self.pagemap, length // PAGE_SIZE * 8, addr // PAGE_SIZE * 8)

    def _moved(self, runs: list[list[int]]) -> list[tuple[int, int]]:
        """Pages of `runs` whose copy was taken when the page's entry (frame, flags) was not
        what it is now: copied again while frozen."""
        if not self.frames_visible:  # without frame numbers nothing tells moved pages apart
            return [(a, n) for a, n in runs]
        stale: list[tuple[int, int]] = []
        for addr, length in runs:
            now = self._frames(addr, length)
            for lo, hi, off in self._covered(addr, addr + length):
                at = (lo - addr) // PAGE_SIZE * 8
                size = (hi - lo) // PAGE_SIZE * 8
                if off is None:
                    then = b"".join(self.newer_frames.get(p, b"") for p in range(lo, hi, PAGE_SIZE))
                else:
                    start = self._interval_start(lo)
                    first_at = (lo - start) // PAGE_SIZE * 8
                    then = bytes(self.frames[start][first_at:first_at + size])
                    if not any(lo <= p < hi for p in self._newer_in(lo, hi)):
                        if now[at:at + size] == then:
                            continue  # the common case: one comparison for the whole piece
                    then = bytearray(then)
                    for page in self._newer_in(lo, hi):  # later copies supersede
                        i = (page - lo) // PAGE_SIZE * 8
                        then[i:i + 8] = self.newer_frames[page]
                    then = bytes(then)
                if now[at:at + size] == then:
                    continue
                for i in range(0, size, 8):
                    if now[at + i:at + i + 8] != then[i:i + 8] or not any(now[at + i:at + i + 8]):
                        stale.append((lo + i // 8 * PAGE_SIZE, PAGE_SIZE))
        return stale

    def _newer_in(self, lo: int, hi: int) -> list[int]:
        keys = self._newer_sorted
        return keys[bisect.bisect_left(keys, lo):bisect.bisect_left(keys, hi)]

    def _interval_start(self, addr: int) -> int:
        i = bisect.bisect_right(self.first, [addr, float("inf")]) - 1
        return self.first[i][0]

    def _read_forced(self, addr: int, slot: int, at: int) -> int:
        fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            got = os.preadv(fd, [memoryview(self._bufs[slot])[at:at + PAGE_SIZE]], addr)
        finally:
            os.close(fd)
        if got != PAGE_SIZE:
            raise CkptError(f"pid {self.pid}: cannot read memory at {addr:#x}")
        return PAGE_SIZE

    def finish(self, records: list[dict[str, Any]]) -> int:
        """With the process frozen: copy what was written since the last round and any data
        page never copied, then point each VMA record's runs at the newest copies, leaving
        out all-zero pages where zeropages.droppable allows. Returns the bytes copied while
        frozen."""
        self._frozen = True
        self._newer_sorted = sorted(self.newer)
        before = self.size
        for rec in records:
            if not rec["pages"]:
                continue
            keep_zeros = not zeropages.droppable(rec)
            if rec["tracked"]:
                self._copy(self.scanner.scan(rec["start"], rec["end"], required=PAGE_IS_WRITTEN,
                                             anyof=PAGE_IS_PRESENT | PAGE_IS_SWAPPED),
                           first=False, keep_zeros=keep_zeros)
                self._newer_sorted = sorted(self.newer)
                self._copy(_coalesce(self._moved(rec["pages"])), first=False, keep_zeros=keep_zeros)
            else:  # earlier copies of this range may be of another mapping: copy it afresh
                self._copy([(a, n) for a, n in rec["pages"]], first=False, keep_zeros=keep_zeros)
        for rec in records:
            if not rec["pages"]:
                continue
            keep_zeros = not zeropages.droppable(rec)
            self._copy(_coalesce(self._never_copied(rec["pages"])), first=False, keep_zeros=keep_zeros)
            if keep_zeros:  # pages found zero before the freeze must be stored after all
                self._copy(_coalesce(self._found_zero(rec["pages"])), first=False, keep_zeros=True)
        newer_pages = sorted(self.newer)
        for rec in records:
            if rec["pages"]:
                rec["pages"] = self._layout(rec["pages"], newer_pages)
        return self.size - before

    def _covered(self, start: int, end: int) -> Iterable[tuple[int, int, int | None]]:
        """Split [start, end) into (from, to, offset in the first round (or ZERO) or None)
        pieces."""
        i = bisect.bisect_right(self.first, [start, float("inf")]) - 1
        i = max(i, 0)
        pos = start
        while pos < end:
            while i < len(self.first) and self.first[i][1] <= pos:
                i += 1
            if i < len(self.first) and self.first[i][0] <= pos:
                s, e, off = self.first[i]
                stop = min(e, end)
                yield pos, stop, off if off == ZERO else off + pos - s
            else:
                stop = min(end, self.first[i][0]) if i < len(self.first) else end
                yield pos, stop, None
            pos = stop

    def _never_copied(self, runs: list[list[int]]) -> list[tuple[int, int]]:
        missing = []
        for addr, length in runs:
            for lo, hi, off in self._covered(addr, addr + length):
                if off is None:
                    missing += [(p, PAGE_SIZE) for p in range(lo, hi, PAGE_SIZE) if p not in self.newer]
        return missing

    def _found_zero(self, runs: list[list[int]]) -> list[tuple[int, int]]:
        """Pages of `runs` whose newest copy is ZERO."""
        zero = []
        for addr, length in runs:
            for lo, hi, off in self._covered(addr, addr + length):
                zero += [(p, PAGE_SIZE) for p in range(lo, hi, PAGE_SIZE)
                         if self.newer.get(p, off) == ZERO]
        return zero

    def _layout(self, runs: list[list[int]], newer_pages: list[int]) -> list[list[int]]:
        """[addr, length, blob offset] runs over `runs`, newest copy of every page; pages
        whose newest copy is ZERO are left out."""
        out: list[list[int]] = []

        def emit(page: int, length: int, offset: int) -> None:
            if offset == ZERO:
                return
            if out and out[-1][0] + out[-1][1] == page and out[-1][2] + out[-1][1] == offset:
                out[-1][1] += length
            else:
                out.append([page, length, offset])

        for addr, length in runs:
            for lo, hi, off in self._covered(addr, addr + length):
                if off is None:
                    for page in range(lo, hi, PAGE_SIZE):
                        emit(page, PAGE_SIZE, self.newer[page])
                    continue
                pos = lo
                k = bisect.bisect_left(newer_pages, lo)
                while k < len(newer_pages) and newer_pages[k] < hi:
                    page = newer_pages[k]
                    if page > pos:
                        emit(pos, page - pos, off if off == ZERO else off + pos - lo)
                    emit(page, PAGE_SIZE, self.newer[page])
                    pos = page + PAGE_SIZE
                    k += 1
                if pos < hi:
                    emit(pos, hi - pos, off if off == ZERO else off + pos - lo)
        return out

    def tracks(self, vma: Vma) -> bool:
        return self.tracker.tracks(vma)

    def close(self) -> None:
        if self._ahead_thread is not None:
            self._ahead_thread.join()
        self.tracker.close()
        self.scanner.close()
        if self.blob >= 0:
            os.close(self.blob)
        os.close(self.pagemap)


def _frames_visible() -> bool:
    """Whether pagemap shows us frame numbers (it does to CAP_SYS_ADMIN only)."""
    probe = bytearray(PAGE_SIZE)
    probe[0] = 1
    addr = ctypes.addressof(ctypes.c_char.from_buffer(probe))
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        (entry,) = struct.unpack("<Q", os.pread(fd, 8, addr // PAGE_SIZE * 8))
    finally:
        os.close(fd)
    return bool(entry & _PFN_MASK)


def _continues(interval: list[int], start: int, offset: int) -> bool:
    """Whether a copy of the pages at `start`, at blob `offset` (or ZERO), extends the
    first-round [start, end, offset] `interval`."""
    if interval[1] != start:
        return False
    if ZERO in (offset, interval[2]):
        return offset == interval[2]
    return interval[2] + interval[1] - interval[0] == offset


def _coalesce(pages: list[tuple[int, int]]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for addr, length in pages:
        if runs and runs[-1][0] + runs[-1][1] == addr:
            runs[-1] = (runs[-1][0], runs[-1][1] + length)
        else:
            runs.append((addr, length))
    return runs
