"""A minimal notebook kernel: runs cells of Python in one long-lived namespace.

    python demo/minikernel.py REQUESTS_FIFO REPLIES_FIFO

Each request is one JSON line {"code": "..."}; each reply is one JSON line
{"ok": true, "result": "<repr of the last expression or null>", "stdout": "..."} or
{"ok": false, "error": "<traceback>"}. Like a Jupyter kernel, the value of a cell is the
value of its last expression, and whatever the cell prints is returned with the reply.

It talks over two named FIFOs rather than sockets so that the checkpoint engine can save
and restore the channel (named FIFOs are in its resource table; sockets are not yet). Both
are opened read-write: such an open never blocks, and a reader never sees end-of-file when
the other side closes or is restarted.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import sys
import traceback


def run_cell(code: str, namespace: dict) -> dict:
    out = io.StringIO()
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        with contextlib.redirect_stdout(out):
            exec(compile(tree, "<cell>", "exec"), namespace)
            value = None
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
    except BaseException:  # a cell may raise anything, even SystemExit; the kernel lives on
        return {"ok": False, "error": traceback.format_exc(), "stdout": out.getvalue()}
    return {"ok": True, "result": None if value is None else repr(value), "stdout": out.getvalue()}


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(requests: int, replies: int) -> None:
    namespace: dict = {"__name__": "__main__"}
    pending = b""
    while True:
        chunk = os.read(requests, 1 << 16)  # blocks here between cells
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            reply = run_cell(json.loads(line)["code"], namespace)
            write_all(replies, json.dumps(reply).encode() + b"\n")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    requests = os.open(sys.argv[1], os.O_RDWR | os.O_CLOEXEC)
    replies = os.open(sys.argv[2], os.O_RDWR | os.O_CLOEXEC)
    serve(requests, replies)


if __name__ == "__main__":
    main()
