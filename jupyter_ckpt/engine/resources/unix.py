"""Unix sockets: stream, datagram and seqpacket; socketpairs, bound, connected, listening
and never-used sockets, with their queued data and message boundaries.

Queued data is read without consuming it (MSG_PEEK with SO_PEEK_OFF stepping through the
queue), so the original keeps it; for a datagram socket each message's sender address is
kept too, and its sender's credentials when the socket has SO_PASSCRED or SO_PASSPIDFD (the
only ways they can be seen). A socket bound to a path keeps its socket file's mode and
owner (or, when that file was removed, comes back bound with no file).

At restore all the tree's unix sockets are built together, because one may need another:
  - listening sockets are bound again (a stale socket file left by the dead original is
    replaced) and listen with the same backlog;
  - two sockets connected to each other come back connected: a datagram or unnamed pair as
    a socketpair (bound to their names after), a stream connection with an address (the
    one its listener gave it when it accepted it) by connecting to that listener, or to one
    made for the moment when it has gone; each end is refilled from the other;
  - the tree's sockets that waited to be accepted connect again, in the order they waited;
    connections not yet accepted from outside the tree are dropped (their clients see a
    reset);
  - a datagram socket is bound, refilled by sending each message to its address from the
    socket that sent it (the tree's socket bound to that sender address, or one made for
    the moment: unnamed, or bound to the address of a sender since closed), then connected
    by name to its peer, in the tree or outside;
  - a stream socket whose peer is outside the tree comes back disconnected: its queued data
    can still be read, then it reads EOF and writes fail with EPIPE, as after a peer's exit.
A socket bound to a relative path is bound again from the directory its process works in
(the one the path must still be found from).
Refused: file descriptors in flight (SCM_RIGHTS in a queue), a connection waiting to be
accepted whose client has closed, a queued datagram from a named
socket outside the tree or from a closed one whose address is not free (its address could
not be re-created), a socket whose path now
leads to another file.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import stat
import struct
import threading
from dataclasses import dataclass
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from ..image import b64, unb64
from ..libc import libc
from .. import syscalls
from ..sockdiag import unix_sockets
from .kind import FileKind
from . import sockets_common
from .sockets_common import (BUFFERS, apply_extras, apply_options, borrowed_socket, family_of, read_generic,
                             read_options, set_nonblocking, tree_sockets)

log = logging.getLogger(__name__)

TCP_LISTEN, TCP_ESTABLISHED = 10, 1
SO_PEEK_OFF, SO_PASSPIDFD, SCM_PIDFD = 42, 76, 4
# (the peek offset as the program left it: peeking at the queue here moves it)
_OPTIONS = [(socket.SOL_SOCKET, socket.SO_PASSCRED), (socket.SOL_SOCKET, SO_PASSPIDFD),
            (socket.SOL_SOCKET, SO_PEEK_OFF)]
_PEEK_BUFFER = 1 << 20
_UCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid
_SHUTDOWN = {1: socket.SHUT_RD, 2: socket.SHUT_WR, 3: socket.SHUT_RDWR}
CLONE_FS = 0x200


@dataclass
class _Diag:
    """Dump: sock_diag facts about every unix socket, by inode (one netlink dump per checkpoint)."""

    by_inode: dict[int, Any] | None = None


def _facts(ctx: DumpContext, inode: int) -> Any:
    diag = ctx.tree.state(_Diag)
    if diag.by_inode is None:
        diag.by_inode = unix_sockets()
    return diag.by_inode.get(inode)


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISSOCK(f.st.st_mode) and family_of(f, ctx)[0] == socket.AF_UNIX


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    info = _facts(ctx, f.st.st_ino)
    if info is None:
        raise ctx.refuse(f"fd {f.fd}", "unix socket", f"{f.link}: not visible to sock_diag")
    rec: dict[str, Any] = {"inode": info.inode, "type": info.type, "flags": f.flags,
                           "name": b64(info.name) if info.name else None,
                           "peer": info.peer, "shutdown": info.shutdown, "queue": []}
    if info.name and not info.name.startswith(b"\0"):
        rec["file"] = _socket_file(info, rec, f, ctx)
    peer = _facts(ctx, info.peer) if info.peer else None
    with borrowed_socket(f, ctx) as sock:
        rec["options"], extras = read_generic(sock, f, ctx)
        rec["options"] += read_options(sock, _OPTIONS)
        if extras:
            rec["sockopts"] = extras
        if info.state == TCP_LISTEN:
            rec["role"] = "listening"
            rec["backlog"] = info.wqueue
            rec["pending"] = _pending_from_tree(info, f, ctx)
        elif info.state == TCP_ESTABLISHED and not info.peer and _listener_of(info, ctx):
            rec["role"] = "pending"  # its connection waits to be accepted by the tree
        elif peer is not None and info.peer in tree_sockets(ctx.tree) and peer.peer == info.inode \
                and info.peer != info.inode:  # (a datagram socket may connect to itself)
            rec["role"] = "pair"
            if info.type != socket.SOCK_DGRAM and info.name and peer.name:
                raise ctx.refuse(f"fd {f.fd}", "unix socket", "a connection whose both ends have "
                                 "addresses (a client that bound before it connected)")
        elif info.peer and info.type == socket.SOCK_DGRAM:
            if peer is None or not peer.name:
                raise ctx.refuse(f"fd {f.fd}", "unix datagram socket",
                                 "connected to an unnamed socket outside the tree")
            if info.peer not in tree_sockets(ctx.tree) and not peer.name.startswith((b"\0", b"/")):
                raise ctx.refuse(f"fd {f.fd}", "unix datagram socket",
                                 f"connected to {os.fsdecode(peer.name)}, a relative path outside the tree")
            rec["role"] = "connected" if info.peer in tree_sockets(ctx.tree) else "connected-outside"
            rec["peer_name"] = b64(peer.name)
        elif info.peer or (info.state == TCP_ESTABLISHED and info.type != socket.SOCK_DGRAM):
            rec["role"] = "disconnected"  # stream peer outside the tree
            # (a datagram socket another connected to is ESTABLISHED too, peerless)
        else:
            rec["role"] = "unconnected"
        if rec["role"] in ("pair", "disconnected") and (
                info.type == socket.SOCK_DGRAM or not (info.name or (peer is not None and peer.name))):
            creator = _exited_creator(sock)
            if creator is not None:
                rec["peercred"] = creator
        # Only a datagram socket can hold messages without a connection (and a stream or
        # seqpacket one that has none refuses even to peek: EINVAL).
        if rec["role"] != "listening" and (rec["role"] != "unconnected" or info.type == socket.SOCK_DGRAM):
            # The sender's pid shows in its credentials, and in the pidfd SO_PASSPIDFD gives.
            passcred = any(name in (socket.SO_PASSCRED, SO_PASSPIDFD) and value == 1
                           for _, name, value in rec["options"])
            messages = _peek_queue(sock, info.type, passcred, f, ctx)
            rec["queue"] = [b64(data) for data, _, _ in messages]
            if rec["role"] == "unconnected" and messages and not info.name:
                rec["role"] = "disconnected"  # its socketpair peer has gone
            if info.type == socket.SOCK_DGRAM:
                rec["senders"] = [_sender(address, f, ctx) for _, address, _ in messages]
                _check_order(rec, f, ctx)
            if passcred and info.type != socket.SOCK_STREAM:
                rec["creds"] = [creds for _, _, creds in messages]
    return rec


def _exited_creator(sock: socket.socket) -> list[int] | None:
    """[pid, uid, gid] of a socketpair's creator (SO_PEERCRED) when that process has exited,
    as a child that made the pair and left: the restore makes the pair again in a process
    of its own with that PID and those ids. (A living creator's is not kept.)"""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    if not pid or os.path.exists(f"/proc/{pid}"):
        return None
    return [pid, uid, gid]


def _pending_from_tree(info: Any, f: OpenFile, ctx: DumpContext) -> list[int]:
    """The tree's sockets whose connections wait in this listener's queue, in order (those
    from outside the tree are dropped: their clients see a reset)."""
    if 0 in info.pending_connections:  # sock_diag names no client: it has closed
        raise ctx.refuse(f"fd {f.fd}", "unix socket", "a connection not yet accepted whose client "
                         "has closed (what it sent, if anything, cannot be read before accept)")
    clients = [inode for inode in info.pending_connections if inode in tree_sockets(ctx.tree)]
    for inode in clients:
        if _facts(ctx, inode).wqueue:  # its bytes wait on the server's side
            raise ctx.refuse(f"fd {f.fd}", "unix socket", "a connection from a socket of the tree, "
                             "not yet accepted, holds data (it cannot be read before accept)")
    return clients


def _listener_of(info: Any, ctx: DumpContext) -> int | None:
    """The tree's listening socket in whose queue this socket's connection waits."""
    for inode in tree_sockets(ctx.tree):
        listener = _facts(ctx, inode)
        if listener is not None and listener.state == TCP_LISTEN and info.inode in listener.pending_connections:
            return inode
    return None


def _socket_file(info: Any, rec: dict[str, Any], f: OpenFile, ctx: DumpContext) -> dict[str, int] | None:
    """Mode and owner of the file a bind to a path made; None when it has been removed. A
    relative path was resolved from the working directory of the time: the current one must
    still lead to the socket's file (its directory is recorded in rec["dir"])."""
    path = os.fsdecode(info.name)
    if not path.startswith("/"):
        rec["dir"] = os.readlink(f"/proc/{f.pid}/cwd")
        path = os.path.join(rec["dir"], path)
    try:
        st = os.lstat(f"/proc/{f.pid}/root{path}")
    except FileNotFoundError:
        if "dir" in rec:
            raise ctx.refuse(f"fd {f.fd}", "unix socket", f"bound to the relative path "
                             f"{os.fsdecode(info.name)}, not found from its working directory") from None
        return None
    if info.vfs is None or (st.st_ino, st.st_dev) != info.vfs:
        raise ctx.refuse(f"fd {f.fd}", "unix socket", f"{path}: the path now leads to another file")
    return {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def _sender(address: Any, f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    """Who sent a queued datagram: the tree's socket bound to its address, no one named, or
    a socket since closed whose address is free (a socket made for the moment takes it)."""
    if address is None or address in ("", b""):
        return {"name": None, "inode": None}
    name = address if isinstance(address, bytes) else os.fsencode(address)
    for inode in tree_sockets(ctx.tree):
        info = _facts(ctx, inode)
        if info is not None and info.name == name:
            return {"name": b64(name), "inode": inode}
    why = None
    if any(info.name == name for info in unix_sockets().values()):
        why = "a socket outside the tree"
    elif not name.startswith((b"\0", b"/")):
        why = "a closed socket's relative path"
    elif not name.startswith(b"\0") and os.path.lexists(f"/proc/{f.pid}/root{os.fsdecode(name)}"):
        why = "a closed socket whose file remains"
    if why:
        raise ctx.refuse(f"fd {f.fd}", "unix datagram socket",
                         f"a queued datagram from {_address(name)!r}, {why} (its address cannot be re-created)")
    return {"name": b64(name), "inode": None}


def _check_order(rec: dict[str, Any], f: OpenFile, ctx: DumpContext) -> None:
    """A connected datagram socket accepts only its peer's messages: others' must have come
    before it connected, so that they can be sent again before it connects again."""
    senders = rec["senders"]
    if rec["role"] == "pair":
        if any(s["inode"] not in (rec["peer"], None) for s in senders):
            raise ctx.refuse(f"fd {f.fd}", "unix datagram socket",
                             "a queued datagram from a socket other than its socketpair peer")
    elif rec["role"] == "connected":
        from_peer = [s["name"] == rec["peer_name"] for s in senders]
        if any(earlier and not later for earlier, later in zip(from_peer, from_peer[1:])):
            raise ctx.refuse(f"fd {f.fd}", "unix datagram socket",
                             "datagrams from other sockets queued after its peer's")
    elif rec["role"] == "disconnected" and any(s["name"] is not None for s in senders):
        raise ctx.refuse(f"fd {f.fd}", "unix datagram socket",
                         "unnamed, its peer gone, holding datagrams from a named socket")


def _peek_queue(sock: socket.socket, stype: int, passcred: bool, f: OpenFile,
                ctx: DumpContext) -> list[tuple[bytes, Any, list[int] | None]]:
    """Every message waiting in the socket's receive queue, left in place: (data, sender
    address, [pid, uid, gid] of its sender as the tree sees it, when SO_PASSCRED shows it)."""
    messages: list[tuple[bytes, Any, list[int] | None]] = []
    peek_offset = sock.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF)
    showed_creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED)
    sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
    # Every message then comes with credentials, so that the end of the queue is told apart
    # from an empty datagram where a read shutdown returns 0 bytes (the tree is frozen).
    if stype != socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    try:
        while True:
            try:
                data, anc, flags, address = sock.recvmsg(
                    _PEEK_BUFFER, socket.CMSG_SPACE(253 * 4) + socket.CMSG_SPACE(_UCRED.size),
                    socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            creds, seen = None, stype == socket.SOCK_STREAM
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SCM_PIDFD:
                    os.close(int.from_bytes(payload[:4], "little"))  # (the pid is in creds)
                    continue
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for i in range(0, len(payload) - len(payload) % 4, 4):
                        os.close(int.from_bytes(payload[i:i + 4], "little"))
                    raise ctx.refuse(f"fd {f.fd}", "unix socket", "file descriptors in flight (SCM_RIGHTS)")
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    seen = True
                    pid, uid, gid = _UCRED.unpack(payload[:_UCRED.size])
                    if not passcred or not pid:  # (none were attached: neither end asked)
                        continue
                    if not os.path.exists(f"/proc/{pid}"):
                        raise ctx.refuse(f"fd {f.fd}", "unix socket",
                                         f"a queued message from pid {pid}, which has exited: "
                                         "the credentials SO_PASSCRED shows cannot be re-created")
                    creds = [ctx.tree.inner(pid) if pid in ctx.tree.pids else pid, uid, gid]
            if flags & socket.MSG_TRUNC:
                raise ctx.refuse(f"fd {f.fd}", "unix socket", "queued message larger than 1 MiB")
            if not seen or (not data and stype == socket.SOCK_STREAM):
                break
            messages.append((data, address, creds))
    finally:
        sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, peek_offset)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, showed_creds)
    if stype == socket.SOCK_STREAM and messages:
        return [(b"".join(data for data, _, _ in messages), None, None)]
    return messages


