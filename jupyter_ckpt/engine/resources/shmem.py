"""Shared memory objects: anonymous MAP_SHARED regions (inherited over fork they are one object
in several processes), memfd files, whether mapped or open as fds, and shared mappings of
files unlinked from a tmpfs (POSIX semaphores, which multiprocessing creates and unlinks at
once, live in such files under /dev/shm).

Each object is saved once per checkpoint, by inode, from the object itself (read through
/proc/PID/map_files or the fd, skipping holes), so pages only some process ever touched are
kept too. At restore it becomes one memfd holding that content (and its seals); every mapping
and every fd of the object, in any process of the tree, refers to that same memfd.
"""
from __future__ import annotations

import fcntl
import os
from typing import Any

from .. import procfs, ptrace_ext
from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import CkptError
from ..image import append_run
from . import FileKind

F_ADD_SEALS, F_GET_SEALS = 1033, 1034
_MEMFD_PREFIX = "/memfd:"


def object_name(path: str) -> str:
    """The name to give the memfd: a memfd's own name, "dev/zero" for shared anonymous
    memory, the file name of an unlinked tmpfs file."""
    if path.endswith(procfs.DELETED):
        path = path[:-len(procfs.DELETED)]
    if path.startswith(_MEMFD_PREFIX):
        return path[len(_MEMFD_PREFIX):]
    if path.startswith("/dev/zero"):
        return "dev/zero"
    return os.path.basename(path)


def is_shmem_path(path: str) -> bool:
    return path.startswith(_MEMFD_PREFIX) or path.startswith("/dev/zero")


def register(ctx: DumpContext, inode: int, device: tuple[int, int], path: str, open_object) -> None:
    """Save the object once per checkpoint. `open_object()` returns a readable fd of it.
    Objects are known by inode, unique only within one file system (`device`)."""
    if inode in ctx.tree.shmem:
        if ctx.tree.shmem[inode]["device"] != list(device):
            raise ctx.refuse(path, "shared memory", f"inode {inode} is also another object's, "
                             "on another file system (not supported)")
        return
    fd = open_object()
    try:
        size = os.fstat(fd).st_size
        try:
            seals = fcntl.fcntl(fd, F_GET_SEALS)
        except OSError:
            seals = 0
        obj: dict[str, Any] = {"inode": inode, "device": list(device), "name": object_name(path),
                               "size": size, "seals": seals, "data": [], "blob": None}
        if ctx.writer is not None:
            obj["data"], content = read_data(fd, size)
            obj["blob"] = ctx.add_blob(f"shmem-{inode}.bin", content)
    finally:
        os.close(fd)
    ctx.tree.shmem[inode] = obj


def register_through_mapping(ctx: DumpContext, vma: procfs.Vma, device: tuple[int, int]) -> None:
    """Save an object we may not open: without CAP_CHECKPOINT_RESTORE /proc/PID/map_files
    is closed to us, so shared anonymous memory or a file unlinked from a tmpfs (which
    nothing else reaches) is read through the process's own mapping. The object's pages
    are found with mincore, run in the process (it sees what the object holds, touched by
    whichever process), and read from its memory. That is the whole object only if the
    mapping starts at its beginning, nothing of it is swapped out, and no process of the
    tree maps more of it; otherwise, and for a memfd (whose seals we could not see), it is
    refused by name."""
    where = f"{vma.start:#x}-{vma.end:#x}"
    known = ctx.tree.shmem.get(vma.inode)
    if known is not None:
        if known["device"] != list(device) or vma.offset + vma.size > known["size"]:
            raise ctx.refuse(where, "shared memory", "processes of the tree map different parts "
                             "of it; reading it whole takes CAP_CHECKPOINT_RESTORE")
        return
    if vma.path.startswith(_MEMFD_PREFIX):
        raise ctx.refuse(where, "shared memory", "a memfd only mapped: reading it and its seals "
                         "takes CAP_CHECKPOINT_RESTORE (through /proc/PID/map_files), which we lack")
    if vma.offset:
        raise ctx.refuse(where, "shared memory", f"mapped from offset {vma.offset}: the part before "
                         "cannot be read without CAP_CHECKPOINT_RESTORE")
    if vma.swap_kb:
        raise ctx.refuse(where, "shared memory", "partly swapped out: reading it whole takes "
                         "CAP_CHECKPOINT_RESTORE")
    obj: dict[str, Any] = {"inode": vma.inode, "device": list(device), "name": object_name(vma.path),
                           "size": vma.size, "seals": 0, "data": [], "blob": None}
    if ctx.writer is not None:
        page = os.sysconf("SC_PAGE_SIZE")
        for stored, index in enumerate(_resident_pages(ctx, vma, page)):
            append_run(obj["data"], [index * page, page, stored * page])
        obj["blob"] = ctx.add_blob(f"shmem-{vma.inode}.bin", b"".join(
            ctx.mem.read(vma.start + offset, length) for offset, length, _ in obj["data"]))
    ctx.tree.shmem[vma.inode] = obj


