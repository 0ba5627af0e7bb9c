"""Regular files and directories: reopened by path with the same flags and offset.

A file unlinked while open has its content saved in the image and comes back as an unlinked
file with that content, mode and owner. A file on a tmpfs, linked or not, is a shared memory
object (shmem.py): saved whole, it comes back even after a reboot emptied the tmpfs.
Locks come back too (POSIX record, flock() and OFD), each taken again by the restored
process that held it, once its fds are at their numbers. Open files are expected to exist
at restore (the file system view is part of the environment, as for any restart); a
missing one stops the restore by name.
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .. import procfs
from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from . import shmem
from .kind import FileKind

log = logging.getLogger(__name__)

_LOCK_KINDS = {"POSIX": "posix", "FLOCK": "flock", "OFDLCK": "ofd"}
_FLOCK = struct.Struct("hhqqi4x")  # struct flock
F_OFD_SETLK = 37
_OPEN_FLAGS_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | os.O_CLOEXEC)


def _claims_regular(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISREG(f.st.st_mode) and f.link.startswith("/")


def _locks(f: OpenFile, ctx: DumpContext) -> list[dict[str, Any]]:
    """Locks held through this fd: POSIX record locks of the process, flock() and OFD locks
    of the open file description. Leases and mandatory locks are refused."""
    locks = []
    for line in f.fdinfo_text.splitlines():
        if not line.startswith("lock:"):
            continue
        fields = line.split()
        kind, mode, access, owner, start, end = fields[2], fields[3], fields[4], fields[5], fields[7], fields[8]
        if kind == "LEASE":
            raise ctx.refuse(f"fd {f.fd}", "file lease", f"{f.link}: leases (F_SETLEASE) are not supported")
        if kind not in _LOCK_KINDS or mode != "ADVISORY":
            raise ctx.refuse(f"fd {f.fd}", "file lock", f"{f.link}: {kind} {mode} locks are not supported")
        if kind == "POSIX" and int(owner) != ctx.pid:
            continue  # another process's lock on the same file
        locks.append({"kind": _LOCK_KINDS[kind], "write": access == "WRITE", "start": int(start),
                      "end": None if end == "EOF" else int(end)})
    return locks


def _flock_struct(lock: dict[str, Any]) -> bytes:
    length = 0 if lock["end"] is None else lock["end"] - lock["start"] + 1
    return _FLOCK.pack(fcntl.F_WRLCK if lock["write"] else fcntl.F_RDLCK, os.SEEK_SET,
                       lock["start"], length, 0)


def _take_locks(rec: dict[str, Any], ctx: RestoreContext, fd: int) -> None:
    """The process the record was dumped from takes every lock back itself, by injected
    syscalls: a POSIX lock belongs to that process, and /proc shows the pid that took a
    flock() lock, so neither may be taken by the restorer."""
    for lock in rec.get("locks", []):
        ctx.scratch.reset()
        if lock["kind"] == "flock":
            result = ctx.leader.call("flock", fd, (fcntl.LOCK_EX if lock["write"] else fcntl.LOCK_SH)
                                     | fcntl.LOCK_NB, check=False)
        else:
            command = fcntl.F_SETLK if lock["kind"] == "posix" else F_OFD_SETLK
            result = ctx.leader.call("fcntl", fd, command, ctx.scratch.put(_flock_struct(lock)),
                                     check=False)
        if result < 0:
            raise RestoreConflict(f"{rec['path']}: cannot take back its {lock['kind']} lock "
                                  f"({os.strerror(-result)}); another process holds it")


def _dump_regular(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    rec: dict[str, Any] = {"path": f.link, "flags": f.flags, "pos": f.pos, "size": f.st.st_size,
                           "mode": stat.S_IMODE(f.st.st_mode), "locks": _locks(f, ctx)}
    on_tmpfs = (os.major(f.st.st_dev), os.minor(f.st.st_dev)) in ctx.tree.tmpfs_devices()
    if f.st.st_nlink > 0 and not on_tmpfs:
        _check_reachable(f, ctx)
    if (on_tmpfs or f.st.st_nlink == 0) and f.link.endswith(procfs.DELETED):
        rec["path"] = f.link[:-len(procfs.DELETED)]
    if on_tmpfs:
        rec["shmem"] = shmem.register_file(ctx, f)
    elif f.st.st_nlink == 0:
        rec["unlinked"] = {"inode": [f.st.st_dev, f.st.st_ino], "uid": f.st.st_uid, "gid": f.st.st_gid,
                           "times": [f.st.st_atime_ns, f.st.st_mtime_ns], "blob": None, "data": []}
        if ctx.writer:
            rec["unlinked"]["data"], content = _read_content(f, ctx)
            rec["unlinked"]["blob"] = ctx.add_blob(f"unlinked-{f.st.st_dev}-{f.st.st_ino}", content)
    return rec


def _check_reachable(f: OpenFile, ctx: DumpContext) -> None:
    """Restore reopens a linked file by its path: that path must lead to this very file."""
    try:
        st = os.stat(f.link)
    except OSError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != (f.st.st_dev, f.st.st_ino):
        why = "unlinked from this name but still linked under another" if f.link.endswith(procfs.DELETED) \
            else "its path now leads to another file"
        raise ctx.refuse(f"fd {f.fd}", "file", f"{f.link}: {why}; it cannot be reopened by path")


def _read_content(f: OpenFile, ctx: DumpContext) -> tuple[list[list[int]], bytes]:
    """The file's data ranges ([offset, length, blob offset]) and their bytes: its holes
    stay holes (SEEK_DATA/SEEK_HOLE, as for shared memory). A write-only fd cannot be read
    through: open the file anew for reading (the /proc link reaches it even unlinked)."""
    write_only = f.flags & os.O_ACCMODE == os.O_WRONLY
    fd = os.open(f"/proc/{f.pid}/fd/{f.fd}", os.O_RDONLY | os.O_CLOEXEC) if write_only else ctx.dup_of(f.fd)
    try:
        return shmem.read_data(fd, f.st.st_size)
    finally:
        if write_only:
            os.close(fd)


@dataclass
class _Unlinked:
    """Restore: our fd of each unlinked file re-made for the tree, by its original (device, inode)."""

    holders: dict[tuple[int, ...], int] = field(default_factory=dict)


def _restore_regular(rec: dict[str, Any], ctx: RestoreContext) -> int:
    # O_TMPFILE (with its O_DIRECTORY) stays in the flags of a file made that way; reopening
    # with it would make another. O_NOFOLLOW would refuse the /proc/self/fd link itself.
    flags = rec["flags"] & _OPEN_FLAGS_MASK & ~os.O_TMPFILE | os.O_CLOEXEC
    if "shmem" in rec:
        fd = shmem.reopen(rec["shmem"], flags, ctx)
        os.lseek(fd, rec["pos"], os.SEEK_SET)
        return fd  # (its locks are taken by the process that held them: _take_locks)
    if "unlinked" in rec:
        made = ctx.state(_Unlinked).holders
        key = tuple(rec["unlinked"]["inode"])
        if key not in made:
            made[key] = _recreate_unlinked(rec, ctx)
        holder = made[key]
        path = f"/proc/self/fd/{holder}"
        flags &= ~os.O_NOFOLLOW
    else:
        path = rec["path"]
    try:
        fd = ctx.keep(os.open(path, flags))
    except OSError as err:
        raise RestoreConflict(f"cannot reopen {rec['path']}: {err.strerror}") from None
    os.lseek(fd, rec["pos"], os.SEEK_SET)
    return fd


def _recreate_unlinked(rec: dict[str, Any], ctx: RestoreContext) -> int:
    """A new unlinked file holding the saved content, made under the original's own name when
    that name is free (its /proc fd link then reads as before), then unlinked."""
    fd, made_at = _create_beside(rec["path"])
    try:
        content = ctx.image.blob_bytes(rec["unlinked"]["blob"])
        # (an image of an older version holds the whole content, holes as zeros)
        for offset, length, stored in rec["unlinked"].get("data", [[0, len(content), 0]]):
            os.pwrite(fd, content[stored:stored + length], offset)
        os.ftruncate(fd, rec["size"])
        _give_owner(fd, rec)  # first: a change of owner clears the set-user/group-id bits
        os.fchmod(fd, rec["mode"])
        if "times" in rec["unlinked"]:  # last: writing the content set them to now
            os.utime(fd, ns=tuple(rec["unlinked"]["times"]))
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.unlink(made_at)
    return ctx.keep(fd)


def _create_beside(path: str) -> tuple[int, str]:
    """A new empty file at `path`, or beside it (or in the temporary directory) when that name
    is taken or its directory gone: then only its name differs from the original's."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600), path
    except OSError as err:
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            directory = tempfile.gettempdir()
        fd, made_at = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=directory)
        log.info("unlinked file %s re-made as %s (%s): its /proc fd link names that", path, made_at,
                 err.strerror)
        return fd, made_at


