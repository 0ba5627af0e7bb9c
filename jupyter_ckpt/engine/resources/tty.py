"""Pseudo-terminals whose master and slave are both inside the tree: terminal settings,
window size, packet/lock state, and the bytes waiting on either side (typed-ahead input not
yet read by the program; output not yet read from the master).

Waiting bytes can only be read by consuming them, so they are read through a private slave
(or master) description in raw mode and written straight back with processing switched off:
the original keeps its input. The pair comes back as a new pty (its /dev/pts number may
differ); its bytes are written back the same way before its settings are restored.
A pts whose master lies outside the tree is refused unless it is a standard stream (see
stdio).

A pty in the tree can also be a session's controlling terminal (pexpect and pty.fork() make
one): its session and foreground process group are saved with it, and each process records
it as `ctty`. Restore makes the session leader take it right after its setsid(), before its
children are forked, so they inherit it as they did; the foreground group is set once every
group exists.
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
import termios
from dataclasses import dataclass, field
from typing import Any, Callable

from ..context import DumpContext, OpenFile, RestoreContext, RestoreTree, TreeIndex
from ..errors import Blocker, RestoreConflict
from ..image import b64, unb64
from ..inject import RemoteMemory, RemoteThread
from ..procfs import read_stat
from .kind import FileKind

log = logging.getLogger(__name__)

TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK, TIOCGPTPEER = 0x80045430, 0x40045431, 0x80045439, 0x5441
TIOCINQ, TIOCOUTQ = 0x541B, 0x5411
TIOCSCTTY, TIOCGPGRP, TIOCSPGRP = 0x540E, 0x540F, 0x5410
_AT_FDCWD = -100
_PTMX = (5, 2)
_PTS_MAJORS = range(136, 144)
_FLAGS_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_CLOEXEC) | os.O_NOCTTY


def _is_master(f: OpenFile) -> bool:
    return stat.S_ISCHR(f.st.st_mode) and (os.major(f.st.st_rdev), os.minor(f.st.st_rdev)) == _PTMX


def _is_slave(f: OpenFile) -> bool:
    return stat.S_ISCHR(f.st.st_mode) and os.major(f.st.st_rdev) in _PTS_MAJORS


def pty_index(f: OpenFile) -> int:
    if _is_master(f):
        return int(f.fdinfo["tty-index"])
    return _pts_index(f.st.st_rdev)


def _pts_index(device: int) -> int:
    return os.minor(device) + (os.major(device) - _PTS_MAJORS[0]) * 256


def _controlling_pty(tty_nr: int) -> int | None:
    """The pty index of a controlling terminal given as /proc/PID/stat's tty_nr, if a pty."""
    return _pts_index(tty_nr) if os.major(tty_nr) in _PTS_MAJORS else None


@dataclass
class _Ptys:
    """Dump: the ptys whose master the tree holds, each process's controlling pty, and the
    state of each pty saved so far (the manifest's "ptys" section)."""

    masters: set[int] = field(default_factory=set)  # pty indexes
    ctty: dict[int, int] = field(default_factory=dict)  # pid -> its controlling pty's index
    saved: dict[int, dict[str, Any]] = field(default_factory=dict)  # pty index -> its state


def _index(tree: TreeIndex, pid: int, files: list[OpenFile]) -> None:
    ptys = tree.state(_Ptys)
    terminal = _controlling_pty(int(read_stat(pid)[7]))
    if terminal is not None:
        ptys.ctty[pid] = terminal
    ptys.masters.update(int(f.fdinfo["tty-index"]) for f in files if "tty-index" in f.fdinfo)


def master_in_tree(tree: TreeIndex, index: int) -> bool:
    return index in tree.state(_Ptys).masters


def controlling_terminal(tree: TreeIndex, pid: int) -> int | None:
    """The index of `pid`'s controlling pty if the tree holds its master (else None)."""
    ptys = tree.state(_Ptys)
    terminal = ptys.ctty.get(pid)
    return terminal if terminal in ptys.masters else None


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return _is_master(f) or _is_slave(f)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    index = pty_index(f)
    ptys = ctx.tree.state(_Ptys)
    if index not in ptys.masters:
        raise ctx.refuse(f"fd {f.fd}", "terminal", f"{f.link}: its master is outside the tree")
    rec: dict[str, Any] = {"index": index, "side": "master" if _is_master(f) else "slave",
                           "flags": f.flags}
    if rec["side"] == "master" and index not in ptys.saved:
        ptys.saved[index] = _dump_pty(ctx.dup_of(f.fd), ctx, with_data=ctx.writer is not None)
    return rec


def _section(tree: TreeIndex) -> dict[str, Any]:
    return {str(i): state for i, state in tree.state(_Ptys).saved.items()}


