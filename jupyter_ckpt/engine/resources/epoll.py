"""epoll instances with every registered target, its event mask and its 64-bit data word.

The data word is often a pointer into the program's heap (libzmq, libuv), so it is restored
bit for bit. Targets are registered from inside the restored process once all fds are at
their numbers, because epoll keys each registration by (file, fd number) and later
EPOLL_CTL_MOD/DEL calls by the program use its own numbers. A registration whose fd number
no longer names the registered file (closed or replaced since) is refused by name.
"""
from __future__ import annotations

import ctypes
import re
import struct
from typing import Any

from .. import syscalls
from ..context import DumpContext, OpenFile, RestoreContext
from ..libc import check, libc
from .kind import FileKind

EPOLL_CTL_ADD = 1
EPOLL_CLOEXEC = 0o2000000
_TFD = re.compile(r"tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)")
_EVENT = struct.Struct("<IQ")  # struct epoll_event is packed on x86_64
_SLOT = struct.Struct("<III")  # struct kcmp_epoll_slot



def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link == "anon_inode:[eventpoll]"


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    targets = []
    for line in f.fdinfo_text.splitlines():
        m = _TFD.search(line)
        if not m:
            continue
        tfd, events, data = int(m[1]), int(m[2], 16), int(m[3], 16)
        if not _still_registered_file(ctx.pid, f.fd, tfd):
            raise ctx.refuse(f"fd {f.fd}", "epoll", f"target fd {tfd} was closed or replaced "
                             "after it was registered")
        targets.append([tfd, events, data])
    return {"flags": f.flags, "targets": targets}


def _still_registered_file(pid: int, epfd: int, tfd: int) -> bool:
    slot = ctypes.create_string_buffer(_SLOT.pack(epfd, tfd, 0))
    try:
        return syscalls.kcmp(pid, pid, syscalls.KCMP_EPOLL_TFD, tfd, ctypes.addressof(slot)) == 0
    except OSError:
        return False


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    return ctx.keep(check(libc.epoll_create1(EPOLL_CLOEXEC), "epoll_create1"))


def _register_targets(rec: dict[str, Any], ctx: RestoreContext, epfd: int) -> None:
    ctx.scratch.reset()
    event = ctx.scratch.reserve(_EVENT.size)
    for tfd, events, data in rec["targets"]:
        ctx.mem.write(event, _EVENT.pack(events, data))
        ctx.leader.call("epoll_ctl", epfd, EPOLL_CTL_ADD, tfd, event)


EPOLL = FileKind("epoll", _claims, _dump, _restore, _register_targets)
