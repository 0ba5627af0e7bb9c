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

import mmap
import os
from typing import Any

from .image import ImageReader, ImageWriter

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
    where: dict[int, tuple[int, int]] = {}  # address -> (base index, offset in its blob)
    for vma in old["memory"]["vmas"]:
        for run in vma["pages"]:
            addr, length, offset = run[:3]
            base = 0 if len(run) == 3 else run[3] + 1  # parent's own bases follow it in `readers`
            for k in range(0, length, PAGE):
                where[addr + k] = (base, offset + k)
    blobs = [_pages_blob(r, proc["pid"]) for r in readers]
    new = _map(writer.blob_path(name))
    kept = bytearray()
    saved = 0
    for vma in proc["memory"]["vmas"]:
        runs = []
        for addr, length, offset, *_ in vma["pages"]:
            for k in range(0, length, PAGE):
                page, data = addr + k, new[offset + k: offset + k + PAGE]  # type: ignore[index]
                hit = where.get(page)
                if hit is not None and blobs[hit[0]] is not None and \
                        blobs[hit[0]][hit[1]: hit[1] + PAGE] == data:
                    used.add(hit[0])
                    _append(runs, [page, PAGE, hit[1], hit[0]])
                    saved += PAGE
                else:
                    _append(runs, [page, PAGE, len(kept)])
                    kept += data
        vma["pages"] = runs
    for blob in [new, *blobs]:
        if blob is not None:
            blob.close()
    writer.replace_blob(name, bytes(kept))
    return saved


def _map(path: str) -> mmap.mmap | None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) if size else None


def _append(runs: list[list[int]], run: list[int]) -> None:
    last = runs[-1] if runs else None
    if last and len(last) == len(run) and last[3:] == run[3:] and \
            last[0] + last[1] == run[0] and last[2] + last[1] == run[2]:
        last[1] += run[1]
    else:
        runs.append(run)


def _pages_blob(image: ImageReader, pid: int) -> mmap.mmap | None:
    name = pages_blob_of(image, pid)
    return _map(os.path.join(image.path, name)) if name else None


def pages_blob_of(image: ImageReader, pid: int) -> str | None:
    proc = next((p for p in image.manifest["processes"] if p["pid"] == pid), None)
    return proc["memory"].get("pages_blob") if proc else None
