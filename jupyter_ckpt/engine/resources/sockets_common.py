"""Helpers shared by the socket kinds: looking at a dumped process's socket from here, and
copying the socket options that a restored socket must carry again.

Every generic (SOL_SOCKET) option that can be read back is saved: the integer ones in the
record's "options" ([level, name, value]), the others (a classic BPF filter, the bound
device, SO_LINGER, the receive and send timeouts) in its "sockopts". What is set and cannot
be read back faithfully (an eBPF filter, a timestamping clock bound with BIND_PHC) is refused.
Buffer sizes are saved as they are, and SO_BUF_LOCK says whether the program had fixed them.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from ..context import DumpContext, OpenFile, TreeIndex
from ..errors import RestoreConflict
from ..image import b64, unb64
from ..libc import libc

log = logging.getLogger(__name__)

SO_DOMAIN, SO_PROTOCOL = 39, 38
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
SO_ATTACH_FILTER, SO_DETACH_FILTER, SO_GET_FILTER, SO_LOCK_FILTER = 26, 27, 26, 44
SO_TIMESTAMP_OLD, SO_TIMESTAMPNS_OLD, SO_TIMESTAMPING_OLD = 29, 35, 37
SO_TIMESTAMP_NEW, SO_TIMESTAMPNS_NEW, SO_TIMESTAMPING_NEW = 63, 64, 65
SO_RXQ_OVFL, SO_WIFI_STATUS, SO_PEEK_OFF, SO_SELECT_ERR_QUEUE = 40, 41, 42, 45
SO_BUSY_POLL, SO_MAX_PACING_RATE, SO_ZEROCOPY, SO_PREFER_BUSY_POLL = 46, 47, 60, 69
SO_BUF_LOCK, SO_RESERVE_MEM, SO_RCVMARK, SO_RCVPRIORITY = 72, 73, 75, 82
SOF_TIMESTAMPING_BIND_PHC = 1 << 15
_BUFFER_FORCE = {socket.SO_SNDBUF: SO_SNDBUFFORCE, socket.SO_RCVBUF: SO_RCVBUFFORCE}
BUFFERS = [(socket.SOL_SOCKET, socket.SO_SNDBUF), (socket.SOL_SOCKET, socket.SO_RCVBUF)]
_LINGER = struct.Struct("=ii")  # struct linger
_TIMEVAL = struct.Struct("=qq")  # struct timeval (SO_RCVTIMEO_OLD, SO_SNDTIMEO_OLD)
_TIMEOUTS = {"rcvtimeo": socket.SO_RCVTIMEO, "sndtimeo": socket.SO_SNDTIMEO}
_IFNAMSIZ = 16

# Integer options every socket family has (the kernel answers ENOPROTOOPT or EOPNOTSUPP
# for those a socket does not have: they are then not saved).
GENERIC_OPTIONS = [(socket.SOL_SOCKET, name) for name in (
    socket.SO_REUSEADDR, socket.SO_REUSEPORT, socket.SO_KEEPALIVE, socket.SO_BROADCAST,
    socket.SO_OOBINLINE, socket.SO_PRIORITY, socket.SO_RCVLOWAT, socket.SO_DONTROUTE,
    socket.SO_MARK, socket.SO_DEBUG, socket.SO_PASSSEC, SO_TIMESTAMP_OLD, SO_TIMESTAMPNS_OLD,
    SO_TIMESTAMP_NEW, SO_TIMESTAMPNS_NEW, SO_TIMESTAMPING_OLD, SO_TIMESTAMPING_NEW, SO_RXQ_OVFL,
    SO_WIFI_STATUS, SO_SELECT_ERR_QUEUE, SO_BUSY_POLL, SO_MAX_PACING_RATE, SO_ZEROCOPY,
    SO_PREFER_BUSY_POLL, SO_RESERVE_MEM, SO_RCVMARK, SO_RCVPRIORITY, SO_BUF_LOCK)]
_FILTER_LOCK = [socket.SOL_SOCKET, SO_LOCK_FILTER, 1]  # set by apply_extras, after the filter


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


def read_generic(sock: socket.socket, f: OpenFile, ctx: DumpContext) -> tuple[list[list[int]], dict[str, Any]]:
    """The generic options of a socket: (integer options, the others for "sockopts"). The
    buffer sizes are saved whether the program set them or not: with SO_BUF_LOCK, set last,
    they come back as they were, and locked only if they were."""
    options = read_options(sock, GENERIC_OPTIONS + BUFFERS)
    for level, name, value in options:
        if name in (SO_TIMESTAMPING_OLD, SO_TIMESTAMPING_NEW) and value & SOF_TIMESTAMPING_BIND_PHC:
            raise ctx.refuse(f"fd {f.fd}", "socket", "SO_TIMESTAMPING bound to a PTP clock "
                             "(SOF_TIMESTAMPING_BIND_PHC), which cannot be read back")
    extras: dict[str, Any] = {}
    program = read_filter(sock, f, ctx)
    if program is not None:
        extras["filter"] = b64(program)
        options += read_options(sock, [(socket.SOL_SOCKET, SO_LOCK_FILTER)])
    device = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, _IFNAMSIZ).split(b"\0", 1)[0]
    if device:
        extras["device"] = os.fsdecode(device)
    linger = _LINGER.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER.size))
    if any(linger):
        extras["linger"] = list(linger)
    for key, name in _TIMEOUTS.items():
        timeout = _TIMEVAL.unpack(sock.getsockopt(socket.SOL_SOCKET, name, _TIMEVAL.size))
        if any(timeout):
            extras[key] = list(timeout)
    return options, extras


def read_filter(sock: socket.socket, f: OpenFile, ctx: DumpContext) -> bytes | None:
    """The classic BPF program attached with SO_ATTACH_FILTER (struct sock_filter array),
    None if none. SO_GET_FILTER counts in instructions, not bytes, so it is called directly."""
    count = ctypes.c_uint(0)
    if libc.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_GET_FILTER, None, ctypes.byref(count)) != 0:
        err = ctypes.get_errno()
        if err == errno.EACCES:  # an eBPF program keeps no original to give back
            raise ctx.refuse(f"fd {f.fd}", "socket", "an eBPF socket filter (SO_ATTACH_BPF), "
                             "which cannot be read back")
        raise ctx.refuse(f"fd {f.fd}", "socket", f"cannot read its socket filter: {os.strerror(err)}")
    if count.value == 0:
        return None
    program = ctypes.create_string_buffer(count.value * 8)
    if libc.getsockopt(sock.fileno(), socket.SOL_SOCKET, SO_GET_FILTER, program, ctypes.byref(count)) != 0:
        raise ctx.refuse(f"fd {f.fd}", "socket", "its socket filter changed while it was read")
    return program.raw[:count.value * 8]


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """Attach a classic BPF program (struct sock_fprog: length, then a pointer to it)."""
    code = ctypes.create_string_buffer(program, len(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(code)))


def apply_extras(sock: socket.socket, extras: dict[str, Any], options: list[list[int]], what: str) -> None:
    """Set the options of "sockopts" (the bound device first: a bind or connect after it
    depends on it), and lock the filter if `options` say it was. `what` names the socket in
    a conflict."""
    if "device" in extras:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, os.fsencode(extras["device"]))
        except OSError as err:
            raise RestoreConflict(f"{what}: cannot bind it to network device {extras['device']!r} "
                                  f"(SO_BINDTODEVICE): {err.strerror}") from None
    if "linger" in extras:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER.pack(*extras["linger"]))
    for key, name in _TIMEOUTS.items():
        if key in extras:
            sock.setsockopt(socket.SOL_SOCKET, name, _TIMEVAL.pack(*extras[key]))
    if "filter" in extras:
        attach_filter(sock, unb64(extras["filter"]))
        if _FILTER_LOCK in options:
            sock.setsockopt(socket.SOL_SOCKET, SO_LOCK_FILTER, 1)


def apply_options(sock: socket.socket, values: list[list[int]], what: str = "socket") -> None:
    """Set each saved integer option that differs from what the socket has now (an option
    left at its default stays so: it keeps following the host's defaults, and setting it
    could need a privilege), the buffer locks last (setting a size locks it)."""
    ordered = sorted(values, key=lambda v: (v[0], v[1]) == (socket.SOL_SOCKET, SO_BUF_LOCK))
    for level, name, value in ordered:
        if (level, name) == (socket.SOL_SOCKET, SO_LOCK_FILTER):
            continue  # (apply_extras: after the filter)
        if level == socket.SOL_SOCKET and name in _BUFFER_FORCE:
            _set_buffer_size(sock, name, value)
            continue
        try:
            if sock.getsockopt(level, name) == value:
                continue
            sock.setsockopt(level, name, value)
        except OSError as err:
            raise RestoreConflict(f"{what}: cannot set socket option {level}:{name} to {value}: "
                                  f"{err.strerror}") from None


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
