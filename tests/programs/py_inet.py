"""IPv6 TCP listener (v6-only), UDP sockets bound on IPv4 and IPv6, a connected UDP socket.

With `--connect PORT reset|alive`, also a TCP connection to a peer on 127.0.0.1:PORT,
outside the tree, which after restore is expected to have been reset (`dump --tcp-close`),
or still to work (the dump was refused): the peer's "hi" arrives and "alive" goes back."""
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tcp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
tcp6.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
tcp6.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
udp4.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
udp4.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, 5)
tcp6.bind(("::1", 0))
tcp6.listen(3)
udp4.bind(("127.0.0.1", 0))
udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp6.bind(("::1", 0))
connected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
connected.connect(udp4.getsockname())
external, expect = None, None
if sys.argv[1] == "--connect":
    external = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    expect = sys.argv[3]
addresses = (tcp6.getsockname(), udp4.getsockname(), udp6.getsockname(), connected.getpeername())
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

t.check((tcp6.getsockname(), udp4.getsockname(), udp6.getsockname(), connected.getpeername()) == addresses,
        "addresses changed")
t.check(tcp6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1, "IPV6_V6ONLY lost")
t.check(tcp6.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1, "TCP_NODELAY lost")
t.check(tcp6.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1, "TCP_CORK lost")
t.check(udp4.getsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE) == 1, "SO_DONTROUTE lost")
t.check(udp4.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY) == 5, "SO_PRIORITY lost")
client = socket.create_connection(tcp6.getsockname()[:2])
conn, _ = tcp6.accept()
client.sendall(b"v6")
t.check(conn.recv(2) == b"v6", "IPv6 listener does not accept")
connected.send(b"ping4")
t.check(udp4.recv(10) == b"ping4", "UDP over IPv4 broken")
sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sender.sendto(b"ping6", udp6.getsockname())
t.check(udp6.recv(10) == b"ping6", "UDP over IPv6 broken")
if expect == "reset":  # an ordinary disconnect: hang-up, end-of-file, broken pipe
    poller = select.poll()
    poller.register(external, select.POLLIN)
    t.check(poller.poll(0) == [(external.fileno(), select.POLLIN | select.POLLHUP)], "no hang-up")
    data = external.recv(10)
    t.check(data == b"", f"reset TCP connection returned {data!r}")
    try:
        external.send(b"x")
        t.check(False, "a write to the reset connection worked")
    except BrokenPipeError:
        pass
elif expect == "alive":
    t.check(external.recv(2) == b"hi", "the connection lost the peer's data")
    external.sendall(b"alive")
t.passed()
