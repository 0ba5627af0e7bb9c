"""TCP and UDP (and UDP-Lite) sockets over IPv4 and IPv6.

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
Every option that can be read back is carried over (sockets_common.py for the generic ones;
here IP, IPv6, TCP and UDP ones, the congestion control and the multicast groups joined),
and a UDP socket's shutdown state. A corked UDP socket (UDP_CORK) holding data not sent yet is refused: that data cannot
be read back.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import select
import socket
import stat
import struct
from dataclasses import dataclass, field
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext, RestoreTree
from ..errors import RestoreConflict
from ..libc import libc
from ..sockdiag import inet_shutdown
from . import sockets_common, tcp_repair
from .kind import FileKind
from .sockets_common import (BUFFERS, SO_PEEK_OFF, apply_extras, apply_options, borrowed_socket,
                             family_of, read_generic, read_options, set_nonblocking, tree_sockets)

log = logging.getLogger(__name__)

TCP_STATES = {1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait1", 5: "fin-wait2",
              6: "time-wait", 7: "close", 8: "close-wait", 9: "last-ack", 10: "listen", 11: "closing"}
IP_RECVERR, IP_RECVTTL, IP_FREEBIND, IP_MTU_DISCOVER, IP_PKTINFO = 11, 12, 15, 10, 8
IP_RECVORIGDSTADDR, IP_MINTTL, IP_NODEFRAG, IP_CHECKSUM, IP_RECVFRAGSIZE = 20, 21, 22, 23, 25
IP_RECVERR_RFC4884, IP_MULTICAST_ALL, IP_LOCAL_PORT_RANGE, IP_PASSSEC = 26, 49, 51, 18
IPV6_FLOWINFO, IPV6_MTU_DISCOVER, IPV6_RECVERR, IPV6_MULTICAST_ALL, IPV6_DONTFRAG = 11, 23, 25, 29, 62
IPV6_AUTOFLOWLABEL, IPV6_ADDR_PREFERENCES, IPV6_MINHOPCOUNT, IPV6_RECVORIGDSTADDR = 70, 72, 73, 74
IPV6_TRANSPARENT, IPV6_FREEBIND = 75, 78
TCP_THIN_LINEAR_TIMEOUTS, TCP_THIN_DUPACK, TCP_USER_TIMEOUT, TCP_FASTOPEN = 16, 17, 18, 23
TCP_SAVE_SYN, TCP_FASTOPEN_CONNECT, TCP_FASTOPEN_NO_COOKIE, TCP_INQ, TCP_TX_DELAY = 27, 30, 34, 36, 37
UDP_CORK, UDP_NO_CHECK6_TX, UDP_NO_CHECK6_RX, UDP_SEGMENT, UDP_GRO = 1, 101, 102, 103, 104
IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, UDPLITE_RECV_CSCOV = 136, 10, 11
SIOCOUTQ = 0x5411
MCAST_JOIN_GROUP, MCAST_MSFILTER, MCAST_EXCLUDE = 42, 48, 0
_SOCKADDR_STORAGE = 128
_GROUP_FILTER = struct.Struct(f"=I4x{_SOCKADDR_STORAGE}sII{_SOCKADDR_STORAGE}x")  # one source's room
_GROUP_REQ = struct.Struct(f"=I4x{_SOCKADDR_STORAGE}s")
_IPV4_OPTIONS = [(socket.IPPROTO_IP, name) for name in (
    socket.IP_TOS, socket.IP_TTL, socket.IP_RECVOPTS, socket.IP_RECVRETOPTS, IP_PKTINFO,
    IP_MTU_DISCOVER, IP_RECVERR, IP_RECVTTL, socket.IP_RECVTOS, IP_FREEBIND, socket.IP_TRANSPARENT,
    socket.IP_BIND_ADDRESS_NO_PORT,
    IP_NODEFRAG, IP_CHECKSUM, IP_RECVORIGDSTADDR, IP_MINTTL, IP_RECVFRAGSIZE, IP_RECVERR_RFC4884,
    IP_LOCAL_PORT_RANGE, IP_PASSSEC)]
_IPV6_OPTIONS = [(socket.IPPROTO_IPV6, name) for name in (
    socket.IPV6_UNICAST_HOPS,
    socket.IPV6_RECVPKTINFO, socket.IPV6_RECVHOPLIMIT, socket.IPV6_RECVTCLASS, socket.IPV6_TCLASS,
    socket.IPV6_RECVRTHDR, socket.IPV6_RECVHOPOPTS, socket.IPV6_RECVDSTOPTS, socket.IPV6_RECVPATHMTU,
    socket.IPV6_DONTFRAG, IPV6_FLOWINFO, IPV6_MTU_DISCOVER, IPV6_RECVERR,
    IPV6_AUTOFLOWLABEL, IPV6_ADDR_PREFERENCES, IPV6_MINHOPCOUNT, IPV6_RECVORIGDSTADDR,
    IPV6_TRANSPARENT, IPV6_FREEBIND)]
_TCP_OPTIONS = [(socket.IPPROTO_TCP, name) for name in (
    socket.TCP_NODELAY, socket.TCP_CORK, socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT,
    socket.TCP_SYNCNT, socket.TCP_LINGER2, socket.TCP_DEFER_ACCEPT, TCP_USER_TIMEOUT,
    TCP_THIN_LINEAR_TIMEOUTS, TCP_THIN_DUPACK, TCP_FASTOPEN, socket.TCP_NOTSENT_LOWAT, TCP_SAVE_SYN,
    TCP_FASTOPEN_CONNECT, TCP_FASTOPEN_NO_COOKIE, TCP_INQ, TCP_TX_DELAY)]
# (multicast is UDP's alone: a TCP socket reads what an accepted one copied, and takes nothing)
_UDP_OPTIONS = [(socket.IPPROTO_UDP, name) for name in (
    UDP_CORK, UDP_NO_CHECK6_TX, UDP_NO_CHECK6_RX, UDP_SEGMENT, UDP_GRO)] + [
    (socket.IPPROTO_IP, socket.IP_MULTICAST_TTL), (socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP),
    (socket.IPPROTO_IP, IP_MULTICAST_ALL)]
_UDPLITE_OPTIONS = [(IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV), (IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV)]
_UDP6_OPTIONS = [(socket.IPPROTO_IPV6, name) for name in (
    socket.IPV6_MULTICAST_HOPS, socket.IPV6_MULTICAST_LOOP, socket.IPV6_MULTICAST_IF, IPV6_MULTICAST_ALL)]
_OPTIONS = [(socket.SOL_SOCKET, SO_PEEK_OFF)] + _IPV4_OPTIONS
_V6ONLY = (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
_REUSEADDR = (socket.SOL_SOCKET, socket.SO_REUSEADDR)
_REUSEPORT = (socket.SOL_SOCKET, socket.SO_REUSEPORT)
_TCP_CA_NAME_MAX = 16
# sock_diag's shutdown state, as shutdown() takes it
_SHUTDOWN = {1: socket.SHUT_RD, 2: socket.SHUT_WR, 3: socket.SHUT_RDWR}


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    if not stat.S_ISSOCK(f.st.st_mode):
        return False
    family, stype, proto = family_of(f, ctx)
    return family in (socket.AF_INET, socket.AF_INET6) and (
        (stype, proto) in ((socket.SOCK_STREAM, socket.IPPROTO_TCP), (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
                           (socket.SOCK_DGRAM, IPPROTO_UDPLITE)))


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    family, stype, proto = family_of(f, ctx)
    with borrowed_socket(f, ctx) as sock:
        options, extras = read_generic(sock, f, ctx)
        v6 = family == socket.AF_INET6
        options += read_options(sock, _OPTIONS + (_IPV6_OPTIONS + [_V6ONLY] if v6 else []) + (
            _TCP_OPTIONS if stype == socket.SOCK_STREAM else _UDP_OPTIONS + (_UDP6_OPTIONS if v6 else [])
            + (_UDPLITE_OPTIONS if proto == IPPROTO_UDPLITE else [])))
        if stype == socket.SOCK_STREAM:
            extras["congestion"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION,
                                                   _TCP_CA_NAME_MAX).split(b"\0", 1)[0].decode()
        local = sock.getsockname()
        rec: dict[str, Any] = {"family": family, "type": stype, "flags": f.flags,
                               "local": list(local[:2]), "options": options}
        if extras:
            rec["sockopts"] = extras
        if proto == IPPROTO_UDPLITE:
            rec["protocol"] = proto
        if stype == socket.SOCK_DGRAM:
            groups = _memberships(sock, family, f, ctx)
            if groups:
                rec.setdefault("sockopts", {})["multicast"] = groups
        shutdown = inet_shutdown(family, proto).get(f.st.st_ino, 0)
        if shutdown:
            rec["shutdown"] = shutdown
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
            corked = any(o[1:] == [UDP_CORK, 1] and o[0] in (socket.IPPROTO_UDP, IPPROTO_UDPLITE)
                         for o in options)
            if corked and _ioctl_int(sock, SIOCOUTQ):
                raise ctx.refuse(f"fd {f.fd}", "UDP socket", "corked (UDP_CORK) with data not sent "
                                 "yet, which cannot be read back")
    return rec


@dataclass
class _Locked:
    """Dump: the lock holding the tree's TCP connections still while they are read."""

    lock: tcp_repair.Lock | None = None


