"""What a resource module sees while dumping or restoring one process."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from . import procfs, syscalls
from .errors import Unsupported
from .fileid import FileIdentities
from .image import ImageReader, ImageWriter
from .inject import RemoteMemory, RemoteThread, Scratch
from .pagemap import PageScanner

Progress = Callable[[str, int, int], None]
"""Called as progress(phase, bytes_done, bytes_total) while an operation runs."""


def no_progress(phase: str, done: int, total: int) -> None:
    """The default progress callback: report nothing."""


State = TypeVar("State")


class KindStates:
    """Each resource kind's tree-wide state, private to it: a kind asks for its own by the
    class that holds it (which only its module knows), made on first use. One per dump and
    one per restore, so nothing a kind keeps outlives the operation."""

    def __init__(self) -> None:
        self._states: dict[type, Any] = {}

    def get(self, cls: type[State]) -> State:
        if cls not in self._states:
            self._states[cls] = cls()
        return self._states[cls]

    def clear(self) -> None:
        self._states.clear()


O_ACCMODE = 0o3
O_CLOEXEC = 0o2000000


@dataclass
class OpenFile:
    """One fd of a dumped process, as /proc shows it."""

    pid: int
    fd: int
    link: str  # readlink of /proc/PID/fd/N: a path, "pipe:[123]", "socket:[..]", "anon_inode:[..]"
    fdinfo: dict[str, Any]
    fdinfo_text: str
    st: os.stat_result

    @property
    def flags(self) -> int:
        return int(self.fdinfo["flags"], 8)

    @property
    def pos(self) -> int:
        return int(self.fdinfo.get("pos", "0"))

    @property
    def access(self) -> int:
        return self.flags & O_ACCMODE

    @property
    def cloexec(self) -> bool:
        return bool(self.flags & O_CLOEXEC)


@dataclass
class TreeIndex:
    """Facts about the whole frozen tree that single-fd decisions depend on, and each kind's
    own tree-wide state (state(): what it indexed, the objects it saved once for the tree)."""

    pids: set[int] = field(default_factory=set)
    zombies: set[int] = field(default_factory=set)  # exited children in the tree, not reaped
    progress: Progress = no_progress
    ns_depth: int = 0  # how deep the tree's PID namespace is below ours (0: ours)
    root: int = 0  # the tree's root, as we see it
    identities: FileIdentities = field(default_factory=FileIdentities)  # mapped files' facts
    tcp_close: bool = False  # connected TCP sockets may come back reset (dump(tcp_close=True))
    kill: bool = False  # the tree dies once dumped (dump(kill=True))
    on_end: list[Callable[[bool], None]] = field(default_factory=list)  # FrozenTree.on_end
    states: KindStates = field(default_factory=KindStates)

    def state(self, cls: type[State]) -> State:
        """The calling kind's own state for this dump (`cls`: its private state class)."""
        return self.states.get(cls)

    def inner(self, pid: int) -> int:
        """The id a process or thread has in the tree's own PID namespace (what it sees);
        0 for one outside that namespace (as getppid() reports a parent outside). A 0 from
        /proc (a session or group leader outside *our* namespace) stays 0."""
        if not self.ns_depth or not pid:
            return pid
        ids = ns_pids(pid)
        return ids[self.ns_depth] if len(ids) > self.ns_depth else 0

    def inner_own(self, pid: int, line: str, ours: int) -> int:
        """Like inner(), for `pid`'s own group or session (`line` NSpgid or NSsid; `ours`:
        the id we see), read from `pid` itself: a group or session outlives its leader,
        whose /proc entry may be gone."""
        if not self.ns_depth or not ours:
            return ours
        ids = ns_pids(pid, line)
        return ids[self.ns_depth] if len(ids) > self.ns_depth else 0
    _mountinfo: str | None = None
    _tmpfs: set[tuple[int, int]] | None = None
    _mount_namespaces: dict[str, bool] | None = None  # mount namespace -> mounts like ours

    def mountinfo(self) -> str:
        """/proc/ROOT/mountinfo, read once per checkpoint (the tree's mounts are like ours)."""
        if self._mountinfo is None:
            with open(f"/proc/{self.root}/mountinfo") as f:
                self._mountinfo = f.read()
        return self._mountinfo

    def mounts_like_ours(self, pid: int) -> bool:
        """Whether `pid`'s mount namespace is ours, or shows the same mounts apart from /proc
        (a copy restored in a PID namespace of its own, pidns.py): then the paths we record
        mean for it what they mean for us. Compared once per namespace."""
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
        if namespace == os.readlink("/proc/self/ns/mnt"):
            return True
        if self._mount_namespaces is None:
            self._mount_namespaces = {}
        if namespace not in self._mount_namespaces:
            with open(f"/proc/{pid}/mountinfo") as theirs, open("/proc/self/mountinfo") as ours:
                self._mount_namespaces[namespace] = \
                    procfs.mount_table(theirs.read()) == procfs.mount_table(ours.read())
        return self._mount_namespaces[namespace]

    def tmpfs_devices(self) -> set[tuple[int, int]]:
        """(major, minor) of the tmpfs file systems the tree sees."""
        if self._tmpfs is None:
            self._tmpfs = procfs.parse_tmpfs_devices(self.mountinfo())
        return self._tmpfs


