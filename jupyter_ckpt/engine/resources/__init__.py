"""The table of resource kinds. Adding a kind means adding one module and one line here.

Each kind (a Resource, kind.py) takes part in the named phases of a dump and a restore
that it needs, and owns its part of each process's record, its manifest section and its
tree-wide state. A file-descriptor kind (a FileKind) also decides whether it claims an open
file description, dumps it to a JSON-able record (raising Unsupported to refuse by name),
and restores the record as a new fd in the restorer, which the engine then installs in the
restored process. Anything no fd kind claims is refused. The engine runs every phase over
the table in its order: fd kinds are asked to claim a file in that order too.
"""
from __future__ import annotations

import os
import socket
import stat

from ..context import DumpContext, OpenFile
from ..errors import Unsupported
from . import (devices, epoll, eventfd, files, inet, inotify, memory, pidfd, pipes, posix_timers, process,
               shmem, signalfd, signals, stdio, sysvshm, threads, timerfd, tty, unix)
from .kind import FileKind, Resource

RESOURCES: list[Resource] = [
    process.PROCESS,
    signals.SIGNALS,
    posix_timers.POSIX_TIMERS,
    threads.THREADS,
    memory.MEMORY,
    shmem.SHMEM,  # shared memory objects, mapped or open
    stdio.EXTERNAL,  # the first fd kind: fds 0-2 leading outside the tree
    files.PATH_ONLY,  # before the kinds of what it names: an O_PATH fd opens none of them
    shmem.MEMFD,  # before regular files: a memfd is a regular file without a path
    files.REGULAR,
    files.DIRECTORY,
    devices.CHAR_DEVICE,
    tty.PTY,
    pipes.PIPE,
    eventfd.EVENTFD,
    timerfd.TIMERFD,
    signalfd.SIGNALFD,
    epoll.EPOLL,
    pidfd.PIDFD,
    inotify.INOTIFY,
    unix.UNIX_SOCKET,
    inet.INET_SOCKET,
    sysvshm.SYSV,
]
FILE_KINDS: list[FileKind] = [kind for kind in RESOURCES if isinstance(kind, FileKind)]
_BY_NAME = {kind.name: kind for kind in FILE_KINDS}
SECTIONS = [kind.section for kind in RESOURCES if kind.section]  # the manifest's tree-wide sections


def kind_named(name: str) -> FileKind:
    return _BY_NAME[name]


def claim(f: OpenFile, ctx: DumpContext) -> FileKind:
    for kind in FILE_KINDS:
        if kind.claims(f, ctx):
            return kind
    raise ctx.refuse(f"fd {f.fd}", describe(f, ctx), f"{f.link}: this kind of file is not supported")


def describe(f: OpenFile, ctx: DumpContext) -> str:
    """A human name for an fd's kind, used when refusing it."""
    if f.link.startswith("anon_inode:"):
        return f.link[len("anon_inode:"):].strip("[]")
    mode = f.st.st_mode
    if stat.S_ISSOCK(mode):
        return _socket_name(f, ctx)
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "pipe")):
        if test(mode):
            return name
    return "file"


def _socket_name(f: OpenFile, ctx: DumpContext) -> str:
    try:
        sock = socket.socket(fileno=os.dup(ctx.dup_of(f.fd)))
    except OSError:
        return "socket"
    with sock:
        family = {socket.AF_UNIX: "unix", socket.AF_INET: "inet", socket.AF_INET6: "inet6",
                  socket.AF_NETLINK: "netlink"}.get(sock.family, f"family {int(sock.family)}")
        kind = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "datagram",
                socket.SOCK_SEQPACKET: "seqpacket", socket.SOCK_RAW: "raw"}.get(sock.type, "")
        return f"{family} {kind} socket".replace("  ", " ")


__all__ = ["FileKind", "FILE_KINDS", "RESOURCES", "Resource", "SECTIONS", "claim", "describe", "kind_named",
           "Unsupported"]
