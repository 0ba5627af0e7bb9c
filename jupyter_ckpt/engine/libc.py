"""The one handle on the C library, with the prototypes the engine gives its functions.

Every `ctypes.CDLL(None)` is a separate set of function objects: a prototype set through one
handle does not apply to another, and a function without one passes Python ints as C ints.
So the engine opens libc once, here, and declares each prototype once.
"""
from __future__ import annotations

import ctypes
import os
import sys
import types

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)

# clone3 through syscall() must not release the GIL: the child is a copy of this interpreter
# and must own it. A PyDLL's functions keep it.
syscall_holding_gil = ctypes.PyDLL(None, use_errno=True).syscall
syscall_holding_gil.restype = ctypes.c_long


def error(what: str) -> OSError:
    """The OSError for the errno the last libc call through this handle left."""
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def check(result: int, what: str) -> int:
    """`result` of a libc call that returns -1 on failure, or the OSError it stands for."""
    if result == -1:
        raise error(what)
    return result


def lend_to_python_ptrace() -> None:
    """Call before importing python-ptrace. It opens the C library by the name
    ctypes.util.find_library gives, which runs `ldconfig -p` in a subprocess: 10-20 ms of
    CPU on every command. Its module for that is given a handle of its own here instead
    (a handle apart from ours: the prototypes it sets must not change ours)."""
    if "ptrace.ctypes_libc" in sys.modules:
        return
    module = types.ModuleType("ptrace.ctypes_libc")
    module.LIBC_FILENAME = _loaded_libc()  # type: ignore[attr-defined]
    module.libc = ctypes.CDLL(module.LIBC_FILENAME, use_errno=True)  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module


def _loaded_libc() -> str | None:
    """The path of the C library this process has mapped (None: the program's symbols)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rstrip("\n").partition("/")[2]
            if path and os.path.basename(path).startswith("libc.so"):
                return "/" + path
    return None
