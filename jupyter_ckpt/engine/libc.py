"""The one handle on the C library, with the prototypes the engine gives its functions.

Every `ctypes.CDLL(None)` is a separate set of function objects: a prototype set through one
handle does not apply to another, and a function without one passes Python ints as C ints.
So the engine opens libc once, here, and declares each prototype once.
"""
from __future__ import annotations

import ctypes
import os

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
