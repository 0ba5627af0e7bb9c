"""Running part of a test in a forked child that first changes who or where it is (another
user, another PID namespace), with the child's failure re-raised in the test."""
from __future__ import annotations

import ctypes
import os
import select
import signal
import traceback
from typing import Callable

CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                     ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def run_forked(work: Callable[[], None], setup: Callable[[], None], what: str, timeout: float = 300) -> None:
    """Run `setup` then `work` in a forked child; raise here if either failed ("`what`:
    the child's traceback"). `setup` may fork again: whichever process returns from it
    runs `work` and reports."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        outcome = b""
        try:
            setup()
            work()
        except BaseException:
            outcome = traceback.format_exc().encode()
        finally:
            os.write(write_end, outcome or b"ok")
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        ready, _, _ = select.select([reader], [], [], timeout)
        text = reader.read().decode(errors="replace") if ready else "timed out"
    if not ready:
        os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    if text != "ok":
        raise AssertionError(f"{what}:\n{text}")


def enter_container() -> None:
    """Become PID 1 of a new PID namespace with its own /proc, as a CI job in a container
    is: the session and process group leaders we inherited are outside, so /proc shows
    our session id as 0, and programs we start have init as their parent."""
    check(libc.unshare(CLONE_NEWPID | CLONE_NEWNS), "unshare(CLONE_NEWPID | CLONE_NEWNS)")
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    init = os.fork()
    if init:  # stays outside: ends with the namespace's init, which reports for itself
        os.waitpid(init, 0)
        os._exit(0)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
