"""An established TCP connection, saved and re-created exactly with the kernel's TCP_REPAIR.

In repair mode a socket can be read and written below TCP: its sequence numbers, both
queues (the send queue holds what was sent but not yet acknowledged, then what was not
sent yet), its negotiated options and windows. A new socket in repair mode takes all that
back and "connects" without a handshake, so the peer never notices the move.

Between the dump and the death of the original nothing must change the connection's
state behind the image's back. The dumped socket gets a socket filter that drops every
incoming segment (the peer's data is then not acknowledged, so it retransmits it to the
copy later), and just before the tree is killed it enters repair mode, in which a dying
socket closes silently (no FIN, no RST). If the tree runs on after the dump, the filter
comes off again (`Lock`).
A re-created connection stays in repair mode, sending nothing and locked the same way, until
every connection of the tree exists (`unlock`): a peer not re-made yet would answer anything
it sent with a reset.
Needs CAP_NET_ADMIN (in the network namespace's user namespace), at dump and at restore.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from .sockets_common import (SO_BUF_LOCK, SO_DETACH_FILTER, SO_RCVBUFFORCE, SO_SNDBUFFORCE,
                             apply_options, attach_filter)

log = logging.getLogger(__name__)

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, TCP_REPAIR_OPTIONS = 19, 20, 21, 22
TCP_TIMESTAMP, TCP_REPAIR_WINDOW = 24, 29
TCP_REPAIR_ON, TCP_REPAIR_OFF, TCP_REPAIR_OFF_NO_WP = 1, 0, -1
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCPOPT_MSS, TCPOPT_WINDOW, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP = 2, 3, 4, 8
TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B
CAP_NET_ADMIN = 12
_MAX_USER_MSS = 32767  # the largest TCP_MAXSEG the kernel accepts (MAX_TCP_WINDOW)
_WINDOW = struct.Struct("=5I")  # struct tcp_repair_window
_AFTER = {(socket.SOL_SOCKET, socket.SO_REUSEADDR), (socket.SOL_SOCKET, socket.SO_SNDBUF),
          (socket.SOL_SOCKET, socket.SO_RCVBUF), (socket.SOL_SOCKET, SO_BUF_LOCK)}
_DROP_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0)  # classic BPF: "ret #0", accept no byte


def privileged() -> bool:
    """Whether we hold CAP_NET_ADMIN, without which the kernel refuses TCP_REPAIR."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return False


# The keeper: a process of its own holding a copy of each locked socket, so that the lock
# comes off even if we die mid-dump (SIGKILL). Told "R" (the tree runs on), or seeing us gone
# while a socket's owner lives, it takes the filter off and opens the send window that `save`
# held shut ("W" told it its size); told "K" (the tree is about to be killed) it puts the
# sockets in repair mode, so that they close silently. Self-contained, so that it starts fast.
_KEEPER = r"""
import select, signal, socket, struct
signal.signal(signal.SIGINT, signal.SIG_IGN)
control = socket.socket(fileno=0)
held = []
def reopen(sock, send_window):  # leaving repair mode with a window probe: the peer's answer
    reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)  # sends what waited
    sock.setsockopt(socket.IPPROTO_TCP, %(repair)d, %(on)d)
    window = list(struct.unpack("=5I", sock.getsockopt(socket.IPPROTO_TCP, %(window)d, 20)))
    window[1] = send_window
    sock.setsockopt(socket.IPPROTO_TCP, %(window)d, struct.pack("=5I", *window))
    sock.setsockopt(socket.IPPROTO_TCP, %(repair)d, %(off)d)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
while True:
    message, fds, _, _ = socket.recv_fds(control, 5, 2)
    if message == b"L":
        held.append([socket.socket(fileno=fds[0]), fds[1], None])
        continue
    if message[:1] == b"W":
        held[-1][2] = struct.unpack("=I", message[1:])[0]
        continue
    for sock, owner, send_window in held:
        try:
            if message == b"K":
                sock.setsockopt(socket.IPPROTO_TCP, %(repair)d, %(on)d)
            elif message == b"R" or not select.select([owner], [], [], 0)[0]:
                sock.setsockopt(socket.SOL_SOCKET, %(detach)d, 0)
                if send_window is not None:
                    reopen(sock, send_window)
        except OSError:
            pass
        sock.close()
    if message:
        control.send(b"k")
    break
""" % {"repair": TCP_REPAIR, "on": TCP_REPAIR_ON, "off": TCP_REPAIR_OFF,
       "window": TCP_REPAIR_WINDOW, "detach": SO_DETACH_FILTER}