def _memberships(sock: socket.socket, family: int, f: OpenFile, ctx: DumpContext) -> list[list[str]]:
    """The multicast groups the socket joined, as [device, group]. No option lists them, but
    the host's groups are listed per device (/proc/net/igmp, igmp6), and MCAST_MSFILTER
    answers for one of them only on a socket that joined it. A source filter is refused."""
    joined = []
    for group_family in (socket.AF_INET, socket.AF_INET6) if family == socket.AF_INET6 else (family,):
        for device, index, group in _host_groups(group_family):
            answer = _msfilter(sock, group_family, index, group)
            if answer is None:
                continue
            if answer != (MCAST_EXCLUDE, 0):
                raise ctx.refuse(f"fd {f.fd}", "UDP socket", f"multicast group {group} on {device} "
                                 "with a source filter (not supported)")
            joined.append([device, group])
    return joined


def _host_groups(family: int) -> list[tuple[str, int, str]]:
    """(device, its index, group) for every multicast group some socket of the host joined."""
    groups = []
    if family == socket.AF_INET:
        with open("/proc/net/igmp") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if line[0].isdigit():
                    index, device = int(fields[0]), fields[1]
                elif fields:  # the group as the kernel holds it (network order), printed as a number
                    groups.append((device, index, socket.inet_ntoa(struct.pack("=I", int(fields[0], 16)))))
    else:
        with open("/proc/net/igmp6") as lines:
            for line in lines:
                fields = line.split()
                groups.append((fields[1], int(fields[0]),
                               socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[2]))))
    return groups


