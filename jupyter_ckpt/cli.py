"""`jupyter-ckpt` command line: dump, restore, check, inspect, snapshots."""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the store is imported only by the commands that use it
    from .snapshots_api import Snapshots

from . import __version__


class _Parser(argparse.ArgumentParser):
    """Usage errors too are one line on stderr (subcommand parsers inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


_TCP_CLOSE_HELP = ("let connected TCP sockets come back reset, so their peers see a disconnect "
                   "(default: restore established connections exactly, refuse the rest)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jupyter-ckpt", description="Checkpoint and restore live processes.")
    p.add_argument("--version", action="version", version=f"jupyter-ckpt {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log what happens on stderr (-v: steps, -vv: every injected system "
                        "call and page run too)")
    p.add_argument("--log-file", metavar="PATH",
                   help="append the full log (every step and injected system call) to PATH")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dump", help="checkpoint the process tree rooted at PID into DIR")
    d.add_argument("pid", type=int)
    d.add_argument("dir")
    d.add_argument("--kill", action="store_true", help="end the tree after a successful dump")
    d.add_argument("--parent", metavar="PREVDIR",
                   help="store only memory that differs from the earlier image PREVDIR "
                        "(which must stay where it is: DIR refers to it)")
    d.add_argument("--portable", action="store_true",
                   help="also store every executable and library the tree maps, for hosts "
                        "where they are missing or other builds")
    d.add_argument("--no-precopy", action="store_true",
                   help="copy all memory while frozen (default: copy it first, freeze only for "
                        "what changed meanwhile)")
    d.add_argument("--tcp-close", action="store_true", help=_TCP_CLOSE_HELP)

    r = sub.add_parser("restore", help="bring back the processes saved in DIR")
    r.add_argument("dir")
    _add_restore_options(r)

    c = sub.add_parser("check", help="can PID's tree be checkpointed? lists what blocks it")
    c.add_argument("pid", type=int)
    c.add_argument("--tcp-close", action="store_true", help=_TCP_CLOSE_HELP)

    sub.add_parser("config", help="the Jupyter server extension's settings "
                                  "(c.CheckpointConfig.*): each with its help and the value a "
                                  "server started here would use")

    k = sub.add_parser("kernelspec", help="manage the 'Python 3 (checkpointable)' kernelspec")
    k.add_argument("action", choices=["install"])
    k.add_argument("--user", action="store_true", help="install for this user only")
    k.add_argument("--prefix", help="install under this prefix (e.g. sys.prefix)")
    k.add_argument("--name", default="python3-ckpt")

    i = sub.add_parser("inspect", help="show what an image holds")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    i.add_argument("--host", action="store_true",
                   help="instead: could it be restored on this host? one line per difference, "
                        "exit status 1 if any stops the restore")
    _add_snapshots_parser(sub)
    return p


def _add_restore_options(r: argparse.ArgumentParser) -> None:
    r.add_argument("--detach", action="store_true",
                   help="return once the tree runs, printing the root PID last")
    r.add_argument("--stdio", default="inherit", metavar="inherit|null|PATH",
                   help="where fds 0-2 go if they led outside the tree (default: inherit ours)")
    r.add_argument("--allow-foreign-owner", action="store_true",
                   help="(root only) restore an image that another user made. WARNING: the "
                        "processes get back that user's credentials and capabilities, and run "
                        "whatever the image describes: use it only for images you trust as "
                        "much as code you would run as root")
    r.add_argument("--pid-ns", action="store_true", default=None,
                   help="restore into a new PID namespace (automatic when a PID is taken)")
    r.add_argument("--lazy", action="store_true",
                   help="let the tree run before its large anonymous memory is in: pages are "
                        "copied in on demand and in the background (needs CAP_SYS_PTRACE); "
                        "with --detach, return once all are in")


def _add_snapshots_parser(sub) -> None:
    """`snapshots VERB ...`: the snapshot store, local or in an S3-compatible bucket."""
    store = _Parser(add_help=False)
    store.add_argument("--store", metavar="URL",
                       help="a directory or s3://BUCKET/PREFIX (default: $JUPYTER_CKPT_STORE, "
                            "else the Jupyter server's store)")
    s = sub.add_parser("snapshots", help="list, store, fetch and restore stored snapshots")
    verbs = s.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    ls = verbs.add_parser("ls", parents=[store], help="list snapshots, newest first")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--trashed", action="store_true",
                    help="list the deleted snapshots that are still in the trash instead")
    put = verbs.add_parser("put", parents=[store], help="store the image DIR; prints its id")
    put.add_argument("dir")
    put.add_argument("--label", default="")
    get = verbs.add_parser("get", parents=[store], help="write snapshot ID as the image DIR")
    get.add_argument("id")
    get.add_argument("dir")
    rs = verbs.add_parser("restore", parents=[store],
                          help="check out snapshot ID to a scratch directory and restore it")
    rs.add_argument("id")
    _add_restore_options(rs)
    rm = verbs.add_parser("rm", parents=[store],
                          help="delete snapshot ID: into the trash, as the Jupyter server does "
                               "(undelete takes it back; gc deletes it for good later)")
    rm.add_argument("id")
    rm.add_argument("--now", action="store_true",
                    help="delete it for good at once (in the trash or not), with its notebook")
    ud = verbs.add_parser("undelete", parents=[store], help="take snapshot ID out of the trash")
    ud.add_argument("id")
    gc = verbs.add_parser("gc", parents=[store],
                          help="delete for good what has been in the trash long enough, then "
                               "remove what no snapshot uses")
    gc.add_argument("--trash-seconds", type=float, default=None, metavar="S",
                    help="how long a deleted snapshot stays in the trash (default: as the "
                         "Jupyter server's CheckpointConfig.trash_seconds default, 600)")
    ck = verbs.add_parser("check", parents=[store],
                          help="could snapshot ID be restored on this host? (as inspect --host)")
    ck.add_argument("id")
    v = verbs.add_parser("verify", parents=[store], help="read and check every chunk of ID")
    v.add_argument("id")
    cp = verbs.add_parser("copy", parents=[store], help="copy snapshot ID to another store")
    cp.add_argument("id")
    cp.add_argument("--to", required=True, metavar="URL")


class _ProgressBar:
    """Engine progress on a terminal: one bar per phase, bytes where the phase has them.
    Silent when stderr is not a terminal, so scripts still see one line per outcome."""

    def __init__(self) -> None:
        self.bar = None
        self.phase = None
        self.enabled = sys.stderr.isatty()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = tqdm(total=total or None, desc=phase, unit="B", unit_scale=True,
                            leave=False, file=sys.stderr)
        if self.bar is not None and total:
            self.bar.total = total
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _report_pages(restored) -> None:
    """Lazy restore: wait until every page is in; one line on how they came."""
    stats = restored.wait_pages()
    if stats is not None:
        print(f"lazy restore: all memory in ({stats.pages_on_demand} pages on demand, "
              f"{stats.bytes_background} bytes in the background, {stats.zero_pages} zero pages, "
              f"{stats.processes} address spaces)", file=sys.stderr)


def _restore(image: Any, args: argparse.Namespace) -> int:
    """Restore `image` (a directory, or a snapshot opened in a store) with the options of
    `restore`; its exit status."""
    restore = _engine("restore")
    bar = _ProgressBar()
    if args.lazy:  # die the way that still lets the page server finish (see below)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        restored = restore(image, stdio=args.stdio, allow_foreign_owner=args.allow_foreign_owner,
                           pid_ns=args.pid_ns, progress=bar, lazy=args.lazy)
    finally:
        bar.close()
    if restored.in_new_pid_namespace:
        print(f"restored in a new PID namespace: pid {restored.ns_pid} inside is "
              f"pid {restored.pid} here", file=sys.stderr)
    for warning in restored.warnings:
        print(f"jupyter-ckpt: warning: {warning}", file=sys.stderr)
    if args.detach:
        print(restored.pid, flush=True)
        _report_pages(restored)  # we serve the memory: not gone before it is all in
        return 0
    status = restored.wait()
    _report_pages(restored)
    return status


def _transfer_bar(desc: str):
    """A progress(done, total) callback drawing a byte bar on a terminal (None otherwise),
    and the function that closes it."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="B", unit_scale=True, leave=False, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return progress, bar.close


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _checkout(snapshots: "Snapshots", snapshot_id: str, image: str) -> str:
    """Write snapshot `snapshot_id` as the image directory `image` (a progress bar on a
    terminal); `image`."""
    progress, close = _transfer_bar("get")
    try:
        snapshots.checkout(snapshot_id, image, progress=progress)
    finally:
        close()
    return image


