"""Which pages of a range hold data worth saving, via the PAGEMAP_SCAN ioctl (Linux >= 6.7).

One ioctl returns whole runs of pages by category, so finding the 2 touched pages of a 64 MiB
sparse region costs one call, not 16384 pagemap entries.

Also which pages a process shares with another (copy-on-write after a fork), from the plain
pagemap entries: process_vm_readv pins the pages it reads, and the kernel answers a pin of a
shared anonymous page by giving the process a copy of its own. Reading a forked tree that way
would double its memory and lose the sharing; those pages are read through /proc/PID/mem,
which does not pin (read()).
"""
from __future__ import annotations

import array
import bisect
import ctypes
import errno
import os

from . import syscalls
from .errors import CkptError
from .libc import libc

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

PAGE_IS_FILE = 1 << 2  # file-backed page, or shared anonymous memory
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5

_PM_PRESENT = 1 << 63  # /proc/PID/pagemap entry: bit 63 present, bits 0-54 the frame number
_PM_FRAME = (1 << 55) - 1
_FRAMES_PER_READ = 1 << 16
# The top byte of each entry: bit 7 present, bit 5 a file page (or shared memory), bit 0
# mapped by this process only. An anonymous page present and not exclusive is shared.
_SHARED_ANON = bytes(int(b & 0xA1 == 0x80) for b in range(256))
_SPAN = 64 << 20  # runs within this much address space share one read of pagemap

_PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg)
_VEC_LEN = 4096


class _ScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _Region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]




