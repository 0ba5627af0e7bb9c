"""TCP and UDP sockets over IPv4 and IPv6.

  - A listening TCP socket comes back listening on the same address and port with the same
    backlog, so new clients can connect. Connections waiting in its accept queue are dropped.
  - A connected TCP socket (established, connecting or closing) is refused, unless the caller
    asked for them to be reset (dump(tcp_close=True), `--tcp-close`): then it comes back
    *closed*: a TCP socket whose connection has ended, so the program sees an ordinary
    disconnect (poll reports POLLHUP, reads return end-of-file, writes fail with EPIPE) and
    its clients reconnect. This is what lets ZeroMQ in a restored Jupyter kernel drop stale connections
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
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from .kind import FileKind
from .sockets_common import apply_options, borrowed_socket, family_of, read_options, set_nonblocking

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
            elif state not in ("close",):
                rec["peer"] = _peer(sock)
                if not ctx.tree.tcp_close:
                    peer = ":".join(map(str, rec["peer"] or ["?"]))
                    raise ctx.refuse(f"fd {f.fd}", "TCP connection",
                                     f"{state} {local[0]}:{local[1]} -> {peer}: a connection cannot be "
                                     "restored; dump with --tcp-close (tcp_close=True) to have it come "
                                     "back reset")
                rec["state"] = "disconnected"
                rec["was"] = state
        else:
            rec["peer"] = _peer(sock)
            rec["state"] = "udp"
    return rec


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


INET_SOCKET = FileKind("inet-socket", _claims, _dump, _restore)
