"""Helpers shared by the socket kinds: looking at a dumped process's socket from here, and
copying the socket options that a restored socket must carry again."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from ..context import DumpContext, OpenFile, TreeIndex
from ..errors import RestoreConflict

SO_DOMAIN, SO_PROTOCOL = 39, 38
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
_BUFFER_FORCE = {socket.SO_SNDBUF: SO_SNDBUFFORCE, socket.SO_RCVBUF: SO_RCVBUFFORCE}


@dataclass
class _Sockets:
    """Dump: the inodes of every socket open in the tree (a peer inside is restored with it)."""

    inodes: set[int] = field(default_factory=set)


def index(tree: TreeIndex, pid: int, files: list[OpenFile]) -> None:
    """The index phase of every socket kind (each adds the same inodes)."""
    tree.state(_Sockets).inodes.update(f.st.st_ino for f in files if f.link.startswith("socket:"))


def tree_sockets(tree: TreeIndex) -> set[int]:
    """The inodes of the sockets open in the tree."""
    return tree.state(_Sockets).inodes


def borrowed_socket(f: OpenFile, ctx: DumpContext) -> socket.socket:
    """A socket object over our own duplicate of the process's socket (close it after use)."""
    return socket.socket(fileno=os.dup(ctx.dup_of(f.fd)))


def family_of(f: OpenFile, ctx: DumpContext) -> tuple[int, int, int]:
    """(family, type, protocol) of a socket fd of the dumped process."""
    fd = ctx.dup_of(f.fd)
    with socket.socket(fileno=os.dup(fd)) as s:
        return (s.getsockopt(socket.SOL_SOCKET, SO_DOMAIN), s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE),
                s.getsockopt(socket.SOL_SOCKET, SO_PROTOCOL))


def read_options(sock: socket.socket, options: list[tuple[int, int]]) -> list[list[int]]:
    values = []
    for level, name in options:
        try:
            values.append([level, name, sock.getsockopt(level, name)])
        except OSError:
            pass  # not applicable to this socket
    return values


def apply_options(sock: socket.socket, values: list[list[int]]) -> None:
    for level, name, value in values:
        if level == socket.SOL_SOCKET and name in _BUFFER_FORCE:
            _set_buffer_size(sock, name, value)
        else:
            sock.setsockopt(level, name, value)


def _set_buffer_size(sock: socket.socket, name: int, value: int) -> None:
    """The kernel reports twice the size it was given (its bookkeeping overhead), and caps
    what it is given at net.core.[wr]mem_max unless forced (CAP_NET_ADMIN). A size left at
    its default is not set, so that the socket does not become user-locked for nothing."""
    if sock.getsockopt(socket.SOL_SOCKET, name) == value:
        return
    sock.setsockopt(socket.SOL_SOCKET, name, value // 2)
    if sock.getsockopt(socket.SOL_SOCKET, name) != value:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _BUFFER_FORCE[name], value // 2)
        except PermissionError:
            pass
    got = sock.getsockopt(socket.SOL_SOCKET, name)
    if got != value:
        raise RestoreConflict(f"cannot size a socket buffer to {value} bytes (got {got}): "
                              "see net.core.wmem_max and rmem_max")


def set_nonblocking(fd: int, flags: int) -> None:
    import fcntl

    current = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (current & ~os.O_NONBLOCK) | (flags & os.O_NONBLOCK))