def _snapshots(args: argparse.Namespace) -> int:
    """The `snapshots` verbs, over snapshots_api (as the Jupyter server's REST API is). Their
    errors become one line (by main) and exit status 1."""
    import shutil
    import tempfile
    import time

    from .snapshots_api import TRASH_SECONDS, Snapshots
    from .store import open_store

    snapshots = Snapshots(open_store(args.store))
    if args.verb == "ls":
        listed = snapshots.list(trashed=args.trashed)
        if args.json:
            print(json.dumps([{**s.info.to_dict(), "deleted": s.deleted,
                               **({"label": s.label} if s.label is not None else {})}
                              for s in listed], indent=1))
            return 0
        for s in listed:
            i = s.info
            what = i.metadata.get("notebook_path") or i.metadata.get("kernel_id") or ""
            deleted = "" if s.deleted is None else \
                time.strftime("deleted %Y-%m-%dT%H:%M:%S", time.gmtime(s.deleted))
            print(f"{i.id}  {i.created[:19]}  {_size(i.logical_bytes):>10}  "
                  f"{_size(i.stored_bytes):>10} stored  " +
                  "  ".join(x for x in (i.label if s.label is None else s.label, what, deleted) if x))
    elif args.verb == "put":
        progress, close = _transfer_bar("put")
        try:
            snapshot = snapshots.put(args.dir, label=args.label, progress=progress)
        finally:
            close()
        print(snapshot.id)
    elif args.verb == "get":
        _checkout(snapshots, args.id, args.dir)
    elif args.verb == "restore":
        from .engine import capabilities

        if capabilities()["direct"]:  # straight from the store's chunks (lazily with --lazy)
            image = snapshots.open_image(args.id)
            try:
                return _restore(image, args)
            finally:
                image.close()
        scratch = tempfile.mkdtemp(prefix="jupyter-ckpt-restore-")  # restored by a helper
        try:
            return _restore(_checkout(snapshots, args.id, os.path.join(scratch, "image")), args)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    elif args.verb == "rm" and args.now:
        print(f"deleted {args.id}: {_size(snapshots.delete_now(args.id))} freed")
    elif args.verb == "rm":
        snapshots.delete(args.id)
        print(f"moved {args.id} to the trash ('jupyter-ckpt snapshots undelete {args.id}' "
              "takes it back)")
    elif args.verb == "undelete":
        print(f"undeleted {snapshots.undelete(args.id).id}")
    elif args.verb == "gc":
        collected = snapshots.gc(TRASH_SECONDS if args.trash_seconds is None
                                 else args.trash_seconds)
        for snapshot_id in collected.purged:
            print(f"purged {snapshot_id} from the trash")
        print(f"gc: {_size(collected.freed)} freed")
    elif args.verb == "check":
        return _print_verdict(snapshots.check(args.id).differences)
    elif args.verb == "verify":
        snapshots.get(args.id)
        info = snapshots.store.verify(args.id)
        print(f"{info.id}: every chunk intact ({_size(info.logical_bytes)})")
    elif args.verb == "copy":
        info = snapshots.get(args.id).info
        notebook = snapshots.notebook(info.id) if info.metadata.get("has_notebook") else None
        target = Snapshots(open_store(args.to))
        scratch = tempfile.mkdtemp(prefix="jupyter-ckpt-copy-")
        try:
            image = _checkout(snapshots, info.id, os.path.join(scratch, "image"))
            progress, close = _transfer_bar("put")
            try:
                copied = target.put(image, info.metadata, label=info.label,
                                    snapshot_id=info.id, progress=progress, notebook=notebook)
            finally:
                close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print(f"copied {info.id} to {args.to}: {_size(copied.info.new_bytes)} new there")
    return 0


