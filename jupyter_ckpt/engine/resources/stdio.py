"""Standard streams that lead outside the checkpointed tree (a terminal, a pipe to a parent
that will be gone). They are not part of the process's own state: at restore they are
connected to what the caller chooses (`restore --stdio inherit|null|PATH`).

A program may keep a copy of a stream it was given at another fd (ipykernel does, at fds
like 41 and 44, before it captures fds 1 and 2 for the notebook): an fd leading outside is
such a copy when it is the same open file description as fd 0, 1 or 2 of the tree's
launcher (the root's parent) or of us (a Jupyter server checkpointing its kernel), and it
is then treated as that stream.
"""
from __future__ import annotations

import os
import stat
from typing import Any

from .. import procfs, syscalls
from ..context import DumpContext, OpenFile, RestoreContext
from .kind import FileKind
from .pipes import ends_in_tree
from .tty import master_in_tree, pty_index

_TTY_MAJORS = {4, 5} | set(range(136, 144))


def leads_outside(f: OpenFile, ctx: DumpContext) -> bool:
    mode = f.st.st_mode
    if stat.S_ISFIFO(mode) and f.link.startswith("pipe:"):
        return ends_in_tree(ctx.tree, f.st.st_ino) != {"r", "w"}
    if stat.S_ISCHR(mode) and os.major(f.st.st_rdev) in _TTY_MAJORS:
        if (os.major(f.st.st_rdev), os.minor(f.st.st_rdev)) == (5, 2):
            return False  # a pty master: the pty kind decides
        if os.major(f.st.st_rdev) >= 136:  # a pts: outside unless its master is in the tree
            return not master_in_tree(ctx.tree, pty_index(f))
        return True
    return stat.S_ISSOCK(mode)


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return leads_outside(f, ctx) and (f.fd <= 2 or _copied_stream(f, ctx) is not None)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    return {"stream": f.fd if f.fd <= 2 else _copied_stream(f, ctx), "was": f.link}


def _copied_stream(f: OpenFile, ctx: DumpContext) -> int | None:
    """The standard stream (0-2) of the launcher or of us that this fd is a copy of."""
    launcher = int(procfs.read_stat(ctx.tree.root)[4])
    for holder in (launcher, os.getpid()):
        if not holder or holder in ctx.tree.pids:
            continue
        for stream in range(3):
            try:
                if syscalls.kcmp(f.pid, holder, syscalls.KCMP_FILE, f.fd, stream) == 0:
                    return stream
            except OSError:
                continue  # no such fd there, or not ours to compare
    return None


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    return ctx.keep(ctx.stdio.open(rec["stream"]))


EXTERNAL = FileKind("external-stdio", _claims, _dump, _restore)
