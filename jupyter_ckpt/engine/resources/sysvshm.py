"""System V shared memory segments attached by the tree.

A segment outlives its processes unless it was marked for removal, so at restore an existing
segment with the same id and key is simply attached again (its content is the live one, as
for a file). A segment that is gone is re-created with its id (via kernel.shm_next_id), key,
mode and saved content, and marked for removal again if it had been.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from typing import Any

from ..context import DumpContext, RestoreContext, TreeIndex
from ..errors import RestoreConflict
from ..libc import libc
from .kind import Resource
from .shmem import read_data

IPC_CREAT, IPC_EXCL, IPC_RMID, IPC_STAT = 0o1000, 0o2000, 0, 2
SHM_DEST, SHM_RDONLY, SHM_EXEC = 0o1000, 0o10000, 0o100000


def _segment_facts(shmid: int) -> dict[str, int] | None:
    with open("/proc/sysvipc/shm") as f:
        next(f)
        for line in f:
            key, sid, perms, size = line.split()[:4]
            if int(sid) == shmid:
                return {"key": int(key), "mode": int(perms, 8), "size": int(size)}
    return None


@dataclass
class _Saved:
    """Dump: every segment saved so far, by id (the manifest's "sysv" section)."""

    segments: dict[int, dict[str, Any]] = field(default_factory=dict)


def _section(tree: TreeIndex) -> dict[str, Any]:
    return {str(i): seg for i, seg in tree.state(_Saved).segments.items()}


def register(ctx: DumpContext, shmid: int, source: str) -> None:
    saved = ctx.tree.state(_Saved).segments
    if shmid in saved:
        return
    facts = _segment_facts(shmid)
    if facts is None:
        raise ctx.refuse(source, "SysV shared memory", f"segment {shmid} vanished")
    seg: dict[str, Any] = {"shmid": shmid, **facts, "data": [], "blob": None}
    if ctx.writer is not None:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            seg["data"], content = read_data(fd, facts["size"])
        finally:
            os.close(fd)
        seg["blob"] = ctx.add_blob(f"sysv-{shmid}.bin", content)
    saved[shmid] = seg


@dataclass
class _Ensured:
    """Restore: the segments made to exist as they were so far."""

    ids: set[int] = field(default_factory=set)


def ensure_segment(ctx: RestoreContext, shmid: int) -> None:
    """Make segment `shmid` exist as it was (once per restore)."""
    ensured = ctx.state(_Ensured).ids
    if shmid not in ensured:
        _ensure(ctx, ctx.image.manifest["sysv"][str(shmid)])
        ensured.add(shmid)


def _ensure(ctx: RestoreContext, seg: dict[str, Any]) -> bool:
    live = _segment_facts(seg["shmid"])
    if live is not None:
        if (live["key"], live["size"]) != (seg["key"], seg["size"]):
            raise RestoreConflict(f"SysV shm id {seg['shmid']} now belongs to another segment")
        return False
    with open("/proc/sys/kernel/shm_next_id", "w") as f:
        f.write(str(seg["shmid"]))
    flags = IPC_CREAT | IPC_EXCL | (seg["mode"] & 0o777)
    shmid = libc.shmget(seg["key"], seg["size"], flags)
    if shmid != seg["shmid"]:
        err = ctypes.get_errno()
        raise RestoreConflict(f"cannot re-create SysV shm segment {seg['shmid']} (key {seg['key']:#x}): "
                              f"{os.strerror(err) if shmid < 0 else f'got id {shmid}'}")
    if seg["data"]:
        addr = libc.shmat(shmid, None, 0)
        blob = ctx.image.map_blob(seg["blob"])
        assert blob is not None
        with memoryview(blob) as view:
            for offset, length, stored in seg["data"]:
                ctypes.memmove(addr + offset, bytes(view[stored:stored + length]), length)
        blob.close()
        libc.shmdt(ctypes.c_void_p(addr))
    return True


def _mark_removed(manifest: dict[str, Any]) -> None:
    """Segments that were marked for removal are marked again, now that all have attached."""
    for seg in manifest.get("sysv", {}).values():
        if seg["mode"] & SHM_DEST:
            libc.shmctl(seg["shmid"], IPC_RMID, None)


def attach_flags(prot: int) -> int:
    return (0 if prot & 2 else SHM_RDONLY) | (SHM_EXEC if prot & 4 else 0)


SYSV = Resource("sysv", section="sysv", dump_section=_section, release=_mark_removed)
