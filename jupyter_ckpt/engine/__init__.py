"""Generic Linux process checkpoint/restore. Knows nothing of Jupyter.

    check(pid)            -> list of Blockers (empty: the tree can be dumped)
    dump(pid, dir, kill)  -> stats of the image written to dir
    restore(dir, stdio)   -> Restored(pid) running the same process again
    summarize(dir)        -> what an image holds
"""
from .dump import check, dump
from .errors import Blocker, CkptError, ImageError, Refused, RestoreConflict, Unsupported
from .summary import summarize
from .restore import Restored, restore

__all__ = ["check", "dump", "restore", "summarize", "Restored", "Blocker", "CkptError",
           "ImageError", "Refused", "RestoreConflict", "Unsupported"]
