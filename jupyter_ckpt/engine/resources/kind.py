"""What a file-descriptor kind provides. A module of its own, so that the kinds import it
without importing the table (resources/__init__.py) that imports them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..context import DumpContext, OpenFile, RestoreContext


@dataclass(frozen=True)
class FileKind:
    name: str
    claims: Callable[[OpenFile, DumpContext], bool]
    dump: Callable[[OpenFile, DumpContext], dict[str, Any]]
    restore: Callable[[dict[str, Any], RestoreContext], int]
    # Runs inside the restored process once every fd is at its number (e.g. epoll_ctl);
    # gets the record and one fd number of this description in the restored process.
    after_install: Callable[[dict[str, Any], RestoreContext, int], None] | None = None