def _group_address(family: int, group: str) -> bytes:
    """struct sockaddr_storage holding a group address."""
    if family == socket.AF_INET:
        return struct.pack("=H2x4s", family, socket.inet_aton(group)).ljust(_SOCKADDR_STORAGE, b"\0")
    address = struct.pack("=H2xI16sI", family, 0, socket.inet_pton(family, group), 0)
    return address.ljust(_SOCKADDR_STORAGE, b"\0")


def _msfilter(sock: socket.socket, family: int, index: int, group: str) -> tuple[int, int] | None:
    """(filter mode, number of sources) of the socket's membership of `group` on the device
    of `index`, None if it has not joined it (struct group_filter in and out: called directly)."""
    level = socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6
    request = ctypes.create_string_buffer(_GROUP_FILTER.pack(index, _group_address(family, group), 0, 0),
                                          _GROUP_FILTER.size)
    size = ctypes.c_uint(_GROUP_FILTER.size)
    if libc.getsockopt(sock.fileno(), level, MCAST_MSFILTER, request, ctypes.byref(size)) != 0:
        return None  # EADDRNOTAVAIL: not a member
    _, _, mode, sources = _GROUP_FILTER.unpack(request.raw)
    return mode, sources


def _join(sock: socket.socket, groups: list[list[str]], what: str) -> None:
    for device, group in groups:
        family = socket.AF_INET6 if ":" in group else socket.AF_INET
        level = socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6
        try:
            request = _GROUP_REQ.pack(socket.if_nametoindex(device), _group_address(family, group))
            sock.setsockopt(level, MCAST_JOIN_GROUP, request)
        except OSError as err:
            raise RestoreConflict(f"{what}: cannot join multicast group {group} on {device}: "
                                  f"{err.strerror}") from None