@dataclass
class _Built:
    """Restore: every unix socket of the image, made together on first use, by inode."""

    by_inode: dict[int, socket.socket] | None = None


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    built = ctx.state(_Built)
    if built.by_inode is None:
        built.by_inode = _build_all(ctx)
    sock = built.by_inode[rec["inode"]]
    fd = ctx.keep(os.dup(sock.fileno()))
    os.set_inheritable(fd, False)
    set_nonblocking(fd, rec["flags"])
    return fd


def _build_all(ctx: RestoreContext) -> dict[int, socket.socket]:
    """Every unix socket of the image, bound, filled and connected as recorded (kept open by
    the restorer until the tree has its copies)."""
    records = {rec["inode"]: rec for rec in ctx.image.manifest["files"] if rec["kind"] == UNIX_SOCKET.name}
    socks: dict[int, socket.socket] = {}
    listeners: dict[str, socket.socket] = {}
    for inode, rec in records.items():
        if rec["role"] == "listening":
            socks[inode] = listeners[rec["name"]] = socket.socket(socket.AF_UNIX, rec["type"])
            _set_up(socks[inode], rec, bind=True)
            socks[inode].listen(rec["backlog"])
    for inode, rec in records.items():
        if inode in socks:
            continue
        accepted = rec["type"] != socket.SOCK_DGRAM and rec["role"] in ("pair", "disconnected")
        if rec["role"] == "pair":
            peer_rec = records[rec["peer"]]
            if accepted and (rec["name"] or peer_rec["name"]):
                named, other = (rec, peer_rec) if rec["name"] else (peer_rec, rec)
                socks[named["inode"]], socks[other["inode"]] = _accept_as(named, listeners)
            else:
                socks[inode], socks[rec["peer"]] = _socketpair(rec["type"], rec.get("peercred"), ctx)
            _set_up(socks[rec["peer"]], peer_rec, bind=not accepted)
        elif rec["role"] == "disconnected":
            if accepted and rec["name"]:
                socks[inode], peer = _accept_as(rec, listeners)
            else:
                socks[inode], peer = _socketpair(rec["type"], rec.get("peercred"), ctx)
            for i, message in enumerate(rec["queue"]):
                _send(peer, unb64(message), _credentials(rec, i, ctx), None)
            peer.close()
        else:
            socks[inode] = socket.socket(socket.AF_UNIX, rec["type"])
        _set_up(socks[inode], rec, bind=not accepted)
    for rec in records.values():
        for client in rec.get("pending", []):
            _connect(socks[client], _reach(rec))
    early = {inode: _from_others(rec) for inode, rec in records.items()}
    for inode, rec in records.items():
        for i in range(early[inode]):
            _requeue(rec, i, socks, ctx)
    for inode, rec in records.items():
        if rec["role"] in ("connected", "connected-outside"):
            _connect(socks[inode], _reach(records[rec["peer"]]) if rec["role"] == "connected"
                     else _address(unb64(rec["peer_name"])))
    for inode, rec in records.items():
        if rec["role"] != "disconnected":  # (filled as it was made)
            for i in range(early[inode], len(rec["queue"])):
                _requeue(rec, i, socks, ctx)
    # Files the original had removed, needed until now (a listener and the sockets it
    # accepted share one).
    for path in {_reach(rec) for rec in records.values() if "file" in rec and rec["file"] is None}:
        os.unlink(path)
    for inode, rec in records.items():
        what = f"unix socket {rec['inode']}"
        apply_options(socks[inode], rec["options"], what)
        apply_extras(socks[inode], rec.get("sockopts", {}), rec["options"], what)
        if rec["shutdown"]:
            socks[inode].shutdown(_SHUTDOWN[rec["shutdown"]])
    return socks


