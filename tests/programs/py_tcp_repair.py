"""Established TCP connections with data queued in both directions, restored exactly.

`pair FAMILY [fork]`: both ends in this process (a listener, a client and the accepted end,
over loopback), or with `fork` the client end in a child. Each end has unread data from the
other, and the server has sent a large buffer of which part waits in the client's receive
queue and the rest, not sent yet, in the server's send queue. After restore every byte
arrives once and in order, the connection carries more, and addresses and options are the
same.

`outside PORT FAMILY`: the other end is the test's, outside the tree. It sent HELLO (unread
here); this program sent UNREAD and as much of a large buffer as the test's small receive
window takes. After restore it reads HELLO, sends AFTER, and reads the test's REPLY."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

HELLO, UNREAD, AFTER, REPLY = b"hello from the peer", b"unread by the peer", b"after restore", b"reply"


def pattern(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def fill(sock: socket.socket, data: bytes) -> int:
    """Send what the connection takes without blocking; how many bytes went."""
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:sent + 65536])
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return sent


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


t = ckpt_test.Protocol()
mode, args = sys.argv[1], sys.argv[2:-1]
BIG = pattern(16 << 20)
if mode == "pair":
    family = socket.AF_INET6 if args[0] == "6" else socket.AF_INET
    loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((loopback, 0))
    listener.listen(1)
    client = socket.socket(family, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(listener.getsockname()[:2])
    server, _ = listener.accept()
    client.sendall(b"c2s unread")
    server.sendall(b"s2c unread")
    sent = fill(server, BIG)
    t.check(0 < sent < len(BIG), f"the large buffer went {sent} bytes")
    names = (client.getsockname(), client.getpeername(), server.getsockname(), server.getpeername())
    # the segment sizes (the kernel picks them; a restored one may take up to 32767, less options)
    segment_sizes = [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) for s in (client, server)]

    def client_side(then=lambda: None) -> None:
        """The client's checks (in the child with `fork`: its exit status says how they went);
        `then` runs after it has sent "more" and before it expects "answer"."""
        client.settimeout(20)
        t.check(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1, "TCP_NODELAY lost")
        mss = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        t.check(mss >= min(segment_sizes[0], 32767 - 40), f"the client's segments shrank: {segment_sizes[0]} -> {mss}")
        got = recv_exactly(client, 10 + sent)
        t.check(got[:10] == b"s2c unread", f"the client's queued data is lost: {got[:10]!r}")
        t.check(got[10:] == BIG[:sent], f"the large buffer came back wrong ({len(got) - 10} of {sent} bytes)")
        client.sendall(b"more")
        then()
        t.check(recv_exactly(client, 6) == b"answer", "server to client broken after restore")

    def server_answers() -> None:
        mss = server.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        t.check(mss >= min(segment_sizes[1], 32767 - 40), f"the server's segments shrank: {segment_sizes[1]} -> {mss}")
        t.check(recv_exactly(server, 4) == b"more", "client to server broken after restore")
        server.sendall(b"answer")

    child = None
    if args[1:] == ["fork"]:
        go_read, go_write = os.pipe()
        child = os.fork()
        if child == 0:
            server.close()
            os.read(go_read, 1)
            client_side()
            os._exit(0)
        client.close()
    t.ready()
    while not t.verify_requested:
        time.sleep(0.01)
    if child is None:
        t.check((client.getsockname(), client.getpeername(), server.getsockname(),
                 server.getpeername()) == names, "addresses changed")
    else:
        t.check((server.getsockname(), server.getpeername()) == names[2:], "addresses changed")
        os.write(go_write, b"x")
    server.settimeout(20)
    t.check(recv_exactly(server, 10) == b"c2s unread", "the server's queued data is lost")
    if child is None:
        client_side(then=server_answers)
    else:
        server_answers()
        _, status = os.waitpid(child, 0)
        t.check(status == 0, "the client's checks failed (see FAIL above)")
    extra = socket.create_connection(listener.getsockname()[:2])
    accepted, _ = listener.accept()
    extra.sendall(b"new")
    t.check(recv_exactly(accepted, 3) == b"new", "the listener does not accept")
else:
    port, family = int(args[0]), (socket.AF_INET6 if args[1] == "6" else socket.AF_INET)
    conn = socket.create_connection(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    conn.sendall(UNREAD)
    sent = fill(conn, BIG)
    t.check(0 < sent < len(BIG), f"the large buffer went {sent} bytes")
    t.ready()
    while not t.verify_requested:
        time.sleep(0.01)
    conn.settimeout(20)
    t.check(recv_exactly(conn, len(HELLO)) == HELLO, "the peer's data is lost")
    conn.sendall(AFTER)
    t.check(recv_exactly(conn, len(REPLY)) == REPLY, "the peer's reply did not arrive")
t.passed()
