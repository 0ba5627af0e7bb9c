"""The protocol every resource kind implements: a name and the phases it takes part in.
A module of its own, so that the kinds import it without importing the table
(resources/__init__.py) that imports them.

Every phase is optional; the engine runs each phase over the whole table, in the table's
order (docs/design.md, "The resource protocol"):

dump   index         every process and open file of the frozen tree, before any is dumped
       dump_process  one process, its threads held in injected calls: its part of the record
       dump_memory   one process, its threads put back: its part of the record
       check         the whole tree's records: refusals no single process shows
       dump_section  the tree-wide manifest section the kind owns (`section`: objects saved once)
restore verify       the image, before anything is made (conflicts with this host)
       before_fork   each seed, right after its setsid(), before its children fork
       seeded        each seed, once every process exists in its group and session
       finish        every process rebuilt, none running: still undone on failure
       release       the restore succeeded, the tree is about to run: what cannot be undone

A file-descriptor kind (FileKind) also claims, dumps and restores single open files.
Rebuilding one process in its seed is the restorer's own named list of phases
(restorer._PROCESS_PHASES: memory, fds, attributes, signals, threads, timers, credentials),
which calls the per-process kinds' restore functions in the order their dependencies fix
and each fd kind's restore and after_install.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any, Callable

from ..context import DumpContext, OpenFile, RestoreContext, RestoreTree, TreeIndex
from ..errors import Blocker
from ..image import ImageReader
from ..inject import RemoteThread


@dataclass(frozen=True)
class Resource:
    """One kind of state: its name, the parts of the image it owns, and its phase hooks."""

    name: str
    _: KW_ONLY
    record: str | None = None  # its key in each process's record (dump_process, dump_memory)
    empty: Callable[[], Any] = dict  # that part of the record when the kind refused the process
    section: str | None = None  # the tree-wide manifest section it owns
    index: Callable[[TreeIndex, int, list[OpenFile]], None] | None = None
    dump_process: Callable[[DumpContext], Any] | None = None
    dump_memory: Callable[[DumpContext], Any] | None = None
    check: Callable[[TreeIndex, list[dict[str, Any]]], list[Blocker]] | None = None
    dump_section: Callable[[TreeIndex], dict[str, Any]] | None = None
    verify: Callable[[ImageReader], None] | None = None
    # (the seed, the process's record)
    before_fork: Callable[[RestoreTree, RemoteThread, dict[str, Any]], None] | None = None
    seeded: Callable[[RestoreTree, RemoteThread, dict[str, Any]], None] | None = None
    finish: Callable[[RestoreTree], None] | None = None
    release: Callable[[dict[str, Any]], None] | None = None  # (the manifest)


@dataclass(frozen=True)
class FileKind(Resource):
    """A kind of open file description; `name` is its records' `kind` in the image."""

    claims: Callable[[OpenFile, DumpContext], bool]
    dump: Callable[[OpenFile, DumpContext], dict[str, Any]]
    restore: Callable[[dict[str, Any], RestoreContext], int]
    # Runs inside the restored process once every fd is at its number (e.g. epoll_ctl);
    # gets the record and one fd number of this description in the restored process.
    after_install: Callable[[dict[str, Any], RestoreContext, int], None] | None = None
