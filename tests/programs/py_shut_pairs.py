"""Socket pairs with one end shut down after it queued data: a datagram and a stream end each
wrote a message and then shut down writing. After restore the messages are still there to
read, and the shut-down ends still refuse to write."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
pairs = {kind: socket.socketpair(socket.AF_UNIX, kind) for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)}
for writer, _ in pairs.values():
    writer.send(b"sent before shutdown")
    writer.shutdown(socket.SHUT_WR)
t.ready()
while not t.verify_requested:
    time.sleep(0.01)
for kind, (writer, reader) in pairs.items():
    t.check(reader.recv(100) == b"sent before shutdown", f"type {kind}: the queued message is lost")
    try:
        writer.send(b"after")
        t.check(False, f"type {kind}: the shut-down end writes again")
    except BrokenPipeError:
        pass
t.passed()
