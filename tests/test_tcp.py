"""Connected TCP sockets: refused by name unless the caller asks for them to come back reset
(`--tcp-close`), in which case the restored program sees an ordinary disconnect."""
from __future__ import annotations

import socket
import sys

import pytest

from conftest import PROGRAMS, checkpoint_cycle, manifest, run_cli, wait_until


@pytest.fixture
def peer():
    """A TCP listener outside the tree, on 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield listener


def _tcp_state(port: int) -> str | None:
    """The state (hex, as /proc/net/tcp shows it) of the socket connected to `port` from
    the other side."""
    with open("/proc/net/tcp") as f:
        for line in list(f)[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port:
                return fields[3]
    return None


def test_an_established_connection_is_refused_by_name(programs, workdir, peer):
    prog = programs(sys.executable, PROGRAMS / "py_inet.py", "--connect", peer.getsockname()[1], "alive")
    conn, _ = peer.accept()
    for command in ("check", "dump"):
        refused = run_cli(command, prog.pid, *([workdir / "image"] if command == "dump" else []), check=False)
        assert refused.returncode == 1, refused
        said = refused.stdout + refused.stderr
        assert f"pid {prog.pid} fd " in said and "TCP connection: established 127.0.0.1:" in said \
            and f"-> 127.0.0.1:{peer.getsockname()[1]}" in said and "--tcp-close" in said, said
    assert not (workdir / "image").exists()
    conn.sendall(b"hi")
    prog.verify()  # the original runs on with its connection: it got "hi" and answered
    assert conn.recv(10) == b"alive"
    conn.close()


def test_a_half_closed_connection_is_refused_by_name(programs, workdir, peer):
    prog = programs(sys.executable, PROGRAMS / "py_inet.py", "--connect", peer.getsockname()[1], "reset")
    conn, _ = peer.accept()
    conn.close()  # the program has not closed its side: CLOSE_WAIT
    wait_until(lambda: _tcp_state(peer.getsockname()[1]) == "08", what="CLOSE_WAIT")
    refused = run_cli("check", prog.pid, check=False)
    assert refused.returncode == 1 and "TCP connection: close-wait" in refused.stdout, refused.stdout
    assert "can be checkpointed" in run_cli("check", prog.pid, "--tcp-close").stdout


def test_with_tcp_close_the_connection_comes_back_reset(programs, workdir, peer):
    prog = programs(sys.executable, PROGRAMS / "py_inet.py", "--connect", peer.getsockname()[1], "reset")
    conn, _ = peer.accept()
    checkpoint_cycle(prog, workdir / "image", "--tcp-close")  # the program sees a disconnect
    assert conn.recv(10) == b"", "the peer sees the original's connection end"
    conn.close()
    connections = [f for f in manifest(workdir / "image")["files"]
                   if f["kind"] == "inet-socket" and f.get("was")]
    assert [(f["state"], f["was"]) for f in connections] == [("disconnected", "established")]