def _socketpair(stype: int, creator: list[int] | None,
                ctx: RestoreContext) -> tuple[socket.socket, socket.socket]:
    """A socketpair; one whose creator had exited is made by a process of its own with the
    creator's PID, uid and gid (SO_PEERCRED shows them), which exits in turn."""
    if creator is None:
        return socket.socketpair(socket.AF_UNIX, stype)
    pid, uid, gid = creator
    what = f"a unix socketpair made by pid {pid}, which had exited"
    if any(ours != theirs for theirs, ours in ctx.outer_pids.items()):
        raise RestoreConflict(f"{what}: its credentials cannot be made again in a new PID namespace")
    channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with channel:
        try:
            child = syscalls.fork_with_pid(pid)
        except OSError as err:
            theirs.close()
            raise RestoreConflict(f"{what}: cannot take its PID again: {err.strerror}") from None
        if child == 0:
            try:
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
                pair = socket.socketpair(socket.AF_UNIX, stype)
                socket.send_fds(theirs, [b"p"], [pair[0].fileno(), pair[1].fileno()])
            finally:
                os._exit(0)
        theirs.close()  # (a helper that failed then leaves the channel empty, not waiting)
        _, fds, _, _ = socket.recv_fds(channel, 1, 2)
        os.waitpid(child, 0)
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise RestoreConflict(f"{what}: could not take its uid {uid} and gid {gid}")
    return socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])