def _check(tree: TreeIndex, processes: list[dict[str, Any]]) -> list[Blocker]:
    """A pty of the tree that is a controlling terminal comes back through its session's
    leader, and its children inherit it: so the leader must be in the tree, and every
    member of its session must share the terminal (none that dropped it). Its foreground
    group, if any, must be one of the session's groups."""
    ptys = tree.state(_Ptys).saved
    by_pid = {p["pid"]: p["process"] for p in processes if p.get("process")}
    blockers = []
    for pid, attrs in by_pid.items():
        terminal = attrs.get("ctty")
        if attrs["sid"] == pid and terminal is not None and terminal in ptys:
            foreground = ptys[terminal].get("foreground", 0)
            groups = {a["pgid"] for a in by_pid.values() if a["sid"] == pid}
            if foreground and foreground not in groups:
                blockers.append(Blocker(pid, "process", "controlling terminal",
                                        f"/dev/pts/{terminal}'s foreground group {foreground} "
                                        "has no process in the session"))
    for pid, attrs in by_pid.items():
        leader = by_pid.get(attrs["sid"])
        terminal, leaders_terminal = attrs.get("ctty"), leader and leader.get("ctty")
        if terminal is not None and terminal != leaders_terminal:
            blockers.append(Blocker(pid, "process", "controlling terminal",
                                    f"/dev/pts/{terminal} belongs to session {attrs['sid']}, "
                                    "whose leader is outside the tree"))
        elif terminal is None and leaders_terminal is not None:
            blockers.append(Blocker(pid, "process", "controlling terminal",
                                    f"has none while its session has /dev/pts/{leaders_terminal}"))
    return blockers


def _dump_pty(master: int, ctx: DumpContext, with_data: bool) -> dict[str, Any]:
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        slave_attrs = termios.tcgetattr(slave)
        master_attrs = termios.tcgetattr(master)
        pty = {"termios": _attrs_out(slave_attrs), "master_termios": _attrs_out(master_attrs),
               "winsize": list(struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))),
               "locked": struct.unpack("i", fcntl.ioctl(master, TIOCGPTLCK, b"\0" * 4))[0],
               "foreground": ctx.tree.inner(_foreground_group(master))}
        st = os.fstat(slave)  # the /dev/pts node's owner and mode (a program may fchown it)
        pty["slave_owner"], pty["slave_mode"] = [st.st_uid, st.st_gid], stat.S_IMODE(st.st_mode)
        pty["input"] = b64(_drain_and_refill(reader=slave, writer=master, attrs_of=slave)) if with_data else ""
        pty["output"] = b64(_drain_and_refill(reader=master, writer=slave, attrs_of=slave)) if with_data else ""
        return pty
    finally:
        os.close(slave)


def _foreground_group(master: int) -> int:
    """A pty's foreground process group, asked through its master, as we see it (0: none)."""
    try:
        return struct.unpack("i", fcntl.ioctl(master, TIOCGPGRP, b"\0" * 4))[0]
    except OSError:
        return 0


def _drain_and_refill(reader: int, writer: int, attrs_of: int) -> bytes:
    """Read what waits at `reader` and put it back through `writer`, with the terminal in
    raw mode meanwhile so nothing is echoed, translated or line-edited twice."""
    saved = termios.tcgetattr(attrs_of)
    raw = list(saved)
    raw[0] = 0  # iflag
    raw[1] = raw[1] & ~termios.OPOST
    raw[3] = raw[3] & ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
    raw[6] = list(saved[6])
    raw[6][termios.VMIN], raw[6][termios.VTIME] = 0, 0
    termios.tcsetattr(attrs_of, termios.TCSANOW, raw)
    try:
        flags = fcntl.fcntl(reader, fcntl.F_GETFL)
        fcntl.fcntl(reader, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        chunks = []
        try:
            while True:
                chunk = os.read(reader, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except BlockingIOError:
            pass  # all read: nothing more is waiting
        except OSError as err:  # EIO: the other side is closed, which ends what is waiting too
            log.debug("pty: reading what is waiting ended with %s", err)
        finally:
            fcntl.fcntl(reader, fcntl.F_SETFL, flags)
        data = b"".join(chunks)
        if data:
            os.write(writer, data)
        return data
    finally:
        termios.tcsetattr(attrs_of, termios.TCSANOW, saved)


def _attrs_out(attrs: list[Any]) -> list[Any]:
    return attrs[:6] + [[b64(c) if isinstance(c, bytes) else c for c in attrs[6]]]


def _attrs_in(attrs: list[Any]) -> list[Any]:
    return attrs[:6] + [[unb64(c) if isinstance(c, str) else c for c in attrs[6]]]


def _make_pty(rec: dict[str, Any], keep: Callable[[int], int]) -> tuple[int, int]:
    master = keep(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = keep(fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
    attrs = _attrs_in(rec["termios"])
    raw = list(attrs)
    raw[0], raw[1], raw[3] = 0, raw[1] & ~termios.OPOST, raw[3] & ~(termios.ICANON | termios.ECHO
                                                                   | termios.ISIG | termios.IEXTEN)
    termios.tcsetattr(slave, termios.TCSANOW, raw)
    if rec["input"]:
        os.write(master, unb64(rec["input"]))
    if rec["output"]:
        os.write(slave, unb64(rec["output"]))
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    termios.tcsetattr(master, termios.TCSANOW, _attrs_in(rec["master_termios"]))
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *rec["winsize"]))
    if rec["locked"]:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 1))
    if "slave_owner" in rec:
        st = os.fstat(slave)  # changed only where they differ: an unprivileged restorer may not
        try:
            if [st.st_uid, st.st_gid] != rec["slave_owner"]:
                os.fchown(slave, *rec["slave_owner"])
            if stat.S_IMODE(st.st_mode) != rec["slave_mode"]:
                os.fchmod(slave, rec["slave_mode"])
        except PermissionError:
            raise RestoreConflict(f"cannot give the pty's /dev/pts node owner {rec['slave_owner']} "
                                  f"and mode {rec['slave_mode']:o}: not permitted") from None
    return master, slave