class Lock:
    """The connections locked for one dump: each drops every segment that arrives (before
    TCP sees it, so nothing is acknowledged) and sends no new data until the tree runs on or
    is killed."""

    def __init__(self) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.keeper = subprocess.Popen([sys.executable, "-c", _KEEPER], stdin=theirs.fileno(),
                                           start_new_session=True)

    def save(self, sock: socket.socket, owner: int) -> tuple[dict[str, Any], bytes, bytes]:
        """Lock `sock`, a socket of process `owner` (the keeper gets it first), and `save` it."""
        pidfd = os.pidfd_open(owner)
        try:
            socket.send_fds(self.control, [b"L"], [sock.fileno(), pidfd])
        finally:
            os.close(pidfd)
        attach_filter(sock, _DROP_ALL)
        state, send_queue, recv_queue = save(sock)
        self.control.send(b"W" + struct.pack("=I", state["window"][1]))
        return state, send_queue, recv_queue

    def end(self, killed: bool) -> None:
        """The tree is about to be killed (its sockets then close silently), or to run on
        (they take segments and send again; the peer resends what was dropped)."""
        try:
            self.control.send(b"K" if killed else b"R")
            if not self.control.recv(1):
                log.error("the keeper of the locked TCP connections died: they stay locked")
        finally:
            self.control.close()
            self.keeper.wait()


def _ioctl_int(sock: socket.socket, request: int) -> int:
    return struct.unpack("=i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]


def _peek(sock: socket.socket, queue: int, size: int) -> bytes:
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
    data = sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT) if size else b""
    if len(data) != size:
        raise OSError(errno.EIO, f"read {len(data)} of the {size} queued bytes")
    return data


def _queue_seq(sock: socket.socket, queue: int) -> int:
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
    return sock.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF


def save(sock: socket.socket) -> tuple[dict[str, Any], bytes, bytes]:
    """The connection's state (a locked socket), its send queue and its receive queue, read
    in repair mode. Then its send window is held shut: the kernel would otherwise send new
    data on its own (a timer, pacing), which a peer not locked yet would take while this
    image says it was not sent, and the two images would disagree. In flight it may still
    resend what was sent, which the image has. It leaves repair mode as it was (without a
    window probe, which the lock would make pointless), so that a dumper that dies cannot
    leave it there."""
    reuse = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)  # repair mode changes it
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    try:
        state, send_queue, recv_queue = _read(sock)
        shut = state["window"][:]
        shut[1] = 0  # snd_wnd: the peer's window as this end knows it
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, _WINDOW.pack(*shut))
        return state, send_queue, recv_queue
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)


def _read(sock: socket.socket) -> tuple[dict[str, Any], bytes, bytes]:
    send_len, unsent, recv_len = (_ioctl_int(sock, SIOCOUTQ), _ioctl_int(sock, SIOCOUTQNSD),
                                  _ioctl_int(sock, SIOCINQ))
    send_queue = _peek(sock, TCP_SEND_QUEUE, send_len)
    recv_queue = _peek(sock, TCP_RECV_QUEUE, recv_len)
    send_seq, recv_seq = _queue_seq(sock, TCP_SEND_QUEUE), _queue_seq(sock, TCP_RECV_QUEUE)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, 0)
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    options, wscale = info[5], info[6]
    state = {
        "send_seq": send_seq, "recv_seq": recv_seq, "unsent": unsent,
        "mss": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG),
        "sack": bool(options & TCPI_OPT_SACK), "timestamps": bool(options & TCPI_OPT_TIMESTAMPS),
        "wscale": [wscale & 0xF, wscale >> 4] if options & TCPI_OPT_WSCALE else None,
        "timestamp": sock.getsockopt(socket.IPPROTO_TCP, TCP_TIMESTAMP) & 0xFFFFFFFF,
        "window": list(_WINDOW.unpack(sock.getsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW,
                                                      _WINDOW.size))),
    }
    return state, send_queue, recv_queue