def _ioctl_int(sock: socket.socket, request: int) -> int:
    return struct.unpack("=i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]


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
    if "filter" in rec.get("sockopts", {}):  # (read before any lock of ours)
        raise ctx.refuse(f"fd {f.fd}", "TCP connection", f"{what}: it has a socket filter "
                         f"(SO_ATTACH_FILTER), which the dump would have to replace; {reset[3:]}")
    if ctx.writer is None:
        return  # only checking: leave the connection alone
    locked = ctx.tree.state(_Locked)
    if locked.lock is None:
        locked.lock = tcp_repair.Lock()
        ctx.tree.on_end.append(locked.lock.end)
    try:
        state, send_queue, recv_queue = locked.lock.save(sock, f.pid)
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
    what = _what(rec)
    if rec["state"] == "disconnected":
        sock = _reset_connection(rec["family"])
        apply_extras(sock, rec.get("sockopts", {}), rec["options"], what)
    elif rec["state"] == "established":
        sock = _connect_repaired(rec, ctx)
    else:
        sock = _bound(rec, ctx, what)
        if rec["state"] == "udp" and rec.get("peer"):
            sock.connect(tuple(rec["peer"]))
    if rec["state"] == "disconnected":  # (not a dead connection's buffers: they may need a privilege)
        apply_options(sock, [o for o in rec["options"] if (o[0], o[1]) not in (_V6ONLY, *BUFFERS)], what)
    else:  # SO_REUSEADDR and SO_REUSEPORT again, after the bind
        apply_options(sock, [o for o in rec["options"] if (o[0], o[1]) in (_REUSEADDR, _REUSEPORT)], what)
    if rec.get("shutdown") and rec["state"] != "disconnected":
        try:
            sock.shutdown(_SHUTDOWN[rec["shutdown"]])
        except OSError as err:
            if err.errno != errno.ENOTCONN:  # (an unconnected socket takes the state all the same)
                raise RestoreConflict(f"{what}: cannot shut it down again: {err.strerror}") from None
    fd = ctx.keep(sock.detach())
    os.set_inheritable(fd, False)
    set_nonblocking(fd, rec["flags"])
    return fd


def _what(rec: dict[str, Any]) -> str:
    kind = "tcp" if rec["type"] == socket.SOCK_STREAM else "udplite" if "protocol" in rec else "udp"
    return "{} {}:{}".format(kind, *rec["local"])


def _bound(rec: dict[str, Any], ctx: RestoreContext, what: str) -> socket.socket:
    """A new socket with its options, bound (and listening) as recorded. Sockets of the
    image that share an address with SO_REUSEPORT are all bound and listen together, each
    with it on, before any turns it off again: one that turned it off after its bind (as
    the kernel allows) would otherwise keep the next from binding."""
    host, port = rec["local"]
    sharing = [] if not port or ctx.rebind_listeners else [
        r for r in ctx.image.manifest["files"] if r["kind"] == INET_SOCKET.name
        and r["state"] in ("listen", "udp", "close") and r["id"] != rec["id"]
        and (r["family"], r["type"], r["local"]) == (rec["family"], rec["type"], rec["local"])]
    if not sharing or not any([*_REUSEPORT, 1] in r["options"] for r in [rec, *sharing]):
        return _make_bound(rec, ctx, what, reuseport=False)
    groups = ctx.state(_ReusePortGroups).bound
    address = (rec["family"], rec["type"], host, port)
    if address not in groups:
        groups[address] = {r["id"]: _make_bound(r, ctx, _what(r), reuseport=True) for r in [rec, *sharing]}
    return groups[address][rec["id"]]


@dataclass
class _ReusePortGroups:
    """Restore: the sockets of each address shared with SO_REUSEPORT, bound together (_bound)."""

    bound: dict[tuple[Any, ...], dict[str, socket.socket]] = field(default_factory=dict)


def _make_bound(rec: dict[str, Any], ctx: RestoreContext, what: str, reuseport: bool) -> socket.socket:
    sock = socket.socket(rec["family"], rec["type"], rec.get("protocol", 0))
    # all before the bind (V6ONLY, FREEBIND, the device... decide what it may take)
    _set_options(sock, rec, what)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    host, port = rec["local"]
    if rec["state"] == "listen" and ctx.rebind_listeners:
        _bind(sock, rec, (host, 0))
        ctx.port_map[port] = sock.getsockname()[1]
    elif port or rec["state"] == "listen":
        _bind(sock, rec, (host, port))
    if rec["state"] == "listen":
        sock.listen(rec["backlog"])
    return sock


def _set_options(sock: socket.socket, rec: dict[str, Any], what: str) -> None:
    """Options, then the others ("sockopts"), on a new socket not yet bound."""
    extras = rec.get("sockopts", {})
    if "congestion" in extras:
        current = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, _TCP_CA_NAME_MAX)
        if current.split(b"\0", 1)[0].decode() != extras["congestion"]:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, extras["congestion"].encode())
            except OSError as err:
                raise RestoreConflict(f"{what}: cannot use TCP congestion control "
                                      f"{extras['congestion']!r}: {err.strerror}") from None
    apply_options(sock, rec["options"], what)
    apply_extras(sock, extras, rec["options"], what)
    _join(sock, extras.get("multicast", []), what)


