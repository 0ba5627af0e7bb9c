"""Connected TCP sockets: an established connection comes back exactly (TCP_REPAIR), with its
peer in the tree or outside it (then only with `dump --kill`); others are refused by name
unless the caller asks for them to come back reset (`--tcp-close`), in which case the
restored program sees an ordinary disconnect."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading

import psutil
import pytest

from conftest import CLI, PROGRAMS, Program, checkpoint_cycle, manifest, pid_alive, run_cli, wait_until
from image_mutations import reseal
from jupyter_ckpt.engine import faults
from jupyter_ckpt.engine.resources import tcp_repair
from unprivileged import nobody_dir, run_as_nobody


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


SIOCOUTQ, SIOCOUTQNSD = 0x5411, 0x894B


def _ioctl(sock: socket.socket, request: int) -> int:
    return struct.unpack("=i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0]


def _unacknowledged(sock: socket.socket) -> int:
    return _ioctl(sock, SIOCOUTQ)


@pytest.mark.parametrize("how", [("4",), ("6",), ("4", "fork")])
def test_a_connection_within_the_tree_comes_back_exactly(programs, workdir, how):
    """Both ends in the program (or one in its child), data queued both ways and a large send
    not all sent: after restore every byte arrives once, in order, and the connection carries
    more."""
    prog = programs(sys.executable, PROGRAMS / "py_tcp_repair.py", "pair", *how)
    checkpoint_cycle(prog, workdir / "image")
    connections = [f for f in manifest(workdir / "image")["files"]
                   if f["kind"] == "inet-socket" and f["state"] == "established"]
    assert len(connections) == 2, connections
    assert any(f["tcp"]["unsent"] > 0 for f in connections), "the test lost its partly sent buffer"


def test_a_connection_whose_peer_is_restored_late_is_not_reset(programs, workdir, monkeypatch):
    """The end restored first waits for its peer (as on a loaded machine): its probes of the
    peer's closed window, answered with resets while the peer is not back, must not end it."""
    prog = programs(sys.executable, PROGRAMS / "py_tcp_repair.py", "pair", "4", "fork")
    prog.dump(workdir / "image", True)
    monkeypatch.setenv(faults.ENV, "restore.after-files:slow")
    prog.restore(workdir / "image")
    prog.verify()


