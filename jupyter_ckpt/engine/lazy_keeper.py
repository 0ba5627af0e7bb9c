"""The lazy page server's watchdog, a small process of its own (python -m ...lazy_keeper FD).

The kernel drops a userfaultfd's registrations once the last descriptor of it is closed: if
the process serving pages died (SIGKILL, the OOM killer), the restored processes would read
zeros where their memory is not in yet, and run on with wrong memory. The keeper holds a
duplicate of every userfaultfd being served, so that its registrations outlive the server;
if the server goes away without saying "done" (its end of the socket closes), the keeper
kills every restored process and their descendants before letting go.

Messages on the socket (SOCK_SEQPACKET), from the server:
  b"add ID PID" with the userfaultfd attached (PID 0: a process forked meanwhile)
  b"drop ID"    that userfaultfd is no longer served (nothing pending in it)
  b"done"       everything is in (or the server killed the processes itself)
"""
from __future__ import annotations

import array
import os
import signal
import socket
import sys


def descendants(pids: list[int]) -> list[int]:
    """`pids` and every process below them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    seen: set[int] = set()
    todo = list(dict.fromkeys(pids))
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo += children.get(pid, [])
    return out


def kill_trees(pids: list[int]) -> list[int]:
    """SIGKILL `pids` and their descendants; returns those signalled."""
    killed = []
    for pid in descendants(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def main(sock_fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the server to handle
    sock = socket.socket(fileno=sock_fd)
    sock.send(b"ready")
    held: dict[str, int] = {}
    pids: list[int] = []
    while True:
        fds = array.array("i")
        try:
            data, ancdata, _, _ = sock.recvmsg(256, socket.CMSG_SPACE(4 * fds.itemsize))
        except InterruptedError:
            continue
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        words = data.split()
        if not words:  # the server is gone without finishing: its processes must not run on
            kill_trees(pids)
            return 1
        if words[0] == b"add" and fds:
            held[words[1].decode()] = fds[0]
            if int(words[2]):
                pids.append(int(words[2]))
        elif words[0] == b"drop" and words[1].decode() in held:
            os.close(held.pop(words[1].decode()))
        elif words[0] == b"done":
            return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