def _connect(sock: socket.socket, address: str | bytes) -> None:
    """Connect, never waiting (a full backlog is a conflict)."""
    sock.setblocking(False)
    try:
        sock.connect(address)
    except OSError as err:
        raise RestoreConflict(f"cannot reconnect unix socket to {address!r}: {err.strerror}") from None
    finally:
        sock.setblocking(True)


def _set_up(sock: socket.socket, rec: dict[str, Any], bind: bool) -> None:
    """Bind to the recorded address and size the buffers (SO_PASSCRED and SO_PASSPIDFD come
    last: set now, they would make the socket bind itself to a random name when it sends)."""
    apply_options(sock, [o for o in rec["options"] if (o[0], o[1]) in BUFFERS])
    if rec["name"] and bind:
        _bind(sock, rec)


def _accept_as(rec: dict[str, Any], listeners: dict[str, socket.socket]) -> tuple[socket.socket, socket.socket]:
    """(accepted, connecting) ends of a new connection: a connected stream socket's address
    is the one of the listener that accepted it, which it shares and cannot bind. The tree's
    listener at that address accepts it, or one made for the moment when it has gone."""
    listener = listeners.get(rec["name"])
    if listener is None:
        listener = socket.socket(socket.AF_UNIX, rec["type"])
        _bind(listener, rec)
        listener.listen(1)
    client = socket.socket(socket.AF_UNIX, rec["type"])
    try:
        _connect(client, _reach(rec))
        accepted, _ = listener.accept()
    finally:
        if rec["name"] not in listeners:
            listener.close()
    return accepted, client


