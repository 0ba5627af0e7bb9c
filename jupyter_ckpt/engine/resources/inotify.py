"""inotify instances with their watches. Each watch is saved as the path of the watched file
(found from the file handle inotify keeps, which takes CAP_DAC_READ_SEARCH to open), its
event mask and its watch descriptor. At restore the watches are added again in order of
their descriptors; the kernel hands descriptors out one after another, so the gaps left by
watches removed earlier are recreated with a throwaway watch added and removed, and the
IN_IGNORED events that leaves are read away before the program gets the fd.

Events that arrive between the checkpoint and the restore are not seen, as for every
resource watching the outside world. A watch is re-added by path: the file must still be
there, and if it was replaced the new one is watched. Unread events cannot be saved (an
inotify fd cannot be peeked), so an instance with events waiting is refused by name.
"""
from __future__ import annotations

import fcntl
import os
import struct
import tempfile
import termios
from typing import Any

from .. import procfs, syscalls
from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from .kind import FileKind

_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_IN_MASK_ADD = 0x20000000  # only meaningful when adding; never part of a saved mask
_IN_DELETE_SELF = 0x400
_O_PATH = 0o10000000


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link == "anon_inode:inotify"


def _watches(f: OpenFile) -> list[dict[str, str]]:
    """fdinfo's "inotify wd:1 ino:... mask:..." lines as dicts."""
    return [dict(item.split(":", 1) for item in line.split()[1:])
            for line in f.fdinfo_text.splitlines() if line.startswith("inotify ")]


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    where = f"fd {f.fd}"
    pending = struct.unpack("i", fcntl.ioctl(ctx.dup_of(f.fd), termios.FIONREAD, b"\0" * 4))[0]
    if pending:
        raise ctx.refuse(where, "inotify", f"{pending} bytes of events not read yet; "
                         "checkpoint again once the program has read them")
    watches = []
    for watch in _watches(f):
        path = _watched_path(watch, ctx, where)
        watches.append({"wd": int(watch["wd"], 16), "mask": int(watch["mask"], 16), "path": path})
    return {"flags": f.flags, "watches": sorted(watches, key=lambda w: w["wd"])}


def _watched_path(watch: dict[str, str], ctx: DumpContext, where: str) -> str:
    """The path of a watched file, opened from the handle inotify keeps of it."""
    which = f"watch {int(watch['wd'], 16)}"
    if not int(watch.get("fhandle-bytes", "0"), 16):
        raise ctx.refuse(where, "inotify", f"{which}: its file system gives no file handles")
    device = int(watch["sdev"], 16)
    mount = procfs.mount_point_of(ctx.tree.mountinfo(), device >> 20, device & 0xFFFFF)
    if mount is None:
        raise ctx.refuse(where, "inotify", f"{which}: its file system is not mounted here")
    try:
        mount_fd = os.open(mount, os.O_RDONLY | os.O_CLOEXEC)  # (an O_PATH one is refused)
        try:
            fd = syscalls.open_by_handle_at(mount_fd, int(watch["fhandle-type"], 16),
                                            bytes.fromhex(watch["f_handle"]), _O_PATH | os.O_CLOEXEC)
        finally:
            os.close(mount_fd)
    except PermissionError:
        raise ctx.refuse(where, "inotify", "finding what it watches takes CAP_DAC_READ_SEARCH, "
                                           "which we lack") from None
    except OSError as err:
        raise ctx.refuse(where, "inotify", f"{which}: the watched file is gone ({err.strerror})") from None
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    if path.endswith(procfs.DELETED) or not path.startswith("/"):
        raise ctx.refuse(where, "inotify", f"{which}: {path} has no path left")
    return path


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    fd = ctx.keep(syscalls.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK))
    with tempfile.TemporaryDirectory() as throwaway:  # a file no real watch is on
        _add_watches(fd, rec["watches"], throwaway)
    try:
        while os.read(fd, 65536):  # the IN_IGNORED events of the throwaway watches
            pass
    except BlockingIOError:
        pass
    if not rec["flags"] & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def _add_watches(fd: int, watches: list[dict[str, Any]], throwaway: str) -> None:
    allocated = 0  # the kernel gives each new watch the descriptor after the last one
    for watch in watches:
        while allocated < watch["wd"] - 1:
            allocated = syscalls.inotify_add_watch(fd, throwaway, _IN_DELETE_SELF)
            syscalls.inotify_rm_watch(fd, allocated)
        try:
            allocated = syscalls.inotify_add_watch(fd, watch["path"], watch["mask"] & ~_IN_MASK_ADD)
        except OSError as err:
            raise RestoreConflict(f"inotify watch on {watch['path']}: {err.strerror}") from None
        if allocated != watch["wd"]:
            raise RestoreConflict(f"inotify watch on {watch['path']} got descriptor {allocated}, "
                                  f"not {watch['wd']} (two watches on one file?)")


INOTIFY = FileKind("inotify", _claims, _dump, _restore)
