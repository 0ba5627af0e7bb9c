"""Fault injection: `JUPYTER_CKPT_FAULT=<point>` makes a dump or restore fail at that named
point, so tests can check that every failure rolls back (the original runs on unharmed, no
image and no process is left); `<point>:hang` makes it stop there until killed, as a hung
one would, and `<point>:slow` makes it pause there for SLOW_SECONDS, as on a loaded machine,
then go on. Every phase boundary calls `point()`, which also logs it.
"""
from __future__ import annotations

import logging
import os
import time

from .errors import CkptError

log = logging.getLogger(__name__)

ENV = "JUPYTER_CKPT_FAULT"
DUMP_POINTS = (
    "dump.precopy-userfaultfd",  # the pre-copy userfaultfd exists in the target, not yet ours
    "dump.during-precopy",  # in a pre-copy thread, after a process's first round
    "dump.after-precopy",  # memory copied while the tree ran, write tracking still on
    "dump.after-freeze",  # every thread seized and stopped
    "dump.after-memory",  # state and memory collected, the tree still stopped
    "dump.before-commit",  # the tree runs again (or waits to be killed), the image is complete
)
RESTORE_POINTS = (
    "restore.after-seed",  # every process of the tree exists as a stopped seed
    "restore.after-memory",  # the root's address space is rebuilt
    "restore.after-files",  # its fds are at their numbers
    "restore.after-threads",  # its threads exist
    "restore.before-release",  # every process is rebuilt, none runs yet
)
POINTS = DUMP_POINTS + RESTORE_POINTS
SLOW_SECONDS = 3.0


class InjectedFault(CkptError):
    """The failure asked for by JUPYTER_CKPT_FAULT."""


def point(name: str, logger: logging.Logger = log) -> None:
    """Mark reaching phase `name` (logged at DEBUG on the caller's `logger`); fail here if
    JUPYTER_CKPT_FAULT names it."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name}")
    logger.debug("phase %s", name)
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    where, _, how = wanted.partition(":")
    if where not in POINTS or how not in ("", "hang", "slow"):
        raise CkptError(f"{ENV}={wanted} names no fault point (known: {', '.join(POINTS)}, "
                        "each optionally followed by ':hang' or ':slow')")
    if where != name:
        return
    if how == "hang":
        logger.debug("hanging at %s until killed (%s)", name, ENV)
        while True:
            time.sleep(3600)
    if how == "slow":
        logger.debug("pausing %s s at %s (%s)", SLOW_SECONDS, name, ENV)
        time.sleep(SLOW_SECONDS)
        return
    raise InjectedFault(f"fault injected at {name} ({ENV})")
