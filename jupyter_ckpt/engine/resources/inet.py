"""TCP and UDP sockets over IPv4 and IPv6.

  - A listening TCP socket comes back listening on the same address and port with the same
    backlog, so new clients can connect. Connections waiting in its accept queue are dropped.
  - An established TCP connection comes back exactly (tcp_repair.py: sequence numbers, queued
    data both ways, options, windows), the peer none the wiser. That needs CAP_NET_ADMIN, and,
    when the peer is outside the tree, `dump --kill`: an original that ran on would carry the
    connection on without the copy. Otherwise it is refused by name.
  - Any other connected TCP socket (connecting or closing) is refused, unless the caller
    asked for connections to be reset (dump(tcp_close=True), `--tcp-close`): then every
    connected one, established or not, comes back *closed*: a TCP socket whose connection
    has ended, so the program sees an ordinary disconnect (poll reports POLLHUP, reads
    return end-of-file, writes fail with EPIPE) and its clients reconnect. This is what lets ZeroMQ in a restored Jupyter kernel drop stale connections
    and accept the client's reconnection. The image records the state each one had.
  - An unconnected socket is recreated (and bound if it was); a UDP socket is bound and
    connected again. Queued UDP datagrams are not kept (UDP may drop them anyway).
Socket options that change behaviour (reuse, keepalive, nodelay, v6only, ...) are carried over.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import stat
from dataclasses import dataclass
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from . import sockets_common, tcp_repair
from .kind import FileKind
from .sockets_common import apply_options, borrowed_socket, family_of, read_options, set_nonblocking, tree_sockets

TCP_STATES = {1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait1", 5: "fin-wait2",
              6: "time-wait", 7: "close", 8: "close-wait", 9: "last-ack", 10: "listen", 11: "closing"}
_OPTIONS = [(socket.SOL_SOCKET, socket.SO_REUSEADDR), (socket.SOL_SOCKET, socket.SO_REUSEPORT),
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE), (socket.SOL_SOCKET, socket.SO_BROADCAST),
            (socket.SOL_SOCKET, socket.SO_OOBINLINE), (socket.IPPROTO_TCP, socket.TCP_NODELAY),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE), (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT), (socket.IPPROTO_TCP, socket.TCP_CORK),
            (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT), (socket.SOL_SOCKET, socket.SO_PRIORITY),
            (socket.SOL_SOCKET, socket.SO_RCVLOWAT), (socket.SOL_SOCKET, socket.SO_DONTROUTE)]
_V6ONLY = (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
_BUFFERS = [(socket.SOL_SOCKET, socket.SO_SNDBUF), (socket.SOL_SOCKET, socket.SO_RCVBUF)]


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    if not stat.S_ISSOCK(f.st.st_mode):
        return False
    family, stype, proto = family_of(f, ctx)
    return family in (socket.AF_INET, socket.AF_INET6) and (
        (stype, proto) in ((socket.SOCK_STREAM, socket.IPPROTO_TCP), (socket.SOCK_DGRAM, socket.IPPROTO_UDP)))


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    family, stype, _ = family_of(f, ctx)
    with borrowed_socket(f, ctx) as sock:
        options = read_options(sock, _OPTIONS + ([_V6ONLY] if family == socket.AF_INET6 else []))
        local = sock.getsockname()
        rec: dict[str, Any] = {"family": family, "type": stype, "flags": f.flags,
                               "local": list(local[:2]), "options": options}
        if stype == socket.SOCK_STREAM:
            state = TCP_STATES.get(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0], "?")
            rec["state"] = state
            if state == "listen":
                rec["backlog"] = _listen_backlog(family, f.st.st_ino)
            elif state == "established" and not ctx.tree.tcp_close:
                rec["peer"] = _peer(sock)
                _dump_connection(f, ctx, sock, rec)
            elif state not in ("close",):
                rec["peer"] = _peer(sock)
                if not ctx.tree.tcp_close:
                    peer = ":".join(map(str, rec["peer"] or ["?"]))
                    raise ctx.refuse(f"fd {f.fd}", "TCP connection",
                                     f"{state} {local[0]}:{local[1]} -> {peer}: only an established "
                                     "connection can be restored; dump with --tcp-close "
                                     "(tcp_close=True) to have it come back reset")
                rec["state"] = "disconnected"
                rec["was"] = state
        else:
            rec["peer"] = _peer(sock)
            rec["state"] = "udp"
    return rec


@dataclass
class _Locked:
    """Dump: the lock holding the tree's TCP connections still while they are read."""

    lock: tcp_repair.Lock | None = None