def _resident_pages(ctx: DumpContext, vma: procfs.Vma, page: int) -> list[int]:
    """Indexes of the pages the object holds under the mapping, from a mincore() run in the
    (frozen) process. Its main thread has been put back already (see
    dumper._collect_process), so it is blocked again meanwhile and put back again after."""
    thread = ctx.leader
    count = vma.size // page
    vec_size = -(-count // page) * page
    ptrace_ext.set_sigmask(thread.tid, (1 << 64) - 1)  # nothing may be delivered mid-injection
    try:
        vec = thread.call("mmap", 0, vec_size, 3, 0x22, -1, 0)
        try:
            thread.call("mincore", vma.start, vma.size, vec)
            resident = ctx.mem.read(vec, count)
        finally:
            thread.call("munmap", vec, vec_size)
    finally:
        thread.restore_live(ctx.saved_masks[thread.tid])
    return [index for index, flag in enumerate(resident) if flag & 1]


def read_data(fd: int, size: int) -> tuple[list[list[int]], bytes]:
    """(offset, length, blob offset) of every non-hole range, and their bytes."""
    segments, chunks, stored, offset = [], [], 0, 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data past offset
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        data = os.pread(fd, end - start, start)
        if len(data) != end - start:
            raise CkptError("short read of a shared memory object")
        segments.append([start, end - start, stored])
        chunks.append(data)
        stored += len(data)
        offset = end
    return segments, b"".join(chunks)


def object_fd(ctx: RestoreContext, inode: int) -> int:
    """Our fd of the restored object (made once per restore, shared by the whole tree)."""
    return ctx.once(("shmem", inode), lambda: _create(ctx, ctx.image.manifest["shmem"][str(inode)]))


def _create(ctx: RestoreContext, obj: dict[str, Any]) -> int:
    fd = ctx.keep(os.memfd_create(obj["name"], os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
    os.ftruncate(fd, obj["size"])
    if obj["data"]:
        blob = ctx.image.map_blob(obj["blob"])
        assert blob is not None
        with memoryview(blob) as view:
            for offset, length, stored in obj["data"]:
                os.pwrite(fd, view[stored:stored + length], offset)
        blob.close()
    if obj["seals"]:
        fcntl.fcntl(fd, F_ADD_SEALS, obj["seals"])
    return fd


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link.startswith(_MEMFD_PREFIX)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    register(ctx, f.st.st_ino, (os.major(f.st.st_dev), os.minor(f.st.st_dev)), f.link,
             lambda: os.dup(ctx.dup_of(f.fd)))
    return {"inode": f.st.st_ino, "flags": f.flags, "pos": f.pos}


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    holder = object_fd(ctx, rec["inode"])
    flags = rec["flags"] & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_CLOEXEC) | os.O_CLOEXEC
    fd = ctx.keep(os.open(f"/proc/self/fd/{holder}", flags))
    os.lseek(fd, rec["pos"], os.SEEK_SET)
    return fd


MEMFD = FileKind("memfd", _claims, _dump, _restore)