def test_a_locked_connection_sends_no_new_data_until_the_tree_runs_on():
    """Once read for the image, a locked connection must not send data the image calls unsent
    (the kernel would, on its own, from a timer or pacing, and a peer not yet locked would
    take it). Here the test's own send stands for that; after the lock it goes out at once."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with client, server:
        lock = tcp_repair.Lock()
        state, send_queue, _ = lock.save(server, os.getpid())
        assert (state["unsent"], send_queue) == (0, b"")
        server.send(b"late")
        assert _ioctl(server, SIOCOUTQNSD) == 4, "the locked connection sent new data"
        lock.end(killed=False)
        client.settimeout(10)
        assert client.recv(4) == b"late"


def test_a_dump_that_lets_the_tree_run_on_leaves_its_connections_working(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_tcp_repair.py", "pair", "4")
    prog.dump(workdir / "image", False)
    prog.verify()  # the original's connection was locked for the dump, and unlocked after it


def test_a_failed_dump_unlocks_the_connections_it_had_locked(programs, workdir, monkeypatch):
    """A dump --kill that fails at its last step lets the tree run on: its connections take
    segments and talk again (they were locked and in repair mode for the dump)."""
    prog = programs(sys.executable, PROGRAMS / "py_tcp_repair.py", "pair", "4")
    monkeypatch.setenv(faults.ENV, "dump.before-commit")
    failed = run_cli("dump", prog.pid, workdir / "image", "--kill", check=False)
    assert failed.returncode == 1 and not (workdir / "image").exists(), failed
    prog.verify()


def test_a_dump_killed_midway_unlocks_the_connections_it_had_locked(programs, workdir):
    """The dumper dies (SIGKILL) while the tree is frozen and its connections locked: the
    kernel lets the tree run on, and the lock's keeper process takes the lock off."""
    prog = programs(sys.executable, PROGRAMS / "py_tcp_repair.py", "pair", "4")
    log = workdir / "dump.log"
    dumper = subprocess.Popen(CLI + ["--log-file", str(log), "dump", str(prog.pid), str(workdir / "image"),
                                     "--kill"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=dict(os.environ, **{faults.ENV: "dump.after-memory:hang"}))
    wait_until(lambda: log.exists() and "phase dump.after-memory" in log.read_text(), what="the dump to hang")
    keepers = [p for p in psutil.Process(dumper.pid).children() if "-c" in p.cmdline()]
    assert len(keepers) == 1, keepers
    dumper.kill()
    dumper.wait()
    wait_until(lambda: not keepers[0].is_running() or keepers[0].status() == psutil.STATUS_ZOMBIE,
               what="the keeper to unlock the connections")
    prog.verify()


def test_without_cap_net_admin_a_connection_is_refused_by_name(programs, workdir):
    def work() -> None:
        from jupyter_ckpt import engine

        home = nobody_dir()
        prog = Program([sys.executable, str(PROGRAMS / "py_tcp_repair.py"), "pair", "4"], home).start()
        try:
            why = "TCP connection: established 127.0.0.1:.* needs CAP_NET_ADMIN"
            assert [b.kind for b in engine.check(prog.pid)] == ["TCP connection"] * 2
            with pytest.raises(engine.Refused, match=why):
                engine.dump(prog.pid, str(home / "image"), kill=True)
            assert not (home / "image").exists()
            prog.verify()  # the original runs on, unharmed
        finally:
            prog.kill()
            shutil.rmtree(home, ignore_errors=True)

    run_as_nobody(work)


@pytest.mark.parametrize("family", ["4", "6"])
def test_a_connection_to_a_peer_outside_the_tree_carries_on(programs, workdir, family):
    """The peer (this test) never sees the move: the restored program reads what the peer
    sent before the dump, and the peer gets everything the original had queued, then more."""
    loopback = "::1" if family == "6" else "127.0.0.1"
    with socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the program's send stalls
        listener.bind((loopback, 0))
        listener.listen(1)
        prog = programs(sys.executable, PROGRAMS / "py_tcp_repair.py", "outside",
                        listener.getsockname()[1], family)
        conn, _ = listener.accept()
    with conn:
        conn.sendall(b"hello from the peer")
        wait_until(lambda: _unacknowledged(conn) == 0, what="the program's kernel to take HELLO")
        refused = run_cli("dump", prog.pid, workdir / "refused", check=False)
        assert refused.returncode == 1 and "its peer is outside the tree" in refused.stdout + refused.stderr
        prog.dump(workdir / "image", True)
        assert not pid_alive(prog.pid)
        prog.restore(workdir / "image")
        received: list[bytes] = []

        def peer() -> None:  # reads all the program sends, then answers
            conn.settimeout(30)
            data = b""
            while not data.endswith(b"after restore"):
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            received.append(data)
            conn.sendall(b"reply")

        reader = threading.Thread(target=peer)
        reader.start()
        prog.verify()
        reader.join()
    head, tail = b"unread by the peer", b"after restore"
    data = received[0]
    assert data.startswith(head) and data.endswith(tail), (data[:40], data[-40:])
    middle = data[len(head):-len(tail)]
    assert middle == bytes(i * 7 % 251 for i in range(len(middle))) and middle, len(middle)


def test_the_schema_checks_a_saved_connection(programs, workdir):
    """A connection's saved state is there exactly for an established one, and its counts
    agree with its queues: a crafted image is refused by name before anything is created."""
    prog = programs(sys.executable, PROGRAMS / "py_tcp_repair.py", "pair", "4")
    prog.dump(workdir / "image", True)
    genuine = manifest(workdir / "image")
    index = next(i for i, f in enumerate(genuine["files"]) if f.get("state") == "established")
    send_size = genuine["blobs"][genuine["files"][index]["tcp"]["send_blob"]]["size"]
    for change, named in ((lambda f: f.pop("tcp"), "tcp"), (lambda f: f.pop("peer"), "peer"),
                          (lambda f: f["tcp"].update(unsent=send_size + 1), "tcp.unsent"),
                          (lambda f: f.update(state="listen"), "tcp")):
        crafted = json.loads(json.dumps(genuine))
        change(crafted["files"][index])
        reseal(workdir / "image", crafted)
        refused = run_cli("restore", workdir / "image", "--detach", check=False)
        assert refused.returncode == 1 and f"files[{index}].{named}" in refused.stderr, refused.stderr
        assert not pid_alive(prog.pid)
    reseal(workdir / "image", genuine)
    prog.restore(workdir / "image")
    prog.verify()
