"""Issue-3 fd kinds in real programs: event fds, timers, signalfd, epoll, sockets."""
import os
import socket
import sys

from conftest import PROGRAMS, checkpoint_cycle, manifest, run_cli


def test_eventfd_timerfd_signalfd_epoll(cc, programs, workdir):
    prog = programs(cc("event_fds"))
    assert run_cli("check", prog.pid).returncode == 0
    checkpoint_cycle(prog, workdir / "image")


def test_unix_and_tcp_sockets(programs, workdir):
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen(1)
    prog = programs(sys.executable, PROGRAMS / "py_sockets.py", str(peer.getsockname()[1]))
    conn, _ = peer.accept()
    assert conn.recv(5) == b"hello"
    checkpoint_cycle(prog, workdir / "image", "--tcp-close")
    conn.close()
    peer.close()


def test_pty_raw_mode_and_typed_ahead_input(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_pty.py")
    checkpoint_cycle(prog, workdir / "image")


def test_a_terminal_session_with_job_control(programs, workdir):
    """pty.fork(): a session leader with the pty as its controlling terminal, and a
    foreground job in its own group that ^C at the master interrupts after restore."""
    prog = programs(sys.executable, PROGRAMS / "py_ctty.py")
    checkpoint_cycle(prog, workdir / "image")
    image = manifest(workdir / "image")
    leader = next(p["process"] for p in image["processes"] if p["process"]["sid"] == p["pid"]
                  and p["process"]["ctty"] is not None)
    assert image["ptys"][str(leader["ctty"])]["foreground"] != leader["pgid"], "the job is in front"


def test_pipes_whose_other_end_is_closed(programs, workdir):
    """Refused while the other end is held outside the tree (here, by us); fine once no one
    holds it, as with the pipe of a subprocess that has finished."""
    reader, writer = os.pipe()
    prog = programs(sys.executable, PROGRAMS / "py_pipe_ends.py", writer, pass_fds=(writer,))
    os.close(writer)
    refused = run_cli("check", prog.pid, check=False)
    assert refused.returncode == 1 and "held outside the tree" in refused.stdout, refused.stdout
    assert f"fd {writer}" in refused.stdout and len(refused.stdout.splitlines()) == 1, refused.stdout
    os.close(reader)
    checkpoint_cycle(prog, workdir / "image")


def test_pidfds_on_a_running_and_an_exited_child(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_pidfd.py")
    checkpoint_cycle(prog, workdir / "image")
    assert len([f for f in manifest(workdir / "image")["files"] if f["kind"] == "pidfd"]) == 2


def test_a_pidfd_on_a_process_outside_the_tree_is_refused(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_pidfd.py", "--outside")
    refused = run_cli("check", prog.pid, check=False)
    assert refused.returncode == 1 and f"refers to pid {os.getpid()}, outside the tree" in refused.stdout, \
        refused.stdout
    assert not run_cli("dump", prog.pid, workdir / "image", check=False).returncode == 0
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on, its pidfds intact


def test_inotify_watches_keep_their_descriptors(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_inotify.py")
    checkpoint_cycle(prog, workdir / "image")
    instance = next(f for f in manifest(workdir / "image")["files"] if f["kind"] == "inotify")
    assert [w["wd"] for w in instance["watches"]] == [1, 3]


def test_ipv6_and_udp_sockets(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_inet.py")
    checkpoint_cycle(prog, workdir / "image")
