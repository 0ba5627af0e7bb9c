"""Which pages of a range hold data worth saving, via the PAGEMAP_SCAN ioctl (Linux >= 6.7).

One ioctl returns whole runs of pages by category, so finding the 2 touched pages of a 64 MiB
sparse region costs one call, not 16384 pagemap entries.
"""
from __future__ import annotations

import ctypes
import errno
import os

from .errors import CkptError
from .libc import libc

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

PAGE_IS_FILE = 1 << 2  # file-backed page, or shared anonymous memory
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
PAGE_IS_PFNZERO = 1 << 5

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
        self.fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        self.vec = (_Region * _VEC_LEN)()

    def close(self) -> None:
        os.close(self.fd)

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
