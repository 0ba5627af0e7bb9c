"""Standard streams that lead outside the checkpointed tree (a terminal, a pipe to a parent
that will be gone). They are not part of the process's own state: at restore they are
connected to what the caller chooses (`restore --stdio inherit|null|PATH`)."""
from __future__ import annotations

import os
import stat
from typing import Any

from ..context import DumpContext, OpenFile, RestoreContext
from . import FileKind
from .tty import pty_index

_TTY_MAJORS = {4, 5} | set(range(136, 144))


def leads_outside(f: OpenFile, ctx: DumpContext) -> bool:
    mode = f.st.st_mode
    if stat.S_ISFIFO(mode) and f.link.startswith("pipe:"):
        return ctx.tree.pipe_ends.get(f.st.st_ino, set()) != {"r", "w"}
    if stat.S_ISCHR(mode) and os.major(f.st.st_rdev) in _TTY_MAJORS:
        if (os.major(f.st.st_rdev), os.minor(f.st.st_rdev)) == (5, 2):
            return False  # a pty master: the pty kind decides
        if os.major(f.st.st_rdev) >= 136:  # a pts: outside unless its master is in the tree
            return pty_index(f) not in ctx.tree.pty_masters
        return True
    return stat.S_ISSOCK(mode)


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.fd <= 2 and leads_outside(f, ctx)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    return {"stream": f.fd, "was": f.link}


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    return ctx.keep(ctx.stdio.open(rec["stream"]))


EXTERNAL = FileKind("external-stdio", _claims, _dump, _restore)