@dataclass
class DumpContext:
    """What a resource module sees while dumping one process: the tree's index, and the
    process (its threads, held while it is dumped, its memory and scratch area)."""

    pid: int
    tree: TreeIndex
    leader: RemoteThread | None
    mem: RemoteMemory | None
    scratch: Scratch | None
    writer: ImageWriter | None  # None while only checking
    scanner: PageScanner | None = None  # None while only checking
    saved_masks: dict[int, int] = field(default_factory=dict)  # tid -> blocked signals
    precopy: Any = None  # precopy.PreCopy holding pages copied before the freeze, if any
    progress: Progress = no_progress
    pidfd: int = -1
    threads: list[RemoteThread] = field(default_factory=list)  # every thread, the leader first
    _dups: dict[int, int] = field(default_factory=dict)

    @property
    def tids(self) -> list[int]:
        return [t.tid for t in self.threads]

    def refuse(self, where: str, kind: str, why: str) -> Unsupported:
        return Unsupported(where, kind, why, pid=self.pid)

    def dup_of(self, fd: int) -> int:
        """Our own duplicate of the process's fd (same open file description)."""
        if fd not in self._dups:
            if self.pidfd < 0:
                self.pidfd = os.pidfd_open(self.pid)
            self._dups[fd] = syscalls.pidfd_getfd(self.pidfd, fd)
        return self._dups[fd]

    def add_blob(self, name: str, data: bytes) -> str | None:
        if self.writer is None:
            return None
        return self.writer.add_blob(name, data)

    def close(self) -> None:
        for fd in self._dups.values():
            os.close(fd)
        self._dups.clear()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


@dataclass
class StdioPolicy:
    """Where fds 0-2 go when they pointed outside the tree: "inherit", "null" or a path."""

    target: str = "inherit"

    def open(self, fd: int) -> int:
        if self.target == "inherit":
            return os.dup(fd)
        path = os.devnull if self.target == "null" else self.target
        mode = os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_APPEND
        return os.open(path, mode | os.O_CLOEXEC, 0o644)


class RestoreTree:
    """What the restore of the whole tree shares: the image, the caller's choices, the fds
    we hold (closed at the end) and each kind's own state (state(): the objects it made
    once for the tree)."""

    def __init__(self, image: ImageReader, stdio: StdioPolicy, rebind_listeners: bool = False,
                 progress: Progress = no_progress, in_user_ns: bool = False) -> None:
        self.image = image
        self.stdio = stdio
        self.rebind_listeners = rebind_listeners  # listening sockets take new ports (a copy beside its original)
        self.port_map: dict[int, int] = {}  # old port -> new port when rebound
        self.progress = progress
        self.in_user_ns = in_user_ns  # unprivileged (userns.py): no setgroups
        self.states = KindStates()
        self.own_fds: list[int] = []  # fds we opened, closed at the end
        self.lazy: Any = None  # lazy.PageServer when private anonymous memory is served on demand
        self.outer_pids: dict[int, int] = {}  # the tree's PIDs -> ours for them

    def keep(self, fd: int) -> int:
        self.own_fds.append(fd)
        return fd

    def state(self, cls: type[State]) -> State:
        """The calling kind's own state for this restore (`cls`: its private state class)."""
        return self.states.get(cls)


@dataclass
class RestoreContext:
    """What a resource module sees while restoring one process: the tree's restore, and
    the process (its main thread, memory and scratch area)."""

    pid: int
    tree: RestoreTree
    leader: RemoteThread
    mem: RemoteMemory
    scratch: Scratch
    ns_pid: int  # the PID the process sees for itself (pid, the one we see, differs in a new PID namespace)

    @property
    def image(self) -> ImageReader:
        return self.tree.image

    @property
    def stdio(self) -> StdioPolicy:
        return self.tree.stdio

    @property
    def rebind_listeners(self) -> bool:
        return self.tree.rebind_listeners

    @property
    def port_map(self) -> dict[int, int]:
        return self.tree.port_map

    @property
    def progress(self) -> Progress:
        return self.tree.progress

    @property
    def lazy(self) -> Any:
        return self.tree.lazy

    @property
    def outer_pids(self) -> dict[int, int]:
        return self.tree.outer_pids

    def keep(self, fd: int) -> int:
        return self.tree.keep(fd)

    def state(self, cls: type[State]) -> State:
        return self.tree.state(cls)


def ns_pids(pid: int, line: str = "NSpid") -> list[int]:
    """A task's ids from our PID namespace down to its own (the NSpid line, or NSpgid or
    NSsid for its group's and session's)."""
    with open(f"/proc/{pid}/status") as f:
        for text in f:
            if text.startswith(line + ":"):
                return [int(x) for x in text.split()[1:]]
    return [pid]


def list_open_files(pid: int) -> list[OpenFile]:
    files = []
    fd_dir = f"/proc/{pid}/fd"
    for name in sorted(os.listdir(fd_dir), key=int):
        try:
            link = os.readlink(f"{fd_dir}/{name}")
            text = open(f"/proc/{pid}/fdinfo/{name}").read()
            st = os.stat(f"{fd_dir}/{name}")
        except FileNotFoundError:
            continue  # closed while we looked: cannot happen while frozen, but be safe
        files.append(OpenFile(pid, int(name), link, procfs.parse_fdinfo(text), text, st))
    return files
