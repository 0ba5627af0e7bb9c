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
from typing import Any, Callable

from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from ..image import b64, unb64
from ..inject import RemoteMemory, RemoteThread
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


def controlling_pty(tty_nr: int) -> int | None:
    """The pty index of a controlling terminal given as /proc/PID/stat's tty_nr, if a pty."""
    return _pts_index(tty_nr) if os.major(tty_nr) in _PTS_MAJORS else None


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return _is_master(f) or _is_slave(f)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    index = pty_index(f)
    if index not in ctx.tree.pty_masters:
        raise ctx.refuse(f"fd {f.fd}", "terminal", f"{f.link}: its master is outside the tree")
    rec: dict[str, Any] = {"index": index, "side": "master" if _is_master(f) else "slave",
                           "flags": f.flags}
    if rec["side"] == "master" and index not in ctx.tree.ptys:
        ctx.tree.ptys[index] = _dump_pty(ctx.dup_of(f.fd), ctx, with_data=ctx.writer is not None)
    return rec


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


def _pair(shared: dict[Any, Any], manifest: dict[str, Any], own_fds: list[int],
          index: int) -> tuple[int, int]:
    """The restored pty `index` as our (master, slave), made once per restore."""
    key = ("pty", index)
    if key not in shared:
        def keep(fd: int) -> int:
            own_fds.append(fd)
            return fd
        shared[key] = _make_pty(manifest["ptys"][str(index)], keep)
    return shared[key]


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    master, slave = _pair(ctx.shared, ctx.image.manifest, ctx.own_fds, rec["index"])
    end = master if rec["side"] == "master" else slave
    if rec["side"] == "master":
        # a new description of the same master: dup shares flags, so copy flags explicitly
        fd = ctx.keep(os.dup(end))
    else:
        fd = ctx.keep(fcntl.ioctl(master, TIOCGPTPEER, rec["flags"] & _FLAGS_MASK | os.O_CLOEXEC))
    fcntl.fcntl(fd, fcntl.F_SETFL, rec["flags"] & os.O_NONBLOCK)
    return fd


def take_controlling_terminal(leader: RemoteThread, index: int, shared: dict[Any, Any],
                              manifest: dict[str, Any], own_fds: list[int]) -> None:
    """Make restored pty `index` the controlling terminal of `leader`, a seed that has just
    become a session leader (TIOCSCTTY through the slave, opened in the seed by path)."""
    _in_terminal(leader, _slave_path(shared, manifest, own_fds, index), TIOCSCTTY, None)


def restore_foreground(leader: RemoteThread, index: int, shared: dict[Any, Any],
                       manifest: dict[str, Any], own_fds: list[int]) -> None:
    """Give pty `index` back its foreground group, asked by its session's leader (only a
    member of the terminal's session may); the leader's own group has it until then."""
    group = manifest["ptys"][str(index)].get("foreground", 0)
    if group:
        _in_terminal(leader, _slave_path(shared, manifest, own_fds, index), TIOCSPGRP, group)


def _slave_path(shared: dict[Any, Any], manifest: dict[str, Any], own_fds: list[int], index: int) -> str:
    master, _ = _pair(shared, manifest, own_fds, index)
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


PTY = FileKind("pty", _claims, _dump, _restore)
