"""Unix sockets and FIFOs that must come back exactly as they were: never-used sockets,
datagram sockets with their addresses, peers and queues, socket file modes, and FIFOs
whose name is gone."""
import sys

from conftest import PROGRAMS, checkpoint_cycle


def test_unix_sockets_never_bound_nor_connected(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_unix_unconnected.py")
    checkpoint_cycle(prog, workdir / "image")


def test_unix_datagram_sockets_bound_connected_and_queued(programs, workdir):
    """Bound to a path and an abstract name, one connected to the other, one receiving by
    recvfrom; queues in every direction, from named and unnamed senders, with credentials."""
    prog = programs(sys.executable, PROGRAMS / "py_unix_dgram.py")
    checkpoint_cycle(prog, workdir / "image")
