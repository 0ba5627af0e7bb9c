"""Pseudo-terminals whose master and slave are both inside the tree: terminal settings,
window size, packet/lock state, and the bytes waiting on either side (typed-ahead input not
yet read by the program; output not yet read from the master).

Waiting bytes can only be read by consuming them, so they are read through a private slave
(or master) description in raw mode and written straight back with processing switched off:
the original keeps its input. The pair comes back as a new pty (its /dev/pts number may
differ); its bytes are written back the same way before its settings are restored.
A pts whose master lies outside the tree is refused unless it is a standard stream (see
stdio), and so is a pty that is some process's controlling terminal.
"""
from __future__ import annotations

import fcntl
import os
import stat
import struct
import termios
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from ..image import b64, unb64
from . import FileKind

TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK, TIOCGPTPEER = 0x80045430, 0x40045431, 0x80045439, 0x5441
TIOCINQ, TIOCOUTQ = 0x541B, 0x5411
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
    return os.minor(f.st.st_rdev) + (os.major(f.st.st_rdev) - 136) * 256


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return _is_master(f) or _is_slave(f)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    index = pty_index(f)
    if index not in ctx.tree.pty_masters:
        raise ctx.refuse(f"fd {f.fd}", "terminal", f"{f.link}: its master is outside the tree")
    if index in ctx.tree.controlling_ptys:
        raise ctx.refuse(f"fd {f.fd}", "terminal", f"{f.link} is a controlling terminal "
                         "(not supported yet)")
    rec: dict[str, Any] = {"index": index, "side": "master" if _is_master(f) else "slave",
                           "flags": f.flags}
    if rec["side"] == "master" and index not in ctx.tree.ptys:
        ctx.tree.ptys[index] = _dump_pty(ctx.dup_of(f.fd), with_data=ctx.writer is not None)
    return rec


def _dump_pty(master: int, with_data: bool) -> dict[str, Any]:
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        slave_attrs = termios.tcgetattr(slave)
        master_attrs = termios.tcgetattr(master)
        pty = {"termios": _attrs_out(slave_attrs), "master_termios": _attrs_out(master_attrs),
               "winsize": list(struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))),
               "locked": struct.unpack("i", fcntl.ioctl(master, TIOCGPTLCK, b"\0" * 4))[0]}
        pty["input"] = b64(_drain_and_refill(reader=slave, writer=master, attrs_of=slave)) if with_data else ""
        pty["output"] = b64(_drain_and_refill(reader=master, writer=slave, attrs_of=slave)) if with_data else ""
        return pty
    finally:
        os.close(slave)


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
        except (BlockingIOError, OSError):
            pass
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


def _make_pty(ctx: RestoreContext, index: int) -> tuple[int, int]:
    rec = ctx.image.manifest["ptys"][str(index)]
    master = ctx.keep(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    slave = ctx.keep(fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
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
    return master, slave


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    master, slave = ctx.once(("pty", rec["index"]), lambda: _make_pty(ctx, rec["index"]))
    end = master if rec["side"] == "master" else slave
    if rec["side"] == "master":
        # a new description of the same master: dup shares flags, so copy flags explicitly
        fd = ctx.keep(os.dup(end))
    else:
        fd = ctx.keep(fcntl.ioctl(master, TIOCGPTPEER, rec["flags"] & _FLAGS_MASK | os.O_CLOEXEC))
    fcntl.fcntl(fd, fcntl.F_SETFL, rec["flags"] & os.O_NONBLOCK)
    return fd


PTY = FileKind("pty", _claims, _dump, _restore)
