"""Generic Linux process checkpoint/restore. Knows nothing of Jupyter.

    check(pid)            -> list of Blockers (empty: the tree can be dumped)
    dump(pid, dir, ...)   -> stats of the image written to dir
    restore(dir, ...)     -> Restored(pid) running the same process again
                             (lazy=True: Restored.wait_pages() -> LazyStats once memory is in;
                             dir may be an image already open, e.g. a snapshot store's)
    capabilities()        -> whether restore() may take an open image, and restore lazily
    summarize(dir)        -> what an image holds

Names are imported on first use, so that e.g. the image format (engine.image) can be used
without loading the ptrace machinery.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "check": "dumper", "dump": "dumper", "restore": "restorer", "Restored": "restorer",
    "capabilities": "restorer",
    "LazyStats": "lazy",
    "summarize": "summary", "Blocker": "errors", "CkptError": "errors", "ImageError": "errors",
    "Refused": "errors", "RestoreConflict": "errors", "Unsupported": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    source = _EXPORTS[name]
    module = importlib.import_module(f".{source}", __name__)
    for export, where in _EXPORTS.items():
        if where == source:
            globals()[export] = getattr(module, export)
    return globals()[name]