def _dump_connection(f: OpenFile, ctx: DumpContext, sock: socket.socket, rec: dict[str, Any]) -> None:
    """Lock the connection (until the tree dies, or runs on: then it is unlocked) and save it."""
    what = "established {}:{} -> {}:{}".format(*rec["local"], *(rec["peer"] or ["?", "?"]))
    reset = "or --tcp-close (tcp_close=True) to have it come back reset"
    if not tcp_repair.privileged():
        raise ctx.refuse(f"fd {f.fd}", "TCP connection", f"{what}: restoring a connection exactly "
                         f"needs CAP_NET_ADMIN (TCP_REPAIR); dump as a user who has it, {reset}")
    if rec["peer"] is None:
        raise ctx.refuse(f"fd {f.fd}", "TCP connection", f"{what}: its peer's address is unknown")
    if _peer_inode(rec["family"], f.st.st_ino) not in tree_sockets(ctx.tree) and not ctx.tree.kill:
        raise ctx.refuse(f"fd {f.fd}", "TCP connection",
                         f"{what}: its peer is outside the tree, and an original that runs on after "
                         f"the dump would carry the connection on without the copy; dump with --kill "
                         f"to restore it exactly, {reset}")
    if tcp_repair.has_filter(sock):
        raise ctx.refuse(f"fd {f.fd}", "TCP connection", f"{what}: it has a socket filter "
                         f"(SO_ATTACH_FILTER), which the dump would have to replace; {reset[3:]}")
    rec["options"] += read_options(sock, _BUFFERS)
    if ctx.writer is None:
        return  # only checking: leave the connection alone
    locked = ctx.tree.state(_Locked)
    if locked.lock is None:
        locked.lock = tcp_repair.Lock()
        ctx.tree.on_end.append(locked.lock.end)
    locked.lock.add(sock, f.pid)
    try:
        state, send_queue, recv_queue = tcp_repair.save(sock)
    except OSError as err:
        raise ctx.refuse(f"fd {f.fd}", "TCP connection", f"{what}: cannot read it in repair mode: "
                         f"{err.strerror}") from None
    state["send_blob"] = ctx.add_blob(f"tcp-{f.pid}-{f.fd}-send", send_queue)
    state["recv_blob"] = ctx.add_blob(f"tcp-{f.pid}-{f.fd}-recv", recv_queue)
    rec["tcp"] = state
    rec["state"] = "established"


def _peer_inode(family: int, inode: int) -> int | None:
    """Inode of the socket at the other end of a connection on this host, if any: the line
    of /proc/net/tcp[6] whose addresses are those of `inode`'s line, swapped."""
    path = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    with open(path) as f:
        lines = [line.split() for line in list(f)[1:]]
    ours = next(((fields[1], fields[2]) for fields in lines if int(fields[9]) == inode), None)
    if ours is None:
        return None
    return next((int(fields[9]) for fields in lines if (fields[2], fields[1]) == ours), None)


def _peer(sock: socket.socket) -> list[Any] | None:
    try:
        return list(sock.getpeername()[:2])
    except OSError:
        return None


def _listen_backlog(family: int, inode: int) -> int:
    """Max accept backlog of a listener: /proc/net/tcp[6] reports it as tx_queue."""
    path = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    with open(path) as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[9]) == inode:
                return int(fields[4].split(":")[0], 16) or socket.SOMAXCONN
    return socket.SOMAXCONN


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    if rec["state"] == "disconnected":
        sock = _reset_connection(rec["family"])
    elif rec["state"] == "established":
        sock = _connect_repaired(rec, ctx)
    else:
        sock = socket.socket(rec["family"], rec["type"])
        apply_options(sock, [o for o in rec["options"] if (o[0], o[1]) == _V6ONLY])
        host, port = rec["local"]
        if rec["state"] == "listen" and ctx.rebind_listeners:
            _bind(sock, rec, (host, 0))
            ctx.port_map[port] = sock.getsockname()[1]
        elif port or rec["state"] == "listen":
            _bind(sock, rec, (host, port))
        if rec["state"] == "listen":
            sock.listen(rec["backlog"])
        elif rec["state"] == "udp" and rec.get("peer"):
            sock.connect(tuple(rec["peer"]))
    apply_options(sock, [o for o in rec["options"] if (o[0], o[1]) != _V6ONLY])
    fd = ctx.keep(sock.detach())
    os.set_inheritable(fd, False)
    set_nonblocking(fd, rec["flags"])
    return fd


def _connect_repaired(rec: dict[str, Any], ctx: RestoreContext) -> socket.socket:
    what = "tcp {}:{} -> {}:{}".format(*rec["local"], *rec["peer"])
    state = rec["tcp"]
    try:
        return tcp_repair.create(rec["family"], tuple(rec["local"]), tuple(rec["peer"]), state,
                                 ctx.image.blob_bytes(state["send_blob"]),
                                 ctx.image.blob_bytes(state["recv_blob"]), rec["options"])
    except PermissionError:
        raise RestoreConflict(f"{what}: restoring an established connection needs CAP_NET_ADMIN "
                              "(TCP_REPAIR)") from None
    except OSError as err:
        hint = " (is the original still running?)" if err.errno in (errno.EADDRINUSE,
                                                                    errno.EADDRNOTAVAIL) else ""
        raise RestoreConflict(f"{what}: cannot re-create the connection: {err.strerror}{hint}") from None


def _bind(sock: socket.socket, rec: dict[str, Any], address: tuple[str, int]) -> None:
    # Connections of the dead original may linger in TIME_WAIT on this port; reuse is safe
    # for a listener that is the same endpoint coming back. The option is reset afterwards.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        what = f"{'tcp' if rec['type'] == socket.SOCK_STREAM else 'udp'} {address[0]}:{address[1]}"
        if err.errno == errno.EADDRINUSE:
            raise RestoreConflict(f"{what} is in use on this host (is the original still running?)") from None
        raise RestoreConflict(f"cannot bind {what}: {err.strerror}") from None


def _reset_connection(family: int) -> socket.socket:
    """A TCP socket whose connection has ended: its peer reset it, and the error that left
    is taken, so reads see end-of-file (as after a checkpoint with CRIU's --tcp-close)."""
    loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((loopback, 0))
        listener.listen(1)
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect(listener.getsockname()[:2])
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    server.close()  # linger 0: sends RST
    poller = select.poll()
    poller.register(client, select.POLLERR | select.POLLHUP)
    poller.poll(1000)
    client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # takes the pending ECONNRESET
    return client


INET_SOCKET = FileKind("inet-socket", _claims, _dump, _restore, index=sockets_common.index)
