"""Stream connections to a listening unix socket of the program itself: one accepted (the
accepted socket shares the listener's address), two still waiting to be accepted, in order,
one accepted by a listener that has since been closed, whose file was removed, and a
listener bound to a relative path (its address keeps the path as given) with a connection
waiting. With `--closed-client`, also a connection waiting whose client has closed (which a
dump must refuse)."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
here = os.path.dirname(t.path)
path, gone_path = os.path.join(here, "listener.sock"), os.path.join(here, "gone.sock")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
os.chmod(path, 0o640)
listener.listen(4)
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect(path)
served, _ = listener.accept()
client.sendall(b"to the server")
served.sendall(b"to the client")
waiting = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
for sock in waiting:
    sock.connect(path)
old_listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
old_listener.bind(gone_path)
old_listener.listen(1)
old_client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
old_client.connect(gone_path)
old_served, _ = old_listener.accept()
old_listener.close()
os.unlink(gone_path)
old_client.send(b"packet")
os.chdir(here)
relative = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
relative.bind("relative.sock")
relative.listen(1)
relative_client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
relative_client.connect("relative.sock")
if "--closed-client" in sys.argv:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.connect(path)
        gone.sendall(b"sent before closing")
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

t.check(served.getsockname() == path and listener.getsockname() == path, "the listener's address")
t.check(os.stat(path).st_mode & 0o777 == 0o640, "the listener's file mode")
t.check(served.recv(100) == b"to the server" and client.recv(100) == b"to the client", "the accepted connection")
listener.setblocking(False)
for i, sock in enumerate(waiting):
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        t.check(False, f"waiting connection {i} is lost")
    sock.sendall(b"waited %d" % i)
    t.check(conn.recv(100) == b"waited %d" % i, f"waiting connection {i} came back in another order")
t.check(old_served.getsockname() == gone_path and not os.path.exists(gone_path), "the old listener's address")
t.check(old_served.recv(100) == b"packet", "the old connection's packet")
old_served.send(b"reply")
t.check(old_client.recv(100) == b"reply", "the old connection")
t.check(relative.getsockname() == "relative.sock", f"the relative address is {relative.getsockname()!r}")
relative.setblocking(False)
conn, _ = relative.accept()
t.check(conn.getsockname() == "relative.sock", "the relative listener's connection")
t.passed()
