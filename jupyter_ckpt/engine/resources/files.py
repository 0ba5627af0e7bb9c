"""Regular files and directories: reopened by path with the same flags and offset.

A file unlinked while open has its content saved in the image and comes back as an unlinked
file with that content. Open files are expected to exist at restore (the file system view is
part of the environment, as for any restart); a missing one stops the restore by name.
"""
from __future__ import annotations

import os
import stat
import tempfile
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from . import FileKind

_DELETED = " (deleted)"
_OPEN_FLAGS_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | os.O_CLOEXEC)


def _claims_regular(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISREG(f.st.st_mode) and f.link.startswith("/")


def _check_locks(f: OpenFile, ctx: DumpContext) -> None:
    if "lock" in f.fdinfo:
        raise ctx.refuse(f"fd {f.fd}", "file lock", f"{f.link}: holds a POSIX/flock lock")


def _dump_regular(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    _check_locks(f, ctx)
    rec: dict[str, Any] = {"path": f.link, "flags": f.flags, "pos": f.pos, "size": f.st.st_size,
                           "mode": stat.S_IMODE(f.st.st_mode)}
    if f.st.st_nlink == 0:
        rec["path"] = f.link[:-len(_DELETED)] if f.link.endswith(_DELETED) else f.link
        rec["unlinked"] = {"inode": [f.st.st_dev, f.st.st_ino],
                           "blob": ctx.add_blob(f"unlinked-{f.st.st_dev}-{f.st.st_ino}",
                                                _read_content(f, ctx)) if ctx.writer else None}
    return rec


def _read_content(f: OpenFile, ctx: DumpContext) -> bytes:
    fd = ctx.dup_of(f.fd)
    chunks, off = [], 0
    while chunk := os.pread(fd, 8 << 20, off):
        chunks.append(chunk)
        off += len(chunk)
    return b"".join(chunks)


def _restore_regular(rec: dict[str, Any], ctx: RestoreContext) -> int:
    flags = rec["flags"] & _OPEN_FLAGS_MASK | os.O_CLOEXEC
    if "unlinked" in rec:
        holder = ctx.once(("unlinked", *rec["unlinked"]["inode"]), lambda: _recreate_unlinked(rec, ctx))
        path = f"/proc/self/fd/{holder}"
    else:
        path = rec["path"]
    try:
        fd = ctx.keep(os.open(path, flags))
    except OSError as err:
        raise RestoreConflict(f"cannot reopen {rec['path']}: {err.strerror}") from None
    os.lseek(fd, rec["pos"], os.SEEK_SET)
    return fd


def _recreate_unlinked(rec: dict[str, Any], ctx: RestoreContext) -> int:
    """A new unlinked file holding the saved content, next to where the original lived."""
    directory = os.path.dirname(rec["path"])
    if not os.path.isdir(directory):
        directory = tempfile.gettempdir()
    fd, tmp_path = tempfile.mkstemp(prefix=os.path.basename(rec["path"]) + ".", dir=directory)
    try:
        os.write(fd, ctx.image.blob_bytes(rec["unlinked"]["blob"]))
        os.fchmod(fd, rec["mode"])
    finally:
        os.unlink(tmp_path)
    return ctx.keep(fd)


def _claims_directory(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISDIR(f.st.st_mode) and f.link.startswith("/")


def _dump_directory(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    if f.link.endswith(_DELETED):
        raise ctx.refuse(f"fd {f.fd}", "directory", f"{f.link}: removed while open")
    _check_locks(f, ctx)
    return {"path": f.link, "flags": f.flags, "pos": f.pos}


def _restore_directory(rec: dict[str, Any], ctx: RestoreContext) -> int:
    try:
        fd = ctx.keep(os.open(rec["path"], rec["flags"] & _OPEN_FLAGS_MASK | os.O_CLOEXEC))
    except OSError as err:
        raise RestoreConflict(f"cannot reopen directory {rec['path']}: {err.strerror}") from None
    if rec["pos"]:
        os.lseek(fd, rec["pos"], os.SEEK_SET)
    return fd


REGULAR = FileKind("regular-file", _claims_regular, _dump_regular, _restore_regular)
DIRECTORY = FileKind("directory", _claims_directory, _dump_directory, _restore_directory)
