"""Unix socketpairs (stream and datagram) with queued data, a listening unix socket, a
listening TCP socket and an established TCP connection to a peer outside the tree."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
stream_a, stream_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
stream_a.sendall(b"queued-for-b")
stream_b.sendall(b"queued-for-a")
dgram_a, dgram_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
for msg in (b"one", b"two", b"three"):
    dgram_a.send(msg)
seq_a, seq_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
seq_b.send(b"packet-1")
seq_b.send(b"packet-2")
unix_path = os.path.join(os.path.dirname(t.path), "listener.sock")
unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix_listener.bind(unix_path)
unix_listener.listen(5)
tcp_listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp_listener.bind(("127.0.0.1", 0))
tcp_listener.listen(7)
with open(os.path.join(os.path.dirname(t.path), "tcp-port"), "w") as f:
    f.write(str(tcp_listener.getsockname()[1]))
external = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
external.sendall(b"hello")
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

t.check(stream_b.recv(100) == b"queued-for-b", "stream queue b lost")
t.check(stream_a.recv(100) == b"queued-for-a", "stream queue a lost")
stream_a.sendall(b"after")
t.check(stream_b.recv(100) == b"after", "stream pair not connected")
t.check([dgram_b.recv(100) for _ in range(3)] == [b"one", b"two", b"three"], "datagram boundaries lost")
t.check(seq_a.recv(100) == b"packet-1" and seq_a.recv(100) == b"packet-2", "seqpacket lost")
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(unix_path)
conn, _ = unix_listener.accept()
client.sendall(b"x")
t.check(conn.recv(1) == b"x", "unix listener does not accept")
tcp_client = socket.create_connection(tcp_listener.getsockname())
tcp_conn, _ = tcp_listener.accept()
tcp_client.sendall(b"y")
t.check(tcp_conn.recv(1) == b"y", "tcp listener does not accept")
try:
    data = external.recv(10)
    t.check(data == b"", f"disconnected TCP socket returned {data!r}")
except ConnectionResetError:
    pass  # an ordinary disconnect
t.passed()