def _set_u32(sock: socket.socket, option: int, value: int) -> None:
    """A sequence number or timestamp: 32 bits that wrap (too wide for an int argument)."""
    sock.setsockopt(socket.IPPROTO_TCP, option, struct.pack("=I", value & 0xFFFFFFFF))


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[sock.send(view):]


def create(family: int, local: tuple[str, int], peer: tuple[str, int], state: dict[str, Any],
           recv_queue: bytes, send_bytes: int, prepare: Callable[[socket.socket], None]) -> socket.socket:
    """A new socket connected to `peer` from `local` exactly as the saved one was: same
    sequence numbers, received data and options (`prepare` sets its options, before anything
    else), with room for `send_bytes` to send. It stays in repair mode, sending nothing and
    dropping every segment that arrives, until `unlock` gives it its send queue and window.
    Raises OSError (EPERM without CAP_NET_ADMIN, EADDRINUSE or EADDRNOTAVAIL where the
    address cannot be taken)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)  # a queue that does not fit fails, rather than waits forever
    try:
        prepare(sock)
        attach_filter(sock, _DROP_ALL)  # (a TCP connection with a filter of its own is refused)
        # room for the queues while they are written (the kernel's accounting of the new
        # buffers differs from the original's); the recorded sizes are set again by unlock
        room = 2 * (send_bytes + len(recv_queue)) + (1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, room)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, room)
        # the segment size: the connect below derives it from this limit (the kernel takes at
        # most 32767), rather than from the 536-byte default, which repair mode then keeps
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, min(state["mss"], _MAX_USER_MSS))
        # repair mode lets it bind beside a listener or a dying original on the same port
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
        sock.bind(local)
        # the sequence numbers where each queue starts; the data written moves them on
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        _set_u32(sock, TCP_QUEUE_SEQ, state["send_seq"] - send_bytes)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        _set_u32(sock, TCP_QUEUE_SEQ, state["recv_seq"] - len(recv_queue))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, 0)
        _set_u32(sock, TCP_TIMESTAMP, state["timestamp"])
        sock.connect(peer)  # in repair mode: established at once, nothing sent
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_OPTIONS, _options(state))
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        _send_all(sock, recv_queue)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, 0)
        return sock
    except BaseException:
        sock.close()  # in repair mode: silently
        raise


def unlock(sock: socket.socket, state: dict[str, Any], send_queue: bytes,
           options: list[list[int]]) -> None:
    """Let a connection made by `create` run, once its peer exists (a peer not re-made yet
    answers anything sent to it with a reset). What the original had sent is queued as sent
    (its retransmission timer starts only now, not backed off by a missing peer), then the
    windows; it leaves repair mode with a window probe, whose answer tells it at once where
    the peer stands, and queues what the original had not sent yet, as the program would.
    Last, `options` set what repair mode held back (SO_REUSEADDR, the buffer sizes)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
    sent = len(send_queue) - state["unsent"]
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
    _send_all(sock, send_queue[:sent])  # in repair mode: counted as sent, not acknowledged
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, 0)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_WINDOW, _WINDOW.pack(*state["window"]))
    sock.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF)  # (sends the probe)
    _send_all(sock, send_queue[sent:])
    apply_options(sock, [o for o in options if (o[0], o[1]) in _AFTER])


def _options(state: dict[str, Any]) -> bytes:
    """struct tcp_repair_opt entries for what the handshake had negotiated."""
    opts = [(TCPOPT_MSS, state["mss"])]
    if state["wscale"] is not None:
        opts.append((TCPOPT_WINDOW, state["wscale"][0] | state["wscale"][1] << 16))
    if state["sack"]:
        opts.append((TCPOPT_SACK_PERM, 0))
    if state["timestamps"]:
        opts.append((TCPOPT_TIMESTAMP, 0))
    return b"".join(struct.pack("=II", code, value) for code, value in opts)