def _connection(rec: dict[str, Any]) -> str:
    return "tcp {}:{} -> {}:{}".format(*rec["local"], *rec["peer"])


def _connect_repaired(rec: dict[str, Any], ctx: RestoreContext) -> socket.socket:
    what = _connection(rec)
    state = rec["tcp"]
    try:
        sock = tcp_repair.create(rec["family"], tuple(rec["local"]), tuple(rec["peer"]), state,
                                 ctx.image.blob_bytes(state["recv_blob"]),
                                 ctx.image.blobs[state["send_blob"]]["size"],
                                 lambda sock: _set_options(sock, rec, what))
    except PermissionError:
        raise RestoreConflict(f"{what}: restoring an established connection needs CAP_NET_ADMIN "
                              "(TCP_REPAIR)") from None
    except OSError as err:
        hint = " (is the original still running?)" if err.errno in (errno.EADDRINUSE,
                                                                    errno.EADDRNOTAVAIL) else ""
        raise RestoreConflict(f"{what}: cannot re-create the connection: {err.strerror}{hint}") from None
    ctx.state(_Remade).connections.append((sock.fileno(), rec))  # (_restore keeps the fd)
    return sock


@dataclass
class _Remade:
    """Restore: the connections re-created so far, in repair mode until every connection of
    the tree exists (_unlock). Their fds are ours until the restore ends."""

    connections: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def _unlock(tree: RestoreTree) -> None:
    """Every process and connection of the tree exists, none runs yet: each connection
    gets its send queue and leaves repair mode (tcp_repair.unlock)."""
    for fd, rec in tree.state(_Remade).connections:
        with socket.socket(fileno=os.dup(fd)) as sock:
            try:
                tcp_repair.unlock(sock, rec["tcp"], tree.image.blob_bytes(rec["tcp"]["send_blob"]),
                                  rec["options"])
            except OSError as err:
                raise RestoreConflict(f"{_connection(rec)}: cannot let the connection run again: "
                                      f"{err.strerror}") from None


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


INET_SOCKET = FileKind("inet-socket", _claims, _dump, _restore, index=sockets_common.index,
                       finish=_unlock)
