"""A minimal NETLINK_SOCK_DIAG client: what /proc does not say about unix sockets (the peer's
inode, shutdown state, queue lengths, pending connections, the file a bound socket made),
and the shutdown state of inet sockets."""
from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
UDIAG_SHOW_NAME, UDIAG_SHOW_VFS, UDIAG_SHOW_PEER, UDIAG_SHOW_ICONS, UDIAG_SHOW_RQLEN, UDIAG_SHOW_SHUTDOWN = \
    0x1, 0x2, 0x4, 0x8, 0x10, 0x40
UNIX_DIAG_NAME, UNIX_DIAG_VFS, UNIX_DIAG_PEER, UNIX_DIAG_ICONS, UNIX_DIAG_RQLEN, UNIX_DIAG_SHUTDOWN = 0, 1, 2, 3, 4, 6

_NLMSGHDR = struct.Struct("=IHHII")
_UNIX_REQ = struct.Struct("=BBHIIIII")
_UNIX_MSG = struct.Struct("=BBBBIII")
_RTATTR = struct.Struct("=HH")
_INET_REQ = struct.Struct("=BBBxI48x")  # struct inet_diag_req_v2, any address
_INET_MSG = struct.Struct("=BBBB48xIIIII")  # struct inet_diag_msg
INET_DIAG_SHUTDOWN = 8
_KERNEL_MINORBITS = 20  # the kernel's own dev_t, as sock_diag reports it


@dataclass
class UnixSocketInfo:
    inode: int
    type: int  # SOCK_STREAM / SOCK_DGRAM / SOCK_SEQPACKET
    state: int  # TCP_ESTABLISHED (1), TCP_LISTEN (10), TCP_CLOSE (7)
    name: bytes | None = None  # bound address (b"\0..." for abstract)
    peer: int = 0  # peer's inode, 0 if none
    pending_connections: list[int] = field(default_factory=list)
    rqueue: int = 0
    wqueue: int = 0
    shutdown: int = 0
    vfs: tuple[int, int] | None = None  # (inode, st_dev) of the socket file a path bind made


def _align(n: int) -> int:
    return (n + 3) & ~3


def unix_sockets() -> dict[int, UnixSocketInfo]:
    """Every unix socket in our network namespace, by inode."""
    show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN | UDIAG_SHOW_SHUTDOWN
    req = _UNIX_REQ.pack(socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)
    result: dict[int, UnixSocketInfo] = {}
    for body in _dump(req):
        info = _parse(body)
        result[info.inode] = info
    return result


def inet_shutdown(family: int, protocol: int) -> dict[int, int]:
    """The shutdown state (1 for reading, 2 for writing, 3 both: the kernel's
    RCV_SHUTDOWN and SEND_SHUTDOWN) of every inet socket of this family and protocol in our network namespace, by inode (the kernel gives it for all)."""
    req = _INET_REQ.pack(family, protocol, 0, 0xFFFFFFFF)
    result: dict[int, int] = {}
    for body in _dump(req):
        inode = _INET_MSG.unpack_from(body)[8]
        off = _INET_MSG.size
        while off + _RTATTR.size <= len(body):
            length, kind = _RTATTR.unpack_from(body, off)
            if kind == INET_DIAG_SHUTDOWN:
                result[inode] = body[off + _RTATTR.size]
            off += _align(max(length, _RTATTR.size))
    return result


def _dump(req: bytes) -> Iterator[bytes]:
    """The bodies of the answers to one SOCK_DIAG_BY_FAMILY dump request."""
    msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.send(msg)
        while True:
            data = nl.recv(1 << 20)
            off = 0
            while off < len(data):
                length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, off)
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                    raise OSError(-err, "sock_diag dump failed")
                yield data[off + _NLMSGHDR.size: off + length]
                off += _align(length)


def _parse(body: bytes) -> UnixSocketInfo:
    _family, stype, state, _, inode, _, _ = _UNIX_MSG.unpack_from(body)
    info = UnixSocketInfo(inode, stype, state)
    off = _UNIX_MSG.size
    while off + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, off)
        payload = body[off + _RTATTR.size: off + length]
        if kind == UNIX_DIAG_NAME:  # a path ends at its NUL; an abstract name starts with one
            info.name = payload if payload.startswith(b"\0") else payload.split(b"\0", 1)[0]
        elif kind == UNIX_DIAG_VFS:
            ino, dev = struct.unpack("=II", payload[:8])
            info.vfs = (ino, os.makedev(dev >> _KERNEL_MINORBITS, dev & ((1 << _KERNEL_MINORBITS) - 1)))
        elif kind == UNIX_DIAG_PEER:
            (info.peer,) = struct.unpack("=I", payload)
        elif kind == UNIX_DIAG_ICONS:
            info.pending_connections = list(struct.unpack(f"={len(payload) // 4}I", payload))
        elif kind == UNIX_DIAG_RQLEN:
            info.rqueue, info.wqueue = struct.unpack("=II", payload)
        elif kind == UNIX_DIAG_SHUTDOWN:
            (info.shutdown,) = struct.unpack("=B", payload[:1])
        off += _align(length)
    return info
