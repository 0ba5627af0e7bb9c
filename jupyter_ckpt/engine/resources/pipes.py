"""Pipes and FIFOs whose ends are all inside the tree, with the bytes buffered in them. An
anonymous pipe whose other end nobody holds any more (what a finished subprocess leaves
behind) is fine too: it comes back with that end closed, so the reader gets the bytes and
then end-of-file, and a writer gets EPIPE, as before. One whose other end is held outside
the tree is refused. A FIFO whose name has been removed is, for its holders, just such a
pipe (no one can open it any more), and comes back as one, under the same conditions.

Buffered bytes are copied with tee(2), which duplicates pipe contents without consuming them,
so the original keeps its data when it runs on. At restore one pipe (or FIFO) is made per
inode, refilled, and each open file description is reopened from it through /proc/self/fd,
which yields a new description with exactly the recorded flags.
"""
from __future__ import annotations

import fcntl
import os
import select
import stat
from dataclasses import dataclass, field
from typing import Any

from .. import procfs, syscalls
from ..context import DumpContext, OpenFile, RestoreContext, TreeIndex
from ..errors import RestoreConflict
from .kind import FileKind

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
SPLICE_F_NONBLOCK = 2
_OPEN_FLAGS_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | os.O_CLOEXEC)


@dataclass
class _Ends:
    """Dump: the ends ("r", "w") of each anonymous pipe, by inode, that the tree holds."""

    by_inode: dict[int, set[str]] = field(default_factory=dict)


def _index(tree: TreeIndex, pid: int, files: list[OpenFile]) -> None:
    ends = tree.state(_Ends).by_inode
    for f in files:
        if f.link.startswith("pipe:"):
            ends.setdefault(f.st.st_ino, set()).update({os.O_RDONLY: "r", os.O_WRONLY: "w"}.get(f.access, "rw"))


def ends_in_tree(tree: TreeIndex, inode: int) -> set[str]:
    """Which ends of the anonymous pipe `inode` the tree holds."""
    return tree.state(_Ends).by_inode.get(inode, set())


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISFIFO(f.st.st_mode)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    ino = f.st.st_ino
    anonymous = f.link.startswith("pipe:")
    unlinked = not anonymous and f.st.st_nlink == 0  # a FIFO whose name is gone
    fd = ctx.dup_of(f.fd)
    if anonymous and ends_in_tree(ctx.tree, ino) != {"r", "w"} and not _other_end_closed(fd, f):
        raise ctx.refuse(f"fd {f.fd}", "pipe", f"{f.link}: its other end is held outside the tree")
    if unlinked and _fifo_ends(f, ctx) != {"r", "w"} and not _other_end_closed(fd, f):
        raise ctx.refuse(f"fd {f.fd}", "FIFO", f"{f.link}: its other end is held outside the tree")
    rec: dict[str, Any] = {"inode": ino, "fifo_path": None if anonymous or unlinked else f.link,
                           "flags": f.flags, "capacity": fcntl.fcntl(fd, F_GETPIPE_SZ)}
    if not anonymous:
        rec["dev"] = f.st.st_dev  # (a FIFO's inode number is only unique on its file system)
    if f.access != os.O_WRONLY and ctx.writer is not None:
        data = _peek(fd, rec["capacity"])
        if data:
            rec["data_blob"] = ctx.add_blob(f"pipe-{ctx.pid}-{ino}", data)
    return rec


def _fifo_ends(f: OpenFile, ctx: DumpContext) -> set[str]:
    """Which ends of a FIFO the tree holds ("r", "w"; an O_RDWR fd holds both)."""
    ends: set[str] = set()
    for pid in ctx.tree.pids:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                st = os.stat(f"/proc/{pid}/fd/{name}")
                if (st.st_dev, st.st_ino) != (f.st.st_dev, f.st.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{name}") as info:
                    flags = int(procfs.parse_fdinfo(info.read())["flags"], 8)
            except FileNotFoundError:
                continue
            ends.update({os.O_RDONLY: "r", os.O_WRONLY: "w"}.get(flags & os.O_ACCMODE, "rw"))
    return ends


def _other_end_closed(fd: int, f: OpenFile) -> bool:
    """Whether no process anywhere holds the other end: the kernel counts them, and poll
    reports a reader without writers as POLLHUP, a writer without readers as POLLERR."""
    poller = select.poll()
    poller.register(fd, 0)
    ready = poller.poll(0)
    events = ready[0][1] if ready else 0
    return bool(events & (select.POLLHUP if f.access == os.O_RDONLY else select.POLLERR))


def _peek(fd: int, capacity: int) -> bytes:
    """The bytes buffered in a pipe, left in place."""
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, capacity)
        try:
            n = syscalls.tee(fd, w, capacity, SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return b""
        chunks = []
        while n > 0:
            chunk = os.read(r, n)
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(r)
        os.close(w)


def _make_pipe(rec: dict[str, Any], ctx: RestoreContext) -> tuple[int, int]:
    """(read end, write end) held by the restorer for one pipe inode."""
    if rec["fifo_path"] is None:
        r, w = os.pipe2(os.O_CLOEXEC)
    else:
        path = rec["fifo_path"]
        try:
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                raise RestoreConflict(f"{path} is no longer a FIFO")
            r = w = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RestoreConflict(f"FIFO {path} no longer exists") from None
        fcntl.fcntl(w, fcntl.F_SETFL, 0)
    ctx.keep(r)
    if w != r:
        ctx.keep(w)
    fcntl.fcntl(w, F_SETPIPE_SZ, rec["capacity"])
    return r, w


@dataclass
class _Made:
    """Restore: each pipe made for the tree, by (device, inode), and those refilled."""

    pipes: dict[tuple[int | None, int], tuple[int, int]] = field(default_factory=dict)
    filled: set[tuple[int | None, int]] = field(default_factory=set)


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    key = (rec.get("dev"), rec["inode"])
    made = ctx.state(_Made)
    if key not in made.pipes:
        made.pipes[key] = _make_pipe(rec, ctx)
    r, w = made.pipes[key]
    if rec.get("data_blob") and key not in made.filled:  # every read description saw the same bytes
        os.write(w, ctx.image.blob_bytes(rec["data_blob"]))
        made.filled.add(key)
    end = w if rec["flags"] & os.O_ACCMODE == os.O_WRONLY else r
    flags = rec["flags"] & _OPEN_FLAGS_MASK & ~os.O_NOFOLLOW  # (it would refuse the link)
    return ctx.keep(os.open(f"/proc/self/fd/{end}", flags | os.O_CLOEXEC))


PIPE = FileKind("pipe", _claims, _dump, _restore, index=_index)