class PageScanner:
    def __init__(self, pid: int):
        self.pid = pid
        self.fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self.vec = (_Region * _VEC_LEN)()
        self.mem = -1  # /proc/PID/mem, once needed
        self.sharing: list[tuple[int, int]] | None = None  # where shared pages can be (None: anywhere)

    def sharing_within(self, areas: list[tuple[int, int]]) -> None:
        """Only the sorted (from, to) `areas` can hold pages mapped by other processes too
        (smaps counts them per mapping): split_shared reads no pagemap for runs elsewhere."""
        self.sharing = areas

    def close(self) -> None:
        os.close(self.fd)
        if self.mem >= 0:
            os.close(self.mem)

    def data_runs(self, start: int, end: int, anonymous_only: bool) -> list[tuple[int, int]]:
        """(address, length) runs of pages that hold data: present or swapped, never the
        shared zero page; with `anonymous_only`, not file pages either (for private file
        mappings: only copy-on-write pages differ from the file)."""
        excluded = PAGE_IS_PFNZERO | (PAGE_IS_FILE if anonymous_only else 0)
        return self.scan(start, end, required=0, anyof=PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                         excluded=excluded)

    def scan(self, start: int, end: int, required: int, anyof: int, excluded: int = PAGE_IS_PFNZERO,
             flags: int = 0) -> list[tuple[int, int]]:
        """Runs of pages having every `required` category, one of `anyof`, none of `excluded`
        (`flags`: PM_SCAN_* such as write-protecting what matched)."""
        arg = _ScanArg(size=ctypes.sizeof(_ScanArg), flags=flags, start=start, end=end,
                       vec=ctypes.addressof(self.vec), vec_len=_VEC_LEN,
                       category_inverted=excluded, category_mask=excluded | required,
                       category_anyof_mask=anyof, return_mask=anyof | required)
        runs: list[tuple[int, int]] = []
        while arg.start < end:
            n = libc.ioctl(self.fd, _PAGEMAP_SCAN, ctypes.byref(arg))
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.ENOTTY:
                    raise CkptError("this kernel lacks PAGEMAP_SCAN (Linux >= 6.7 is required)")
                raise OSError(err, f"PAGEMAP_SCAN: {os.strerror(err)}")
            for region in self.vec[:n]:
                if runs and runs[-1][0] + runs[-1][1] == region.start:
                    runs[-1] = (runs[-1][0], runs[-1][1] + region.end - region.start)
                else:
                    runs.append((region.start, region.end - region.start))
            arg.start = arg.walk_end
        return runs

    def split_shared(self, runs: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
        """`runs` cut into (address, length, shared) pieces: `shared` where the anonymous
        pages are mapped by other processes too (copy-on-write after a fork). Runs close
        together in address order share one read of pagemap."""
        out: list[tuple[int, int, bool]] = []
        i = 0
        while i < len(runs):
            lo = hi = runs[i][0]
            j = i
            while j < len(runs) and runs[j][0] >= hi and (j == i or runs[j][0] + runs[j][1] - lo <= _SPAN):
                hi = runs[j][0] + runs[j][1]
                j += 1
            marks = self._entries(lo, hi)[7::8].translate(_SHARED_ANON) if self._may_share(lo, hi) else b""
            if b"\1" not in marks:
                out += [(addr, length, False) for addr, length in runs[i:j]]
            else:
                for addr, length in runs[i:j]:
                    pos = (addr - lo) // PAGE_SIZE
                    stop = pos + length // PAGE_SIZE
                    while pos < stop:
                        shared = marks[pos] == 1
                        end = marks.find(b"\0" if shared else b"\1", pos, stop)
                        end = stop if end < 0 else end
                        out.append((lo + pos * PAGE_SIZE, (end - pos) * PAGE_SIZE, shared))
                        pos = end
            i = j
        return out

    def _may_share(self, start: int, end: int) -> bool:
        if self.sharing is None:
            return True
        i = bisect.bisect_right(self.sharing, (start, float("inf"))) - 1
        return any(lo < end and start < hi for lo, hi in self.sharing[max(i, 0):i + 2])

    def read(self, local: int, addr: int, length: int) -> int:
        """Copy [addr, addr+length) of the process to our address `local` like
        process_vm_readv, but its shared pages through /proc/PID/mem (see the module's
        docstring). Returns the bytes copied before the first page that cannot be read."""
        done = 0
        for start, size, shared in self.split_shared([(addr, length)]):
            got = self.read_shared(local + done, start, size) if shared else \
                syscalls.vm_read(self.pid, local + done, [(start, size)])
            done += got
            if got < size:
                break
        return done

    def read_shared(self, local: int, addr: int, length: int) -> int:
        """Copy [addr, addr+length) to our address `local` through /proc/PID/mem (which
        does not unshare pages); returns the bytes copied."""
        if self.mem < 0:
            self.mem = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        view = memoryview((ctypes.c_char * length).from_address(local)).cast("B")
        try:
            return os.preadv(self.mem, [view], addr)
        except OSError:
            return 0
        finally:
            view.release()

    def _entries(self, start: int, end: int) -> bytes:
        """The raw pagemap entries of [start, end), 8 bytes a page."""
        parts = []
        for lo in range(start, end, _FRAMES_PER_READ * PAGE_SIZE):
            size = (min(end, lo + _FRAMES_PER_READ * PAGE_SIZE) - lo) // PAGE_SIZE * 8
            data = os.pread(self.fd, size, lo // PAGE_SIZE * 8)
            if len(data) != size:
                raise CkptError(f"pid {self.pid}: short read of its pagemap at {lo:#x}")
            parts.append(data)
        return b"".join(parts)

    def frames(self, start: int, end: int) -> array.array:
        """The page frame number of each page of [start, end): 0 where no page is present,
        and everywhere when the kernel hides frame numbers (they take CAP_SYS_ADMIN)."""
        entries = array.array("Q", self._entries(start, end))
        return array.array("Q", (e & _PM_FRAME if e & _PM_PRESENT else 0 for e in entries))

    def same_frames(self, other: "PageScanner", start: int, end: int) -> list[tuple[int, int]]:
        """(address, length) runs of [start, end) where this process and `other` have the
        very same page frame at the same address: memory a fork left shared copy-on-write."""
        runs: list[tuple[int, int]] = []
        for i, (a, b) in enumerate(zip(self.frames(start, end), other.frames(start, end))):
            if a and a == b:
                addr = start + i * PAGE_SIZE
                if runs and runs[-1][0] + runs[-1][1] == addr:
                    runs[-1] = (runs[-1][0], runs[-1][1] + PAGE_SIZE)
                else:
                    runs.append((addr, PAGE_SIZE))
        return runs
