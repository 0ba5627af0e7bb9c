"""`jupyter-ckpt` command line: dump, restore, check, inspect."""
from __future__ import annotations

import argparse
import json
import signal
import sys

from . import __version__


class _Parser(argparse.ArgumentParser):
    """Usage errors too are one line on stderr (subcommand parsers inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


_TCP_CLOSE_HELP = ("let connected TCP sockets come back reset, so their peers see a disconnect "
                   "(default: refuse them)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jupyter-ckpt", description="Checkpoint and restore live processes.")
    p.add_argument("--version", action="version", version=f"jupyter-ckpt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dump", help="checkpoint the process tree rooted at PID into DIR")
    d.add_argument("pid", type=int)
    d.add_argument("dir")
    d.add_argument("--kill", action="store_true", help="end the tree after a successful dump")
    d.add_argument("--parent", metavar="PREVDIR",
                   help="store only memory that differs from the earlier image PREVDIR "
                        "(which must stay where it is: DIR refers to it)")
    d.add_argument("--no-precopy", action="store_true",
                   help="copy all memory while frozen (default: copy it first, freeze only for "
                        "what changed meanwhile)")
    d.add_argument("--tcp-close", action="store_true", help=_TCP_CLOSE_HELP)

    r = sub.add_parser("restore", help="bring back the processes saved in DIR")
    r.add_argument("dir")
    r.add_argument("--detach", action="store_true",
                   help="return once the tree runs, printing the root PID last")
    r.add_argument("--stdio", default="inherit", metavar="inherit|null|PATH",
                   help="where fds 0-2 go if they led outside the tree (default: inherit ours)")
    r.add_argument("--allow-foreign-owner", action="store_true",
                   help="(root only) restore an image that another user made")
    r.add_argument("--pid-ns", action="store_true", default=None,
                   help="restore into a new PID namespace (automatic when a PID is taken)")
    r.add_argument("--lazy", action="store_true",
                   help="let the tree run before its large anonymous memory is in: pages are "
                        "copied in on demand and in the background (needs CAP_SYS_PTRACE); "
                        "with --detach, return once all are in")

    c = sub.add_parser("check", help="can PID's tree be checkpointed? lists what blocks it")
    c.add_argument("pid", type=int)
    c.add_argument("--tcp-close", action="store_true", help=_TCP_CLOSE_HELP)

    k = sub.add_parser("kernelspec", help="manage the 'Python 3 (checkpointable)' kernelspec")
    k.add_argument("action", choices=["install"])
    k.add_argument("--user", action="store_true", help="install for this user only")
    k.add_argument("--prefix", help="install under this prefix (e.g. sys.prefix)")
    k.add_argument("--name", default="python3-ckpt")

    i = sub.add_parser("inspect", help="show what an image holds")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    return p


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .engine import CkptError, check, dump, restore, summarize
    from .engine.summary import render

    try:
        if args.command == "dump":
            bar = _ProgressBar()
            try:
                stats = dump(args.pid, args.dir, kill=args.kill, precopy=not args.no_precopy,
                             parent=args.parent, progress=bar, tcp_close=args.tcp_close)
            finally:
                bar.close()
            print(f"dumped pid {args.pid} to {args.dir}: {stats['bytes_written']} bytes, "
                  f"frozen {stats['freeze_ms']} ms")
        elif args.command == "restore":
            bar = _ProgressBar()
            if args.lazy:  # die the way that still lets the page server finish (see below)
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
            try:
                restored = restore(args.dir, stdio=args.stdio, allow_foreign_owner=args.allow_foreign_owner,
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
        elif args.command == "check":
            blockers = check(args.pid, tcp_close=args.tcp_close)
            for b in blockers:
                print(b)
            if not blockers:
                print(f"pid {args.pid}: can be checkpointed")
            return 1 if blockers else 0
        elif args.command == "kernelspec":
            from .jupyter.kernelspec import install

            print(f"installed kernelspec {args.name} in "
                  f"{install(args.name, user=args.user, prefix=args.prefix)}")
        elif args.command == "inspect":
            summary = summarize(args.dir)
            print(json.dumps(summary, indent=1) if args.json else render(summary))
    except CkptError as err:
        print(f"jupyter-ckpt: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"jupyter-ckpt: {err.strerror or err}{': ' + err.filename if err.filename else ''}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
