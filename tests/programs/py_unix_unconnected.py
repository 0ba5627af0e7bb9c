"""Unix sockets that were created and never bound nor connected (stream, datagram and
seqpacket), with options set: each must come back as such a socket, usable afterwards.
Also a socketpair whose reader peeks with SO_PEEK_OFF: the offset must survive (the
checkpoint peeks at the queue too); and a seqpacket pair shut down for reading with
messages queued, one of them empty (reading it past its end returns 0 bytes forever)."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
here = os.path.dirname(t.path)
kinds = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM, "seqpacket": socket.SOCK_SEQPACKET}
fresh = {name: socket.socket(socket.AF_UNIX, kind) for name, kind in kinds.items()}
fresh["dgram"].setblocking(False)
fresh["stream"].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
sndbuf = fresh["stream"].getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
SO_PEEK_OFF = 42
peeker, feeder = socket.socketpair()
feeder.sendall(b"abcdef")
peeker.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
t.check(peeker.recv(2, socket.MSG_PEEK) == b"ab", "peek")
shut, talker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
talker.send(b"one")
talker.send(b"")
talker.send(b"three")
shut.shutdown(socket.SHUT_RD)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

for name, kind in kinds.items():
    sock = fresh[name]
    t.check(sock.family == socket.AF_UNIX and sock.type == kind, f"{name}: type changed")
    t.check(sock.getsockname() in ("", b""), f"{name}: bound to {sock.getsockname()!r}")
    try:
        peer = sock.getpeername()
        t.check(False, f"{name}: connected to {peer!r}")
    except OSError:
        pass
t.check(not fresh["dgram"].getblocking(), "dgram: no longer non-blocking")
t.check(fresh["stream"].getblocking(), "stream: became non-blocking")
t.check(fresh["stream"].getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == sndbuf, "stream: SO_SNDBUF lost")
t.check(peeker.getsockopt(socket.SOL_SOCKET, SO_PEEK_OFF) == 2, "the peek offset moved")
t.check(peeker.recv(2, socket.MSG_PEEK) == b"cd", "peeking does not go on where it was")
t.check(peeker.recv(100) == b"abcdef", "the peeked bytes are lost")
t.check([shut.recv(100) for _ in range(3)] == [b"one", b"", b"three"], "the shut-down pair's queue")
talker.setblocking(False)
try:
    talker.send(b"late")
    t.check(False, "a pair shut down for reading accepts more")
except BrokenPipeError:
    pass
# Still usable: each can be bound and used for its kind.
for name, kind in kinds.items():
    path = os.path.join(here, f"late-{name}.sock")
    fresh[name].bind(path)
    if kind == socket.SOCK_DGRAM:
        with socket.socket(socket.AF_UNIX, kind) as client:
            client.sendto(b"late", path)
        t.check(fresh[name].recv(10) == b"late", f"{name}: cannot receive once bound")
    else:
        fresh[name].listen(1)
        with socket.socket(socket.AF_UNIX, kind) as client:
            client.connect(path)
            conn, _ = fresh[name].accept()
            client.send(b"late")
            t.check(conn.recv(10) == b"late", f"{name}: cannot accept once bound")
            conn.close()
t.passed()
