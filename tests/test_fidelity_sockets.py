"""Unix sockets and FIFOs that must come back exactly as they were: never-used sockets,
datagram sockets with their addresses, peers and queues, socket file modes, and FIFOs
whose name is gone."""
import os
import sys

import pytest

from conftest import PROGRAMS, checkpoint_cycle, run_cli


def test_unix_sockets_never_bound_nor_connected(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_unix_unconnected.py")
    checkpoint_cycle(prog, workdir / "image")


def test_unix_datagram_sockets_bound_connected_and_queued(programs, workdir):
    """Bound to a path and an abstract name, one connected to the other, one receiving by
    recvfrom; queues in every direction, from named and unnamed senders, with credentials."""
    prog = programs(sys.executable, PROGRAMS / "py_unix_dgram.py")
    checkpoint_cycle(prog, workdir / "image")


def test_fifos_whose_name_was_removed(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_fifo_unlinked.py")
    checkpoint_cycle(prog, workdir / "image")


def test_a_removed_fifo_read_outside_the_tree_is_refused(programs, workdir):
    path = workdir / "outside.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        prog = programs(sys.executable, PROGRAMS / "py_fifo_unlinked.py", path)
        refused = run_cli("dump", prog.pid, workdir / "image", "--kill", check=False)
        assert refused.returncode == 1 and "FIFO" in refused.stdout + refused.stderr \
            and "held outside the tree" in refused.stdout + refused.stderr, refused
        assert not (workdir / "image").exists()
        prog.verify()  # the original runs on unharmed
    finally:
        os.close(reader)


def test_unix_connections_accepted_and_waiting_to_be_accepted(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_unix_pending.py")
    checkpoint_cycle(prog, workdir / "image")


def test_socket_options_filters_and_shutdowns(programs, workdir):
    """Generic, IP and TCP options (a device binding, buffer locks, linger, timeouts,
    congestion control...), classic BPF filters and UDP shutdowns come back exactly."""
    prog = programs(sys.executable, PROGRAMS / "py_sock_options.py")
    checkpoint_cycle(prog, workdir / "image")


@pytest.mark.parametrize("what, named", [("--corked", "UDP_CORK"), ("--ebpf", "SO_ATTACH_BPF")])
def test_options_that_cannot_be_read_back_are_refused(programs, workdir, what, named):
    """Corked UDP data not sent yet; an eBPF socket filter (only a classic one reads back)."""
    prog = programs(sys.executable, PROGRAMS / "py_sock_options.py", what)
    refused = run_cli("dump", prog.pid, workdir / "image", "--kill", check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1 and named in out and f"pid {prog.pid} fd " in out, refused
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on unharmed


def test_a_waiting_connection_whose_client_closed_is_refused(programs, workdir):
    """Its data cannot be read before accept: refused, rather than lost."""
    prog = programs(sys.executable, PROGRAMS / "py_unix_pending.py", "--closed-client")
    refused = run_cli("dump", prog.pid, workdir / "image", "--kill", check=False)
    out = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "whose client has closed" in out and f"pid {prog.pid} fd " in out, refused
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on unharmed