def _from_others(rec: dict[str, Any]) -> int:
    """How many queued datagrams, from the front, must go in before the socket connects."""
    if rec["role"] != "connected":
        return len(rec["queue"]) if rec["role"] in ("unconnected", "connected-outside") else 0
    count = 0
    for sender in rec["senders"]:
        if sender["name"] == rec["peer_name"]:
            break
        count += 1
    return count


def _requeue(rec: dict[str, Any], i: int, socks: dict[int, socket.socket], ctx: RestoreContext) -> None:
    """Put the i-th recorded message back in the socket's receive queue, from its sender."""
    data, anc = unb64(rec["queue"][i]), _credentials(rec, i, ctx)
    try:
        if rec["role"] == "pair":
            _send(socks[rec["peer"]], data, anc, None)
        elif rec["senders"][i]["inode"] is not None:
            _send(socks[rec["senders"][i]["inode"]], data, anc, _reach(rec))
        else:
            with socket.socket(socket.AF_UNIX, rec["type"]) as stand_in:
                name = rec["senders"][i]["name"]
                if name is not None:  # a socket since closed: its name was free at dump
                    stand_in.bind(_address(unb64(name)))
                try:
                    _send(stand_in, data, anc, _reach(rec))
                finally:
                    if name is not None and not unb64(name).startswith(b"\0"):
                        os.unlink(_address(unb64(name)))
    except OSError as err:
        raise RestoreConflict(f"cannot queue a message again in unix socket {rec['inode']}: "
                              f"{err.strerror}") from None


