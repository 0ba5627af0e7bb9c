"""Unix sockets: stream, datagram and seqpacket; socketpairs, bound and listening sockets,
with their queued data and message boundaries.

Queued data is read without consuming it (MSG_PEEK with SO_PEEK_OFF stepping through the
queue), so the original keeps it. At restore:
  - two connected sockets that are both in the tree come back as a socketpair, each refilled
    by sending its queued messages from the other end;
  - a listening socket is bound to its address again (a stale socket file left by the dead
    original is replaced) and listens with the same backlog; connections not yet accepted
    are dropped (their clients see a reset);
  - a datagram socket connected to a named socket outside the tree is reconnected by name;
  - a stream socket whose peer is outside the tree comes back disconnected: its queued data
    can still be read, then it reads EOF and writes fail with EPIPE, as after a peer's exit.
File descriptors in flight (SCM_RIGHTS in a queue) are refused.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from ..image import b64, unb64
from . import FileKind
from .sockets_common import apply_options, borrowed_socket, family_of, read_options, set_nonblocking

TCP_LISTEN, TCP_ESTABLISHED = 10, 1
SO_PEEK_OFF = 42
_OPTIONS = [(socket.SOL_SOCKET, socket.SO_PASSCRED), (socket.SOL_SOCKET, socket.SO_SNDBUF),
            (socket.SOL_SOCKET, socket.SO_RCVBUF)]
_PEEK_BUFFER = 1 << 20


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISSOCK(f.st.st_mode) and family_of(f, ctx)[0] == socket.AF_UNIX


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    info = ctx.tree.unix_socket(f.st.st_ino)
    if info is None:
        raise ctx.refuse(f"fd {f.fd}", "unix socket", f"{f.link}: not visible to sock_diag")
    rec: dict[str, Any] = {"inode": info.inode, "type": info.type, "flags": f.flags,
                           "name": b64(info.name) if info.name else None,
                           "peer": info.peer, "shutdown": info.shutdown, "queue": []}
    with borrowed_socket(f, ctx) as sock:
        rec["options"] = read_options(sock, _OPTIONS)
        if info.state == TCP_LISTEN:
            rec["role"] = "listening"
            rec["backlog"] = info.wqueue
        elif info.peer and info.peer in ctx.tree.sockets:
            rec["role"] = "pair"
        elif info.peer and info.type == socket.SOCK_DGRAM:
            peer = ctx.tree.unix_socket(info.peer)
            if peer is None or not peer.name:
                raise ctx.refuse(f"fd {f.fd}", "unix datagram socket",
                                 "connected to an unnamed socket outside the tree")
            rec["role"] = "connected-outside"
            rec["peer_name"] = b64(peer.name)
        elif info.peer or info.state == TCP_ESTABLISHED:
            rec["role"] = "disconnected"  # stream peer outside the tree
        else:
            rec["role"] = "unconnected"
        if rec["role"] != "listening":
            rec["queue"] = [b64(m) for m in _peek_queue(sock, info.type, f, ctx)]
    return rec


def _peek_queue(sock: socket.socket, stype: int, f: OpenFile, ctx: DumpContext) -> list[bytes]:
    """Every message waiting in the socket's receive queue, left in place."""
    messages: list[bytes] = []
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    try:
        while True:
            try:
                data, anc, flags, _ = sock.recvmsg(_PEEK_BUFFER, socket.CMSG_SPACE(253 * 4),
                                                   socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for i in range(0, len(payload) - len(payload) % 4, 4):
                        os.close(int.from_bytes(payload[i:i + 4], "little"))
                    raise ctx.refuse(f"fd {f.fd}", "unix socket", "file descriptors in flight (SCM_RIGHTS)")
            if flags & socket.MSG_TRUNC:
                raise ctx.refuse(f"fd {f.fd}", "unix socket", "queued message larger than 1 MiB")
            if not data and stype == socket.SOCK_STREAM:
                break
            messages.append(data)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, -1)
    if stype == socket.SOCK_STREAM and messages:
        return [b"".join(messages)]
    return messages


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    role = rec["role"]
    if role == "pair":
        pair = ctx.once(("unix-pair", min(rec["inode"], rec["peer"])), lambda: _new_pair(rec, ctx))
        sock, peer = (pair[0], pair[1]) if rec["inode"] < rec["peer"] else (pair[1], pair[0])
    elif role == "disconnected":
        sock, peer = socket.socketpair(socket.AF_UNIX, rec["type"])
        for message in rec["queue"]:
            peer.send(unb64(message))
        peer.close()
    else:
        sock = socket.socket(socket.AF_UNIX, rec["type"])
        if rec["name"]:
            _bind(sock, unb64(rec["name"]))
        if role == "listening":
            sock.listen(rec["backlog"])
        elif role == "connected-outside":
            try:
                sock.connect(_address(unb64(rec["peer_name"])))
            except OSError as err:
                raise RestoreConflict(f"cannot reconnect unix socket to {rec['peer_name']}: "
                                      f"{err.strerror}") from None
    apply_options(sock, rec["options"])
    if rec["shutdown"]:
        sock.shutdown({1: socket.SHUT_RD, 2: socket.SHUT_WR, 3: socket.SHUT_RDWR}[rec["shutdown"]])
    fd = ctx.keep(os.dup(sock.fileno()))
    os.set_inheritable(fd, False)
    set_nonblocking(fd, rec["flags"])
    if role != "pair":
        sock.close()
    return fd


def _new_pair(rec: dict[str, Any], ctx: RestoreContext) -> tuple[socket.socket, socket.socket]:
    """Both ends, with the messages queued on each: all queued before either end is shut
    down (an end shut down for writing can no longer fill its peer's queue)."""
    low, high = sorted((rec["inode"], rec["peer"]))
    pair = socket.socketpair(socket.AF_UNIX, rec["type"])
    ends = {f["inode"]: f for f in ctx.image.manifest["files"]
            if f["kind"] == rec["kind"] and f["role"] == "pair" and f["inode"] in (low, high)}
    for end, writer in ((low, pair[1]), (high, pair[0])):
        for message in ends.get(end, rec if end == rec["inode"] else {}).get("queue", []):
            writer.send(unb64(message))
    return pair[0], pair[1]


def _address(name: bytes) -> str | bytes:
    return name if name.startswith(b"\0") else os.fsdecode(name)


def _bind(sock: socket.socket, name: bytes) -> None:
    address = _address(name)
    try:
        sock.bind(address)
        return
    except OSError as err:
        if err.errno != errno.EADDRINUSE or name.startswith(b"\0"):
            raise RestoreConflict(f"cannot bind unix socket {address!r}: {err.strerror}") from None
    # A path left behind by the dead original: replace it unless someone listens there.
    probe = socket.socket(socket.AF_UNIX, sock.type)
    try:
        probe.connect(address)
        raise RestoreConflict(f"unix socket path {address} is in use by another process")
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(address)
        sock.bind(address)
    except OSError as err:
        if err.errno == errno.EPROTOTYPE:
            raise RestoreConflict(f"unix socket path {address} is in use") from None
        raise
    finally:
        probe.close()


UNIX_SOCKET = FileKind("unix-socket", _claims, _dump, _restore)
