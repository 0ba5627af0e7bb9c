"""Unix datagram sockets bound to a path and to an abstract name, one connected to the other,
an unconnected bound one that receives with recvfrom (also from sockets closed since), and
one whose socket file was removed, with datagrams queued in every direction; their
addresses, peers, boundaries, sender addresses, credentials (SO_PASSCRED), buffer sizes,
non-blocking mode and socket file modes and owners must all survive."""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
here = os.path.dirname(t.path)
path_a, path_c = os.path.join(here, "a.sock"), os.path.join(here, "c.sock")
name_b = f"\0ckpt-dgram-{os.getpid()}".encode()

a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
a.bind(path_a)
os.chmod(path_a, 0o640)
owner_a = (4321, 8765) if os.geteuid() == 0 else (os.getuid(), os.getgid())
os.chown(path_a, *owner_a)
b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
b.bind(name_b)
b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 123456)
c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
c.bind(path_c)
os.chmod(path_c, 0o604)
c.setblocking(False)
c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
sizes = {s: (s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
         for s in (a, b, c)}
anonymous = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

# b's queue: one from c and one from nobody before a connects, then a's after.
c.sendto(b"c-to-b", name_b)
anonymous.sendto(b"nobody-to-b", name_b)
a.connect(name_b)
for i in range(5):
    a.send(b"a-to-b-%d" % i)
# a's queue: from b, by name.  c's queue: from a, from b and from nobody.
b.sendto(b"b-to-a", path_a)
a.sendto(b"a-to-c", path_c)
b.sendto(b"", path_c)
anonymous.sendto(b"nobody-to-c", path_c)
anonymous.close()
# ... and from two sockets closed since, by an abstract name and by a path now removed.
name_gone, path_gone = f"\0ckpt-gone-{os.getpid()}".encode(), os.path.join(here, "gone.sock")
for address in (name_gone, path_gone):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(address)
        gone.sendto(b"from a closed socket", path_c)
os.unlink(path_gone)
# d's file is removed once e has connected to it: d keeps its name, e its connection.
path_d = os.path.join(here, "d.sock")
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
d.bind(path_d)
e = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
e.connect(path_d)
e.send(b"e-to-d")
os.unlink(path_d)
sent = os.pipe()
child = os.fork()
if child == 0:  # a sender whose credentials b sees; it lives on, in the tree
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"from-child", name_b)
    os.write(sent[1], b"x")
    while True:
        time.sleep(1)
os.read(sent[0], 1)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)


def recv_from(sock):
    data, anc, _, address = sock.recvmsg(1000, socket.CMSG_SPACE(12), socket.MSG_DONTWAIT)
    creds = next((struct.unpack("=iII", payload) for level, kind, payload in anc
                  if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
    return data, address or None, creds


t.check(a.getsockname() == path_a and b.getsockname() == name_b and c.getsockname() == path_c,
        "bound addresses lost")
t.check(a.getpeername() == name_b, f"a is connected to {a.getpeername()!r}")
for sock, name in ((b, "b"), (c, "c")):
    try:
        t.check(False, f"{name} is connected to {sock.getpeername()!r}")
    except OSError:
        pass
t.check((os.stat(path_a).st_uid, os.stat(path_a).st_gid) == owner_a, "a's socket file changed owner")
for path, mode in ((path_a, 0o640), (path_c, 0o604)):
    got = os.stat(path).st_mode & 0o7777
    t.check(got == mode, f"{path} has mode {oct(got)}, not {oct(mode)}")
t.check(all((s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
             s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) == sizes[s] for s in sizes), "buffer sizes lost")
t.check(b.getsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED) == 1, "SO_PASSCRED lost")
t.check(not c.getblocking() and a.getblocking() and b.getblocking(), "blocking modes changed")

me = (os.getpid(), os.getuid(), os.getgid())
expected_b = [(b"c-to-b", path_c, me), (b"nobody-to-b", None, me)] + \
    [(b"a-to-b-%d" % i, path_a, me) for i in range(5)] + [(b"from-child", None, (child, *me[1:]))]
got_b = [recv_from(b) for _ in expected_b]
t.check(got_b == expected_b, f"b's queue came back as {got_b}")
t.check(recv_from(a)[:2] == (b"b-to-a", name_b), "a's queue lost")
got_c = [recv_from(c)[:2] for _ in range(5)]
t.check(got_c == [(b"a-to-c", path_a), (b"", name_b), (b"nobody-to-c", None), (b"from a closed socket", name_gone),
                  (b"from a closed socket", path_gone)], f"c's queue came back as {got_c}")
t.check(not os.path.exists(path_gone), "a closed sender's file is back")
t.check(d.getsockname() == path_d and not os.path.exists(path_d), "d's removed file is back")
t.check(e.getpeername() == path_d and recv_from(d)[:2] == (b"e-to-d", None), "d's queue lost")
e.send(b"more")
t.check(d.recv(100) == b"more", "e's connection to d lost")
for sock in (a, b, d):
    sock.setblocking(False)
    try:
        t.check(False, f"extra datagram {sock.recv(100)!r}")
    except BlockingIOError:
        pass
# Still talking: a to b by connection, b to a and c by name, c replies to a sender address.
a.send(b"again")
t.check(recv_from(b)[:2] == (b"again", path_a), "a's connection to b lost")
b.sendto(b"to-a", path_a)  # (only its peer may: a is connected)
t.check(a.recv(100) == b"to-a", "a no longer reachable by path")
b.sendto(b"to-c", path_c)
while True:
    try:
        data, sender = c.recvfrom(100)
        break
    except BlockingIOError:
        time.sleep(0.01)
c.sendto(b"reply", sender)
t.check(b.recv(100) == b"reply", "reply to a sender address lost")
os.kill(child, 9)
os.waitpid(child, 0)
t.passed()
