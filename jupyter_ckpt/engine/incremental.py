"""Incremental images: `dump --parent PREV` stores only the memory pages that differ from
what PREV (or an image PREV itself builds on) holds for the same address.

Pages are compared byte for byte after the tree runs on again, so the freeze is not longer
for it. A page equal to its base's is not written; its run names the base instead:
[address, length, offset in that base's pages blob, base index]. The bases are listed in
the manifest with the checksum of their manifests, found relative to the image, and
verified like the image itself before a restore, so restoring needs nothing but the
directories. Only memory pages are shared; other blobs are always stored whole.
"""
from __future__ import annotations

import bisect
import mmap
import os
from typing import Any

from .image import ImageReader, ImageWriter, append_run

PAGE = 4096


def rebase(manifest: dict[str, Any], writer: ImageWriter, parent_path: str) -> int:
    """Drop from the new image's page blobs every page its parent chain already holds.
    Returns the number of bytes no longer written."""
    parent = ImageReader(parent_path)
    final_dir = writer.path  # base paths are relative to the image that names them
    bases = [_base_entry(parent, final_dir)] + [
        {**b, "path": os.path.relpath(os.path.abspath(os.path.join(parent.path, b["path"])), final_dir)}
        for b in parent.manifest.get("bases", [])]
    readers = [parent] + parent.bases
    used: set[int] = set()
    saved = 0
    by_pid = {p["pid"]: p for p in parent.manifest["processes"]}
    for proc in manifest["processes"]:
        old = by_pid.get(proc["pid"])
        name = proc["memory"].get("pages_blob")
        if old is None or not name:
            continue
        saved += _rebase_process(proc, old, parent, readers, writer, name, used)
    if used:
        index = {old: new for new, old in enumerate(sorted(used))}
        manifest["bases"] = [bases[i] for i in sorted(used)]
        for proc in manifest["processes"]:
            for vma in proc["memory"]["vmas"]:
                for run in vma["pages"]:
                    if len(run) == 4:
                        run[3] = index[run[3]]
    return saved


def _base_entry(image: ImageReader, final_dir: str) -> dict[str, Any]:
    return {"path": os.path.relpath(os.path.abspath(image.path), final_dir),
            "manifest_xxh3_128": image.manifest["manifest_xxh3_128"]}


def _rebase_process(proc: dict[str, Any], old: dict[str, Any], parent: ImageReader,
                    readers: list[ImageReader], writer: ImageWriter, name: str, used: set[int]) -> int:
    """Compare each new page with the page its parent chain holds at that address."""
    held = _held(old)
    starts = [h[0] for h in held]
    blobs = [_pages_blob(r, proc["pid"]) for r in readers]
    new = _map(writer.blob_path(name))
    kept = bytearray()
    saved = 0
    for vma in proc["memory"]["vmas"]:
        runs: list[list[int]] = []
        for addr, length, offset, *_ in vma["pages"]:
            for lo, hi, hit in _segments(held, starts, addr, addr + length):
                at = offset + lo - addr
                base_blob = blobs[hit[0]] if hit is not None else None
                pieces = [(0, hi - lo, False)] if base_blob is None else \
                    _same_pieces(new, at, base_blob, hit[1], hi - lo)
                for start, end, same in pieces:
                    if same:
                        used.add(hit[0])
                        append_run(runs, [lo + start, end - start, hit[1] + start, hit[0]])
                        saved += end - start
                    else:
                        append_run(runs, [lo + start, end - start, len(kept)])
                        kept += new[at + start:at + end]  # type: ignore[index]
        vma["pages"] = runs
    for blob in [new, *blobs]:
        if blob is not None:
            blob.close()
    writer.replace_blob(name, bytes(kept))
    return saved


def _held(old: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """(start, end, base index, offset in its blob) of every page run the parent holds, by
    address. The parent's own bases follow it in the readers list, hence index + 1."""
    held = [(addr, addr + length, 0 if len(run) == 3 else run[3] + 1, offset)
            for vma in old["memory"]["vmas"] for run in vma["pages"]
            for addr, length, offset in [run[:3]]]
    return sorted(held)


def _segments(held: list[tuple[int, int, int, int]], starts: list[int], lo: int,
              hi: int) -> list[tuple[int, int, tuple[int, int] | None]]:
    """[lo, hi) cut where the parent's runs begin and end: (from, to, (base, offset at
    `from`) or None where the parent holds nothing)."""
    out: list[tuple[int, int, tuple[int, int] | None]] = []
    i = max(bisect.bisect_right(starts, lo) - 1, 0)
    pos = lo
    while pos < hi:
        while i < len(held) and held[i][1] <= pos:
            i += 1
        if i < len(held) and held[i][0] <= pos:
            start, end, base, offset = held[i]
            stop = min(end, hi)
            out.append((pos, stop, (base, offset + pos - start)))
        else:
            stop = min(hi, held[i][0]) if i < len(held) else hi
            out.append((pos, stop, None))
        pos = stop
    return out


_BLOCKS = (1 << 20, 64 << 10, PAGE)


def _same_pieces(new: mmap.mmap, at: int, base: mmap.mmap, base_at: int,
                 length: int) -> list[tuple[int, int, bool]]:
    """[0, length) cut into pieces (from, to, equal): whole blocks compared at once, and
    only where they differ page by page. The compare is a memcmp in place (a find over a
    window the needle's size); the needle is one copy of the base's block."""
    pieces: list[tuple[int, int, bool]] = []

    def add(start: int, end: int, same: bool) -> None:
        if pieces and pieces[-1][2] == same and pieces[-1][1] == start:
            pieces[-1] = (pieces[-1][0], end, same)
        else:
            pieces.append((start, end, same))

    def walk(start: int, end: int, level: int) -> None:
        size = _BLOCKS[level]
        for x in range(start, end, size):
            y = min(x + size, end)
            needle = base[base_at + x:base_at + y]
            same = len(needle) == y - x and new.find(needle, at + x, at + y) == at + x
            if same or level == len(_BLOCKS) - 1:
                add(x, y, same)
            else:
                walk(x, y, level + 1)

    walk(0, length, 0)
    return pieces


def _map(path: str) -> mmap.mmap | None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) if size else None


def _pages_blob(image: ImageReader, pid: int) -> mmap.mmap | None:
    name = pages_blob_of(image, pid)
    return _map(os.path.join(image.path, name)) if name else None


def pages_blob_of(image: ImageReader, pid: int) -> str | None:
    proc = next((p for p in image.manifest["processes"] if p["pid"] == pid), None)
    return proc["memory"].get("pages_blob") if proc else None