@dataclass
class _Pairs:
    """Restore: each pty made for the tree, by index, as our (master, slave)."""

    by_index: dict[int, tuple[int, int]] = field(default_factory=dict)


def _pair(tree: RestoreTree, index: int) -> tuple[int, int]:
    """The restored pty `index` as our (master, slave), made once per restore."""
    pairs = tree.state(_Pairs).by_index
    if index not in pairs:
        pairs[index] = _make_pty(tree.image.manifest["ptys"][str(index)], tree.keep)
    return pairs[index]


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    master, slave = _pair(ctx.tree, rec["index"])
    end = master if rec["side"] == "master" else slave
    if rec["side"] == "master":
        # a new description of the same master: dup shares flags, so copy flags explicitly
        fd = ctx.keep(os.dup(end))
    else:
        fd = ctx.keep(fcntl.ioctl(master, TIOCGPTPEER, rec["flags"] & _FLAGS_MASK | os.O_CLOEXEC))
    fcntl.fcntl(fd, fcntl.F_SETFL, rec["flags"] & os.O_NONBLOCK)
    return fd


def _take_controlling_terminal(tree: RestoreTree, leader: RemoteThread, proc: dict[str, Any]) -> None:
    """Before its children fork (they inherit it): make the restored pty a session leader's
    controlling terminal, as `leader` has just become one (TIOCSCTTY through the slave,
    opened in the seed by path)."""
    attrs = proc["process"]
    if attrs["sid"] == proc["pid"] and attrs.get("ctty") is not None:
        _in_terminal(leader, _slave_path(tree, attrs["ctty"]), TIOCSCTTY, None)


def _restore_foreground(tree: RestoreTree, leader: RemoteThread, proc: dict[str, Any]) -> None:
    """Once every group exists: give the pty back its foreground group, asked by its
    session's leader (only a member of the terminal's session may); the leader's own group
    has it until then."""
    attrs = proc["process"]
    if attrs["sid"] != proc["pid"] or attrs.get("ctty") is None:
        return
    group = tree.image.manifest["ptys"][str(attrs["ctty"])].get("foreground", 0)
    if group:
        _in_terminal(leader, _slave_path(tree, attrs["ctty"]), TIOCSPGRP, group)


def _slave_path(tree: RestoreTree, index: int) -> str:
    master, _ = _pair(tree, index)
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    return f"/dev/pts/{number}"


def _in_terminal(thread: RemoteThread, path: str, request: int, value: int | None) -> None:
    """In `thread`: open `path` (never acquiring it by accident), ioctl `request` with `value`
    passed by pointer (or 0 when None), close it again."""
    page = thread.mmap_scratch(4096)
    try:
        mem = RemoteMemory(thread.tid)
        try:
            mem.write(page, path.encode() + b"\0")
            if value is not None:
                mem.write(page + 2048, struct.pack("i", value))
        finally:
            mem.close()
        fd = thread.call("openat", _AT_FDCWD, page, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            thread.call("ioctl", fd, request, 0 if value is None else page + 2048)
        finally:
            thread.call("close", fd)
    finally:
        thread.call("munmap", page, 4096)


PTY = FileKind("pty", _claims, _dump, _restore, index=_index, section="ptys", dump_section=_section,
               check=_check, before_fork=_take_controlling_terminal, seeded=_restore_foreground)