def _give_owner(fd: int, rec: dict[str, Any]) -> None:
    """The unlinked file's recorded owner (needs CAP_CHOWN unless it is ours), or a refusal."""
    uid, gid = rec["unlinked"]["uid"], rec["unlinked"]["gid"]
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    try:
        os.fchown(fd, uid, gid)
    except OSError as err:
        raise RestoreConflict(f"unlinked file {rec['path']}: cannot give it its owner uid {uid} "
                              f"gid {gid}: {err.strerror}") from None


def _claims_directory(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISDIR(f.st.st_mode) and f.link.startswith("/")


def _dump_directory(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    if f.link.endswith(procfs.DELETED):
        raise ctx.refuse(f"fd {f.fd}", "directory", f"{f.link}: removed while open")
    if _locks(f, ctx):
        raise ctx.refuse(f"fd {f.fd}", "file lock", f"{f.link}: locks on directories are not supported")
    return {"path": f.link, "flags": f.flags, "pos": f.pos}


def _restore_directory(rec: dict[str, Any], ctx: RestoreContext) -> int:
    try:
        fd = ctx.keep(os.open(rec["path"], rec["flags"] & _OPEN_FLAGS_MASK | os.O_CLOEXEC))
    except OSError as err:
        raise RestoreConflict(f"cannot reopen directory {rec['path']}: {err.strerror}") from None
    if rec["pos"]:
        os.lseek(fd, rec["pos"], os.SEEK_SET)
    return fd


# An O_PATH fd refers to a file without opening it: whatever it names (also a symlink
# itself, with O_NOFOLLOW, a FIFO or a device) is reached again by its path.
_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "char-device",
          stat.S_IFBLK: "block-device"}


def _claims_path_only(f: OpenFile, ctx: DumpContext) -> bool:
    return bool(f.flags & os.O_PATH)


def _dump_path_only(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    """Its path, which must still lead to the very file (nothing else of it can be read:
    an O_PATH fd has no content, offset, locks or owner)."""
    if not f.link.startswith("/") or f.st.st_nlink == 0 or f.link.endswith(procfs.DELETED):
        raise ctx.refuse(f"fd {f.fd}", "O_PATH file", f"{f.link}: it has no path to reach it by")
    try:
        st = (os.lstat if stat.S_ISLNK(f.st.st_mode) else os.stat)(f.link)
    except OSError:
        st = None
    if st is None or (st.st_dev, st.st_ino) != (f.st.st_dev, f.st.st_ino):
        raise ctx.refuse(f"fd {f.fd}", "O_PATH file", f"{f.link}: its path now leads to another "
                         "file; it cannot be reopened by path")
    return {"path": f.link, "flags": f.flags, "type": _TYPES[stat.S_IFMT(f.st.st_mode)]}


def _restore_path_only(rec: dict[str, Any], ctx: RestoreContext) -> int:
    flags = rec["flags"] & _OPEN_FLAGS_MASK | os.O_CLOEXEC
    if rec["type"] == "symlink":
        flags |= os.O_NOFOLLOW  # the link itself, not what it points to
    try:
        fd = ctx.keep(os.open(rec["path"], flags))
    except OSError as err:
        raise RestoreConflict(f"cannot reopen {rec['path']} (O_PATH): {err.strerror}") from None
    found = _TYPES.get(stat.S_IFMT(os.fstat(fd).st_mode))
    if found != rec["type"]:
        raise RestoreConflict(f"{rec['path']} (O_PATH) is now a {found}, not a {rec['type']}")
    return fd


PATH_ONLY = FileKind("path-only", _claims_path_only, _dump_path_only, _restore_path_only)
REGULAR = FileKind("regular-file", _claims_regular, _dump_regular, _restore_regular,
                   _take_locks)
DIRECTORY = FileKind("directory", _claims_directory, _dump_directory, _restore_directory)