def _credentials(rec: dict[str, Any], i: int, ctx: RestoreContext) -> list[tuple[int, int, bytes]]:
    """SCM_CREDENTIALS naming the original sender, when the receiver shows them (the
    sender's PID as we see it: it differs in a new PID namespace)."""
    if "creds" not in rec or rec["creds"][i] is None:
        return []
    pid, uid, gid = rec["creds"][i]
    return [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, _UCRED.pack(ctx.outer_pids.get(pid, pid), uid, gid))]


def _send(sock: socket.socket, data: bytes, anc: list[Any], to: str | bytes | None) -> None:
    """One message, never waiting: a full queue is a conflict, not a hang."""
    if sock.type == socket.SOCK_STREAM:
        sock.sendall(data)
    elif to is None:
        sock.sendmsg([data], anc, socket.MSG_DONTWAIT)
    else:
        sock.sendmsg([data], anc, socket.MSG_DONTWAIT, to)


def _address(name: bytes) -> str | bytes:
    return name if name.startswith(b"\0") else os.fsdecode(name)


def _reach(rec: dict[str, Any]) -> str | bytes:
    """The address by which the restorer reaches the recorded socket: its abstract name, or
    its path made absolute."""
    address = _address(unb64(rec["name"]))
    return os.path.join(rec["dir"], address) if isinstance(address, str) and "dir" in rec else address


def _bind(sock: socket.socket, rec: dict[str, Any]) -> None:
    """Bind to the recorded address; a path gets the recorded mode and owner (one the
    original had removed is removed again once others have used it to send or connect)."""
    address, path = _address(unb64(rec["name"])), _reach(rec)
    try:
        _bind_from(sock, address, rec.get("dir"))
    except OSError as err:
        if err.errno != errno.EADDRINUSE or isinstance(address, bytes):
            raise RestoreConflict(f"cannot bind unix socket {address!r}: {err.strerror}") from None
        _remove_stale(sock, path)
        _bind_from(sock, address, rec.get("dir"))
    if isinstance(path, bytes) or rec.get("file") is None:
        return
    owner = (rec["file"]["uid"], rec["file"]["gid"])
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != owner:
        try:
            os.chown(path, *owner)
        except OSError as err:
            raise RestoreConflict(f"cannot give the socket file {path} its owner "
                                  f"{owner[0]}:{owner[1]}: {err.strerror}") from None
    os.chmod(path, rec["file"]["mode"])


def _bind_from(sock: socket.socket, address: str | bytes, directory: str | None) -> None:
    """bind() resolves a relative path from the working directory and the socket keeps the
    path as given: such a bind is made by a thread with a working directory of its own."""
    if directory is None:
        sock.bind(address)
        return
    failure: list[OSError] = []

    def bind_there() -> None:
        try:
            if libc.unshare(CLONE_FS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_FS)")
            os.chdir(directory)
            sock.bind(address)
        except OSError as err:
            failure.append(err)

    thread = threading.Thread(target=bind_there, name="unix-bind")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _remove_stale(sock: socket.socket, path: str) -> None:
    """A path left behind by the dead original: remove it unless someone listens there."""
    probe = socket.socket(socket.AF_UNIX, sock.type)
    try:
        probe.connect(path)
        raise RestoreConflict(f"unix socket path {path} is in use by another process")
    except (ConnectionRefusedError, FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise RestoreConflict(f"{path} exists and is not a socket") from None
        log.debug("replacing the stale socket file %s", path)
        os.unlink(path)
    except OSError as err:
        if err.errno == errno.EPROTOTYPE:
            raise RestoreConflict(f"unix socket path {path} is in use") from None
        raise
    finally:
        probe.close()


UNIX_SOCKET = FileKind("unix-socket", _claims, _dump, _restore, index=sockets_common.index)