def _print_verdict(differences: list) -> int:
    """The host verdict (engine/hostcheck.py): one line per difference; 1 if any is fatal."""
    from .engine.hostcheck import fatal

    for difference in differences:
        print(difference)
    if fatal(differences):
        print("cannot be restored on this host")
        return 1
    print("can be restored on this host" + (" (differences above)" if differences else ""))
    return 0


def _setup_logging(verbose: int, log_file: str | None) -> None:
    """The engine logs per module (logging.getLogger(__name__)); by default only warnings
    reach stderr, which keeps each outcome one line."""
    root = logging.getLogger("jupyter_ckpt")
    root.setLevel(logging.DEBUG if verbose > 1 or log_file else
                  logging.INFO if verbose else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    stderr.setFormatter(fmt if verbose else logging.Formatter("jupyter-ckpt: %(message)s"))
    root.addHandler(stderr)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose, args.log_file)
    from .engine.errors import CkptError  # (each command imports only what it uses)

    try:
        if args.command == "dump":
            dump = _engine("dump")
            bar = _ProgressBar()
            try:
                stats = dump(args.pid, args.dir, kill=args.kill, precopy=not args.no_precopy,
                             parent=args.parent, progress=bar, portable=args.portable,
                             tcp_close=args.tcp_close)
            finally:
                bar.close()
            print(f"dumped pid {args.pid} to {args.dir}: {stats['bytes_written']} bytes, "
                  f"frozen {stats['freeze_ms']} ms")
        elif args.command == "restore":
            return _restore(args.dir, args)
        elif args.command == "snapshots":
            return _snapshots(args)
        elif args.command == "check":
            check = _engine("check")
            blockers = check(args.pid, tcp_close=args.tcp_close)
            for b in blockers:
                print(b)
            if not blockers:
                print(f"pid {args.pid}: can be checkpointed")
            return 1 if blockers else 0
        elif args.command == "config":
            from .jupyter.config import describe

            print(describe())
        elif args.command == "kernelspec":
            from .jupyter.kernelspec import install

            print(f"installed kernelspec {args.name} in "
                  f"{install(args.name, user=args.user, prefix=args.prefix)}")
        elif args.command == "inspect" and args.host:
            from .engine.hostcheck import verdict
            from .engine.image import ImageReader

            return _print_verdict(verdict(ImageReader(args.dir, verify_blobs=False).manifest))
        elif args.command == "inspect":
            from .engine import summarize
            from .engine.summary import render

            summary = summarize(args.dir)
            print(json.dumps(summary, indent=1) if args.json else render(summary))
    except Exception as err:
        if not isinstance(err, (CkptError, *_store_errors())):
            if isinstance(err, OSError):
                print(f"jupyter-ckpt: {err.strerror or err}{': ' + err.filename if err.filename else ''}",
                      file=sys.stderr)
                return 1
            raise
        print(f"jupyter-ckpt: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _engine(name: str) -> Any:
    """engine.NAME, imported with the cyclic garbage collector paused: importing the engine
    makes tens of thousands of objects and no garbage, and the collections it set off cost a
    small dump or restore about 7 ms, 5% of the command."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return getattr(importlib.import_module(".engine", __package__), name)
    finally:
        if paused:
            gc.enable()


def _store_errors() -> tuple[type[Exception], ...]:
    """The error classes of the store and of snapshots_api if a command loaded them (dump
    and restore do not: their imports cost more than a small dump itself)."""
    found = []
    for module, name in (("store", "StoreError"), ("snapshots_api", "SnapshotError")):
        loaded = sys.modules.get(f"{__package__}.{module}")
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


if __name__ == "__main__":
    sys.exit(main())
