"""Character devices whose state is nothing but their identity: /dev/null, zero, full, random,
urandom. Other devices (terminals handled by stdio, GPUs, ...) are refused."""
from __future__ import annotations

import os
import stat
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from ..errors import RestoreConflict
from .kind import FileKind

_ALLOWED = {(1, 3): "/dev/null", (1, 5): "/dev/zero", (1, 7): "/dev/full",
            (1, 8): "/dev/random", (1, 9): "/dev/urandom"}
_OPEN_FLAGS_MASK = ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | os.O_CLOEXEC)


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return stat.S_ISCHR(f.st.st_mode) and (os.major(f.st.st_rdev), os.minor(f.st.st_rdev)) in _ALLOWED


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    """Restore reopens the standard node: refuse a node of the same device made elsewhere
    (mknod), whose mode, owner and path would come back as the standard one's."""
    rdev = [os.major(f.st.st_rdev), os.minor(f.st.st_rdev)]
    try:
        standard = os.stat(_ALLOWED[tuple(rdev)])
    except OSError:
        standard = None
    if standard is None or (standard.st_dev, standard.st_ino) != (f.st.st_dev, f.st.st_ino):
        raise ctx.refuse(f"fd {f.fd}", "character device",
                         f"{f.link}: a device node other than {_ALLOWED[tuple(rdev)]} is not supported")
    return {"device": rdev, "path": _ALLOWED[tuple(rdev)], "flags": f.flags, "pos": f.pos}


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    try:
        fd = os.open(rec["path"], rec["flags"] & _OPEN_FLAGS_MASK | os.O_CLOEXEC)
    except OSError as err:
        raise RestoreConflict(f"cannot open {rec['path']}: {err.strerror}") from None
    ctx.keep(fd)
    st = os.fstat(fd)
    if [os.major(st.st_rdev), os.minor(st.st_rdev)] != rec["device"]:
        raise RestoreConflict(f"{rec['path']} is not the device it was at checkpoint time")
    return fd


CHAR_DEVICE = FileKind("char-device", _claims, _dump, _restore)
