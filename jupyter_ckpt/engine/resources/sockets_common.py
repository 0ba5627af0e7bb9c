"""Helpers shared by the socket kinds: looking at a dumped process's socket from here, and
copying the socket options that a restored socket must carry again."""
from __future__ import annotations

import os
import socket

from ..context import DumpContext, OpenFile

SO_DOMAIN, SO_PROTOCOL = 39, 38


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
        sock.setsockopt(level, name, value)


def set_nonblocking(fd: int, flags: int) -> None:
    import fcntl

    current = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (current & ~os.O_NONBLOCK) | (flags & os.O_NONBLOCK))
