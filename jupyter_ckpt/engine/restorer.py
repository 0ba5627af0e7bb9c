"""Restore: recreate each process with its exact PID from a "seed" (a fork of the restorer
made with clone3(set_tid)), then rebuild its address space, files, threads and signals by
syscalls injected into it, and finally let it go exactly where it was stopped.

Files are built here in the restorer with ordinary calls (open, pipe, ...) and handed to the
seed over a unix socket (SCM_RIGHTS), then moved to their recorded numbers. If any step fails
the seed is killed: a restore either completes or leaves nothing behind.

The restore's phases, each logged (-v) as it starts, run every kind's hook of that name
(resources/kind.py) in the table's order: verify (before anything is made), seed (every
process as a stopped seed: before_fork, seeded), then each process in turn (the phases of
_PROCESS_PHASES, which name a failure: "pid 123: thread 125: <phase>: ..."), finish (every
process rebuilt, none running; a failure still rolls everything back) and release (what
cannot be undone, then the tree runs). Fault points (faults.py) sit between phases.
"""
from __future__ import annotations

import array
import errno
import logging
import os
import resource
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import arch, faults, hostcheck, procfs, ptrace_ext, syscalls, userns
from .context import Progress, RestoreContext, RestoreTree, StdioPolicy, no_progress
from .errors import CkptError, ImageError, RestoreConflict
from .image import ImageReader
from .inject import RemoteMemory, RemoteThread, Scratch, syscall_gadget
from .pidns import PidNamespace, kill_and_reap
from .resources import RESOURCES, kind_named, memory, posix_timers, process, shmem, signals, threads

if TYPE_CHECKING:  # loaded by a lazy restore only
    from .lazy import LazyStats, PageServer

SCRATCH_SIZE = 256 * 1024
SEED_OPTIONS = (ptrace_ext.O_TRACESYSGOOD | ptrace_ext.O_TRACECLONE | ptrace_ext.O_TRACEFORK
                | ptrace_ext.O_EXITKILL)
_MAX_FDS_PER_MESSAGE = 250
_MSGHDR = struct.Struct("<QI4xQQQQi4x")
_CMSG_HEADER = struct.Struct("<Qii")
F_DUPFD = 0
O_CLOEXEC = 0o2000000
_UINT_MAX = 0xFFFFFFFF
_CAP_SYS_PTRACE = 19
log = logging.getLogger(__name__)


@dataclass
class Restored:
    pid: int  # the root's PID as we (and the caller) see it
    ns_pid: int  # the root's PID as it sees itself (the original one)
    waiter: int  # our child whose end reports the root's end (the root, or its parent in a new PID ns)
    port_map: dict[int, int] = field(default_factory=dict)  # listening port -> new port, if rebound
    pages: PageServer | None = field(default=None, repr=False)  # lazy restore: serves memory
    warnings: list[str] = field(default_factory=list)  # what the caller should tell the user

    @property
    def in_new_pid_namespace(self) -> bool:
        return self.pid != self.ns_pid

    def wait(self) -> int:
        """Wait for the restored root to end; its exit status as a shell would report it."""
        _, status = os.waitpid(self.waiter, 0)
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)

    def wait_pages(self, timeout: float | None = None) -> LazyStats | None:
        """Lazy restore: block until every page is in the restored processes (None when the
        restore was not lazy). Raises CkptError if serving memory failed: the restored
        processes were then killed. TimeoutError if `timeout` passed first."""
        return self.pages.wait(timeout) if self.pages is not None else None


def load(path: "str | ImageReader", allow_foreign_owner: bool = False) -> ImageReader:
    """Open and fully verify an image, and check it may and can be restored here. `path` may
    also be an image already open: anything that reads like an ImageReader (a snapshot
    store's, which checks each chunk as it is read), its manifest already checked."""
    image = ImageReader(path) if isinstance(path, str) else path
    owner = image.manifest["owner_uid"]
    if owner != os.getuid() or image.owner != os.getuid():
        if os.getuid() != 0 or not allow_foreign_owner:
            foreign = owner if owner != os.getuid() else image.owner  # the one that is not us
            raise ImageError(f"{image.path} belongs to uid {foreign}, not to you (uid {os.getuid()}); "
                             "root may restore it with --allow-foreign-owner")
    problems = hostcheck.fatal(hostcheck.verdict(image.manifest, allow_foreign_owner))
    if problems:
        raise RestoreConflict("cannot restore on this host: " + "; ".join(problems))
    return image


def capabilities() -> dict[str, bool]:
    """What restore() can do for this process: take an image already open ("direct", not
    only a directory: restoring in a helper process needs a path) and restore lazily."""
    direct = userns.may_choose_pids()
    return {"direct": direct, "lazy": direct and procfs.has_capability(_CAP_SYS_PTRACE)}


def restore(path: "str | ImageReader", stdio: str = "inherit", allow_foreign_owner: bool = False,
            pid_ns: bool | None = None, rebind_listeners: bool = False,
            progress: Progress = no_progress, lazy: bool = False) -> Restored:
    """Bring the tree back. Its root becomes a child of the calling process (like the original
    parent, when the caller is that parent: ipykernel, for one, checks its parent PID).

    With `pid_ns` the tree comes back in a new PID namespace, under a stand-in parent with
    the original parent's PID; by default that happens only when one of its PIDs is taken.
    With `rebind_listeners`, listening TCP sockets take new ports (see Restored.port_map),
    so a copy can run beside its original.

    With `lazy`, the processes run before their large private anonymous memory is in: it is
    copied in on demand and in the background by a thread of ours (lazy.py) until
    Restored.wait_pages() returns; the interpreter does not exit before that. Needs
    CAP_SYS_PTRACE; refused without it. `path` may be an image already open (see load).

    A caller that may not choose PIDs (no CAP_CHECKPOINT_RESTORE) gets the tree in a new
    user and PID namespace, restored by a helper process that is then the root's waiter
    (see userns.py).
    """
    if userns.may_choose_pids():
        return restore_here(path, stdio, allow_foreign_owner, pid_ns, rebind_listeners, progress,
                            lazy=lazy)
    if lazy:
        _check_lazy_allowed()
        raise RestoreConflict("lazy restore is not available in a user namespace (restoring "
                              "without CAP_CHECKPOINT_RESTORE); restore without --lazy")
    if not isinstance(path, str):
        raise RestoreConflict("restoring without CAP_CHECKPOINT_RESTORE needs an image directory")
    if pid_ns is False:
        raise RestoreConflict("restoring with the original PIDs here needs CAP_CHECKPOINT_RESTORE; "
                              "without it the tree comes back in a new PID namespace (--pid-ns)")
    load(path, allow_foreign_owner)  # bad images and foreign owners are refused before any helper runs
    return Restored(**userns.restore_in_helper(path, stdio, allow_foreign_owner, rebind_listeners, progress))


def restore_here(path: "str | ImageReader", stdio: str = "inherit", allow_foreign_owner: bool = False,
                 pid_ns: bool | None = None, rebind_listeners: bool = False,
                 progress: Progress = no_progress, in_user_ns: bool = False,
                 lazy: bool = False) -> Restored:
    """restore(), done by this process. `in_user_ns`: we are a helper that entered a new
    user and PID namespace for it (userns.py)."""
    if lazy:
        _check_lazy_allowed()
    progress("verifying", 0, 0)
    image = load(path, allow_foreign_owner)
    manifest = image.manifest
    root = manifest["root_pid"]
    procs = _parents_first(manifest["processes"], root)
    ids = [t["tid"] for proc in procs for t in proc["threads"]] + [z["pid"] for z in manifest["zombies"]]
    taken = [tid for tid in ids if not _id_free(tid, grace=0 if pid_ns is None else 5.0)]
    if pid_ns is None:
        taken = [tid for tid in taken if not _id_free(tid)]
        pid_ns = bool(taken)
    elif taken and not pid_ns:
        raise RestoreConflict(f"pid/tid {taken[0]} is in use on this host (is the original still "
                              "running?); restore into a new PID namespace with --pid-ns")
    log.info("phase verify")
    for kind in RESOURCES:  # (a /dev/shm name holding other content, say) before anything is made
        if kind.verify is not None:
            kind.verify(image)
    tree = _Tree(image, StdioPolicy(stdio), rebind_listeners, progress, in_user_ns)
    if lazy:  # (its watchdog starts outside the namespace)
        from .lazy import PageServer  # (loaded by a lazy restore only)

        tree.lazy = PageServer()
    # Pages a child shares with its parent come back shared: the parent's are restored before
    # the child is forked. Lazily they cannot (the page server fills each process on its own).
    tree.sharing = memory.plan_sharing(procs, share=not lazy)
    try:
        namespace = PidNamespace(root, entered=in_user_ns) if pid_ns else None
    except BaseException:
        if tree.lazy is not None:
            tree.lazy.close()
        raise
    released: list[RemoteThread] = []
    try:
        try:
            seed = _spawn_seed(root, namespace, procs[0]["process"]["ppid"], set(ids))
        finally:
            if namespace:
                namespace.leave()
        try:
            log.info("phase seed")
            leaders = _create_seeds(tree, seed, procs, manifest["zombies"])
            faults.point("restore.after-seed", log)
            for proc in procs:
                released += _restore_process(tree, proc, seed, leaders[proc["pid"]])
            log.info("phase finish")
            for kind in RESOURCES:
                if kind.finish is not None:
                    kind.finish(tree)
        finally:
            seed.close()
        faults.point("restore.before-release", log)
    except BaseException:
        # Nothing may be left, and nothing may hang: every process we made (and its threads,
        # which we trace) is killed and reaped within a deadline, the namespace's too.
        log.debug("rolling back: killing %s", tree.created)
        kill_and_reap(list(reversed(tree.created)) + (namespace.pids() if namespace else []))
        if tree.lazy is not None:
            tree.lazy.close()
        if namespace:
            namespace.destroy()
        raise
    finally:
        tree.close()
    try:
        log.info("phase release")
        for kind in RESOURCES:
            if kind.release is not None:
                kind.release(manifest)
        for thread in released:
            ptrace_ext.detach(thread.tid)
    finally:
        if tree.lazy is not None:
            tree.lazy.seal()  # every process is in: the server ends when their pages are
    progress("running", 0, 0)
    if namespace:
        namespace.release()
        warnings = [] if not namespace.proc_error else [
            f"the new PID namespace shows the host's /proc ({namespace.proc_error}): there "
            "/proc/<the process's own PID> is another process"]
        return Restored(seed.pid, root, namespace.waiter_pid, tree.port_map, tree.lazy, warnings)
    return Restored(seed.pid, root, seed.pid, tree.port_map, tree.lazy)


def _check_lazy_allowed() -> None:
    """Lazy restore follows forks with userfaultfd fork events, which take CAP_SYS_PTRACE
    (a child would otherwise read zeros where its memory is not in yet)."""
    if not procfs.has_capability(_CAP_SYS_PTRACE):
        raise RestoreConflict("lazy restore needs CAP_SYS_PTRACE (its userfaultfd must follow "
                              "forks); restore without --lazy")


def _id_free(tid: int, grace: float = 5.0) -> bool:
    """Free, or about to be: a just-killed tree's orphans are zombies until init reaps them."""
    deadline = time.monotonic() + grace
    while True:
        try:
            with open(f"/proc/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state not in ("Z", "X") or time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _parents_first(procs: list[dict[str, Any]], root: int) -> list[dict[str, Any]]:
    by_pid = {p["pid"]: p for p in procs}
    depth: dict[int, int] = {}

    def level(pid: int) -> int:
        if pid not in depth:
            parent = by_pid[pid]["process"]["ppid"]
            depth[pid] = 0 if pid == root or parent not in by_pid else level(parent) + 1
        return depth[pid]

    return sorted(procs, key=lambda p: level(p["pid"]))


class _Tree(RestoreTree):
    """What the processes of one restore share (RestoreTree: objects several of them hold,
    such as pipes, sockets, shared memory, and our fds of them), with the open files made so
    far and the processes created so far (killed on failure)."""

    def __init__(self, image: ImageReader, stdio: StdioPolicy, rebind_listeners: bool,
                 progress: Progress, in_user_ns: bool):
        super().__init__(image, stdio, rebind_listeners, progress, in_user_ns)
        self.files = {rec["id"]: rec for rec in image.manifest["files"]}
        self.file_fds: dict[str, int] = {}
        self.created: list[int] = []
        self.lazy: PageServer | None = None
        self.sharing: dict[int, memory.Inheritance] = {}  # pid -> what it shares with its parent

    def close(self) -> None:
        for fd in self.own_fds:
            try:
                os.close(fd)
            except OSError as err:  # closed already with what it belonged to
                log.debug("closing our fd %d: %s", fd, err)
        self.own_fds.clear()
        self.states.clear()


def _create_seeds(tree: _Tree, root_seed: "_Seed", procs: list[dict[str, Any]],
                  zombies: list[dict[str, Any]]) -> dict[int, RemoteThread]:
    """The seed phase: every process of the tree as a seed, forked from its parent's seed so
    that parent links, sessions and process groups come out as they were; each kind's
    before_fork and seeded hooks run in it (kind.py)."""
    root = procs[0]["pid"]
    leaders = {root: root_seed.thread}
    tree.created.append(root_seed.pid)
    scratch: dict[int, int] = {}
    leaders[root].block_signals()
    for proc in procs:
        pid, attrs = proc["pid"], proc["process"]
        if pid != root:
            leaders[pid] = _fork_seed(leaders[attrs["ppid"]], scratch, pid)
            tree.created.append(leaders[pid].tid)
        if attrs["sid"] == pid:
            leaders[pid].call("setsid")
        for kind in RESOURCES:  # (a controlling terminal, which its children inherit)
            if kind.before_fork is not None:
                kind.before_fork(tree, leaders[pid], proc)
        if tree.sharing[pid].early:  # memory its children share, before they fork
            _restore_early(tree, proc, leaders[pid], root_seed)
    for proc in procs:  # group leaders first, then the members joining them
        if proc["process"]["pgid"] == proc["pid"] and proc["process"]["sid"] != proc["pid"]:
            leaders[proc["pid"]].call("setpgid", 0, 0)
    for proc in procs:
        pgid = proc["process"]["pgid"]
        if pgid != proc["pid"] and pgid in leaders and pgid != proc["process"]["sid"]:
            leaders[proc["pid"]].call("setpgid", 0, pgid)
    for proc in procs:
        for kind in RESOURCES:  # (a terminal's foreground group, now that every group exists)
            if kind.seeded is not None:
                kind.seeded(tree, leaders[proc["pid"]], proc)
    for zombie in zombies:
        if zombie["ppid"] in leaders:
            seed = _fork_seed(leaders[zombie["ppid"]], scratch, zombie["pid"])
            tree.created.append(seed.tid)
            tree.outer_pids[zombie["pid"]] = seed.tid
            _make_zombie(seed, zombie["exit_code"])
    for proc in procs:  # a process restored early keeps no trace of forking its children
        if tree.sharing[proc["pid"]].scratch and leaders[proc["pid"]].tid in scratch:
            leaders[proc["pid"]].call("munmap", scratch[leaders[proc["pid"]].tid], 4096)
    tree.outer_pids.update((pid, thread.tid) for pid, thread in leaders.items())
    return leaders


def _fork_seed(parent: RemoteThread, scratch: dict[int, int], pid: int) -> RemoteThread:
    if parent.tid not in scratch:
        scratch[parent.tid] = parent.mmap_scratch(4096)
    mem = RemoteMemory(parent.tid)
    try:
        tid_array = scratch[parent.tid]
        mem.write(tid_array, struct.pack("<i", pid))
        args = tid_array + 16
        mem.write(args, syscalls.clone_args(0, signal.SIGCHLD, tid_array))
    finally:
        mem.close()
    try:
        parent.call("clone3", args, syscalls.CLONE_ARGS_SIZE)
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise RestoreConflict(f"pid {pid} is in use on this host") from None
        raise
    child = parent.children.pop()  # as we see it (clone3 returned it as the parent sees it)
    stop = ptrace_ext.wait(child)
    if stop.event != ptrace_ext.EVENT_STOP:
        kill_and_reap([child])
        raise CkptError(f"seed {child}: {stop.describe()}")
    return RemoteThread(child, parent.gadget)


def _make_zombie(thread: RemoteThread, status: int) -> None:
    """End a seed the way the original child ended, leaving it for its parent to reap."""
    resource.prlimit(thread.tid, resource.RLIMIT_CORE, (0, 0))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:  # SIGKILL ends even a stopped tracee: there is no resuming it
            thread.call("rt_sigaction", sig, 0, 0, 8)  # default action (the seed may have ours)
            ptrace_ext.set_sigmask(thread.tid, 0)
        os.kill(thread.tid, sig)
        if sig != signal.SIGKILL:
            ptrace_ext.cont(thread.tid)
    else:
        regs = arch.prepare_syscall(thread.saved, thread.gadget, arch.NR["exit_group"],
                                    (os.WEXITSTATUS(status),), arch.stack_pointer(thread.saved))
        ptrace_ext.setregs(thread.tid, regs)
        ptrace_ext.cont(thread.tid)
    while not (stop := ptrace_ext.wait(thread.tid)).exited:
        ptrace_ext.cont(thread.tid, stop.sig if stop.event == 0 else 0)


@dataclass
class _Seed:
    thread: RemoteThread  # its only thread, seized and stopped
    sock: socket.socket  # our end of the fd channel
    child_sock_fd: int  # the seed's copy of the other end (same number as ours was)
    wake_fd: int

    @property
    def pid(self) -> int:
        return self.thread.tid

    def close(self) -> None:
        self.sock.close()
        os.close(self.wake_fd)


def _spawn_seed(pid: int, namespace: PidNamespace | None, ppid: int, tree_ids: set[int]) -> _Seed:
    """A copy of us with PID `pid` (in `namespace`, under a stand-in parent, if given),
    stopped and seized, waiting to be rebuilt into the restored root."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        if namespace is not None:
            thread = _seed_from_parent(namespace, pid, ppid, tree_ids)
        else:
            child = syscalls.fork_with_pid(pid)
            if child == 0:  # the seed: wait, stopped, to be rebuilt; never returns
                try:
                    os.close(w)
                    os.read(r, 1)
                finally:
                    os._exit(127)
            thread = _seize_stopped(child)
    except OSError as err:
        ours.close(), theirs.close(), os.close(r), os.close(w)
        if err.errno == errno.EEXIST:
            raise RestoreConflict(f"pid {pid} is in use on this host") from None
        raise CkptError(f"cannot create a process with pid {pid}: {err.strerror}") from None
    os.close(r)
    child_sock_fd = theirs.fileno()
    theirs.close()
    return _Seed(thread, ours, child_sock_fd, w)


def _seize_stopped(pid: int) -> RemoteThread:
    ptrace_ext.seize(pid, SEED_OPTIONS)
    ptrace_ext.interrupt(pid)
    stop = ptrace_ext.wait(pid)
    if stop.event != ptrace_ext.EVENT_STOP:
        kill_and_reap([pid])
        raise CkptError(f"seed process: {stop.describe()}")
    mem = RemoteMemory(pid)
    try:
        return RemoteThread(pid, syscall_gadget(mem))
    finally:
        mem.close()


def _seed_from_parent(namespace: PidNamespace, pid: int, ppid: int, tree_ids: set[int]) -> RemoteThread:
    """Fork the root's seed from its parent in the namespace (a stand-in, or init), then let
    that parent go on waiting for its release. Returns the seed's thread (our PID for it)."""
    parent = _seize_stopped(namespace.fork_parent(ppid, tree_ids))
    mask = ptrace_ext.get_sigmask(parent.tid)
    parent.block_signals()
    seed = _fork_seed(parent, {}, pid)
    parent.restore_live(mask)
    ptrace_ext.detach(parent.tid)
    return seed


def _restore_early(tree: _Tree, proc: dict[str, Any], leader: RemoteThread, seed: "_Seed") -> None:
    """Prepare the process's address space and restore the areas whose pages its children
    share, so that forking them leaves those pages shared copy-on-write. Files it maps
    there come in over the fd channel every seed inherited, and are closed again."""
    step = _Step(proc["pid"])
    step("restoring the memory its children share", level=logging.INFO)
    inheritance = tree.sharing[proc["pid"]]
    mem = RemoteMemory(leader.tid)
    try:
        inheritance.scratch = _prepare(leader, mem, proc, inheritance)
        ctx = _context(tree, proc, leader, mem, inheritance.scratch)
        paths = memory.early_files(proc["memory"], inheritance)
        mapped = memory.files_to_map(proc["memory"])
        ours = [ctx.keep(memory.open_mapped_file(path, mapped[path], False, ctx.image)) for path in paths]
        theirs = _send_fds(ctx, seed.sock, seed.child_sock_fd, 0, ours) if ours else []
        memory.restore_early(ctx, proc["memory"], inheritance, dict(zip(paths, theirs)))
        for fd in theirs:
            leader.call("close", fd)
    except (RestoreConflict, ImageError, faults.InjectedFault):
        raise
    except (OSError, ptrace_ext.PtraceError, CkptError) as err:
        raise step.failed(err) from None
    finally:
        mem.close()


def _prepare(leader: RemoteThread, mem: RemoteMemory, proc: dict[str, Any],
             inheritance: memory.Inheritance) -> int:
    """Empty the seed's address space (but for what it inherits); returns its scratch area."""
    leader.block_signals()
    threads.unregister_inherited_rseq(leader)
    scratch_addr = memory.prepare_address_space(leader, mem, proc["memory"], SCRATCH_SIZE,
                                                inheritance.kept)
    leader.stack = scratch_addr + SCRATCH_SIZE - 64
    return scratch_addr


def _context(tree: _Tree, proc: dict[str, Any], leader: RemoteThread, mem: RemoteMemory,
             scratch_addr: int) -> RestoreContext:
    return RestoreContext(leader.tid, tree, leader, mem, Scratch(mem, scratch_addr, SCRATCH_SIZE),
                          ns_pid=proc["pid"])


class _Step:
    """What the restore of one process is doing, so that a failure says where it was
    (`pid 123: thread 125: restoring the thread's state: Invalid argument`)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.what = "preparing"

    def __call__(self, what: str, tid: int | None = None, level: int = logging.DEBUG) -> None:
        self.what = what if tid is None or tid == self.pid else f"thread {tid}: {what}"
        log.log(level, "pid %d: %s", self.pid, self.what)

    def failed(self, err: BaseException) -> CkptError:
        why = str(err)
        if isinstance(err, OSError) and err.strerror:
            why = err.strerror + (f": {err.filename}" if err.filename else "")
        return CkptError(f"pid {self.pid}: {self.what}: {why}")


def _restore_process(tree: _Tree, proc: dict[str, Any], seed: "_Seed",
                     leader: RemoteThread) -> list[RemoteThread]:
    """Rebuild one process in its seed. An unexpected failure (a system call refused, a
    thread gone) is reported with the step it happened in; refusals keep their own words."""
    step = _Step(proc["pid"])
    try:
        return _restore_process_steps(tree, proc, seed, leader, step)
    except (RestoreConflict, ImageError, faults.InjectedFault):
        raise  # they name what stopped the restore already
    except (OSError, ptrace_ext.PtraceError, CkptError) as err:
        raise step.failed(err) from None


def _restore_process_steps(tree: _Tree, proc: dict[str, Any], seed: "_Seed",
                           leader: RemoteThread, step: _Step) -> list[RemoteThread]:
    mem = RemoteMemory(leader.tid)  # (leader.tid: its pid as we see it; proc["pid"]: as it does)
    try:
        inheritance = tree.sharing[proc["pid"]]
        scratch_addr = inheritance.scratch  # prepared already when its children share its memory
        if not scratch_addr:
            step("emptying its address space", level=logging.INFO)
            scratch_addr = _prepare(leader, mem, proc, inheritance)
        rebuild = _Rebuild(_context(tree, proc, leader, mem, scratch_addr), tree, proc, seed, step)
        for name, phase, fault_point in _PROCESS_PHASES:
            step(name, level=logging.INFO)  # (-v shows the phases, -vv their steps too)
            phase(rebuild)
            if fault_point:
                faults.point(fault_point, log)
        return rebuild.threads
    finally:
        mem.close()


class _Rebuild:
    """One process being rebuilt in its seed, phase by phase (_PROCESS_PHASES): what the
    earlier phases leave for the later ones."""

    def __init__(self, ctx: RestoreContext, tree: _Tree, proc: dict[str, Any], seed: "_Seed",
                 step: _Step) -> None:
        self.ctx, self.tree, self.proc, self.seed, self.step = ctx, tree, proc, seed, step
        self.call = ctx.leader.call
        self.file_ids = list(dict.fromkeys(entry["file"] for entry in proc["fds"]))
        self.mapped = memory.files_to_map(proc["memory"])
        self.shared_objects = memory.shmem_to_map(proc["memory"])
        self.channel = max([r["fd"] for r in proc["fds"]] + [2]) + 1  # the seed's end of the fd channel
        self.park = self.channel + 1  # fds arrive here before moving to their numbers
        self.passed: dict[str, dict[Any, int]] = {}  # what passing its files in gave, by group and name
        self.our_exe = -1
        self.threads: list[RemoteThread] = []

    def make_room(self) -> None:
        """Its fd table holds nothing but the fd channel, above every recorded fd."""
        _ensure_fd_room(self.ctx.pid, self.park + len(self.file_ids) + len(self.mapped)
                        + len(self.shared_objects) + 16)
        if self.seed.child_sock_fd != self.channel:
            self.call("dup3", self.seed.child_sock_fd, self.channel, 0)
        self.call("close_range", 0, self.channel - 1, 0)
        self.call("close_range", self.channel + 1, _UINT_MAX, 0)

    def pass_files(self) -> None:
        """Build every file here (once for the whole tree), then ship them all in one go,
        named by group: its open files by id, the files and shared memory objects it maps,
        its exe and cwd."""
        ctx, tree = self.ctx, self.tree
        files: dict[Any, int] = {}
        for file_id in self.file_ids:
            if file_id not in tree.file_fds:
                rec = tree.files[file_id]
                self.step(f"making its open file {file_id} ({rec['kind']})")
                tree.file_fds[file_id] = kind_named(rec["kind"]).restore(rec, ctx)
            files[file_id] = tree.file_fds[file_id]
        writable = {v["path"] for v in self.proc["memory"]["vmas"]
                    if v["kind"] == "file" and v["shared"] and v["prot"] & memory.PROT_WRITE}
        mapped = {path: ctx.keep(memory.open_mapped_file(path, facts, path in writable, ctx.image))
                  for path, facts in self.mapped.items()}
        shared = {key: shmem.object_fd(ctx, key) for key in self.shared_objects}
        self.our_exe = ctx.keep(process.open_exe(self.proc["process"], ctx.image))
        attrs = {"exe": self.our_exe, "cwd": ctx.keep(process.open_cwd(self.proc["process"]))}
        self.step("passing its files in")
        self.passed = _pass_in(ctx, self.seed.sock, self.channel, self.park,
                               {"files": files, "mapped": mapped, "shmem": shared, "process": attrs})

    def memory(self) -> None:
        ctx, rec = self.ctx, self.proc["memory"]
        ctx.progress("memory", 0, sum(run[1] for v in rec["vmas"] for run in v["pages"]))
        memory.restore(ctx, rec, self.passed["mapped"], self.passed["shmem"], self.tree.sharing[self.proc["pid"]])

    def install_fds(self) -> None:
        self.call("close", self.channel)
        for entry in self.proc["fds"]:
            self.call("dup3", self.passed["files"][entry["file"]], entry["fd"],
                      O_CLOEXEC if entry["cloexec"] else 0)

    def attributes(self) -> None:
        theirs = self.passed["process"]
        exe_fd = -1 if process.same_exe(self.ctx.pid, self.our_exe) else theirs["exe"]
        process.restore(self.ctx, self.proc["process"], exe_fd, theirs["cwd"])
        self.call("close_range", self.park, _UINT_MAX, 0)

    def finish_files(self) -> None:
        """After the parked copies are closed: closing any fd of a file drops the process's
        POSIX locks on it. Run in the process the record was dumped from (POSIX locks are
        per process)."""
        first_fd: dict[str, int] = {}
        for entry in self.proc["fds"]:
            first_fd.setdefault(entry["file"], entry["fd"])
        for file_id in self.file_ids:
            rec = self.tree.files[file_id]
            kind = kind_named(rec["kind"])
            if kind.after_install is not None and rec["owner"] == self.proc["pid"]:
                self.step(f"finishing its open file {file_id} ({rec['kind']}: locks, registrations)")
                kind.after_install(rec, self.ctx, first_fd[file_id])

    def signal_dispositions(self) -> None:
        signals.restore_dispositions(self.ctx, self.proc["signals"])

    def create_threads(self) -> None:
        self.threads = threads.create(self.ctx, self.proc["threads"])
        for rec, thread in zip(self.proc["threads"], self.threads):
            self.step("restoring the thread's state (rseq, robust list, sigaltstack, name, registers)",
                      rec["tid"])
            thread.block_signals()
            threads.restore(self.ctx, rec, thread)

    def posix_timers(self) -> None:
        posix_timers.restore(self.ctx, self.proc.get("posix_timers", []), self._by_tid())

    def rlimits(self) -> None:
        # while the process is still ours: prlimit() on another user's wants CAP_SYS_RESOURCE
        process.set_rlimits(self.ctx.pid, self.proc["process"])

    def credentials(self) -> None:
        for rec, thread in zip(self.proc["threads"], self.threads):
            self.step("setting its credentials and capabilities", rec["tid"])
            self.ctx.scratch.reset()
            process.set_credentials(thread, self.proc["process"], self.ctx.scratch.put, self.tree.in_user_ns)

    def pending_signals(self) -> None:
        signals.queue_pending(self.ctx, self.proc["signals"], self._by_tid())
        self.call("munmap", self.ctx.scratch.addr, self.ctx.scratch.size)

    def finish_threads(self) -> None:
        for rec, thread in zip(self.proc["threads"], self.threads):
            self.step("finishing the thread (clear_child_tid, signal mask)", rec["tid"])
            threads.finish(rec, thread)
            ptrace_ext.set_sigmask(thread.tid, rec["sigmask"])
        for rec, thread in zip(self.proc["threads"], self.threads):
            self.step("setting the thread's scheduling", rec["tid"])
            threads.restore_scheduling(rec, thread)

    def verify_credentials(self) -> None:
        process.verify_credentials(self.ctx.pid, self.proc["process"])

    def _by_tid(self) -> dict[int, RemoteThread]:
        return {rec["tid"]: thread for rec, thread in zip(self.proc["threads"], self.threads)}


# The restore of one process in its seed, in order: (name, what it does, the fault point
# reached once it is done). Each name is logged as it starts and names a failure in it.
_PROCESS_PHASES: list[tuple[str, Callable[[_Rebuild], None], str | None]] = [
    ("making room for its file descriptors", _Rebuild.make_room, None),
    ("making its open files", _Rebuild.pass_files, None),
    ("mapping its memory and writing its pages", _Rebuild.memory, "restore.after-memory"),
    ("putting its file descriptors at their numbers", _Rebuild.install_fds, None),
    ("restoring its attributes (mm fields, exe, cwd, umask, personality)", _Rebuild.attributes, None),
    ("finishing its open files", _Rebuild.finish_files, "restore.after-files"),
    ("restoring its signal dispositions", _Rebuild.signal_dispositions, None),
    ("creating its threads", _Rebuild.create_threads, None),
    ("re-creating its POSIX timers", _Rebuild.posix_timers, "restore.after-threads"),
    ("setting its resource limits", _Rebuild.rlimits, None),
    ("setting its credentials and capabilities", _Rebuild.credentials, None),
    ("queueing its pending signals again", _Rebuild.pending_signals, None),
    ("finishing its threads", _Rebuild.finish_threads, None),
    ("checking its credentials and capabilities", _Rebuild.verify_credentials, None),
]


def _ensure_fd_room(pid: int, needed: int) -> None:
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard < needed:
            hard = needed
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (needed, hard))


def _pass_in(ctx: RestoreContext, sock: socket.socket, channel: int, park: int,
             groups: dict[str, dict[Any, int]]) -> dict[str, dict[Any, int]]:
    """Pass our fds, named by group and key, into the seed; returns the same names with
    their numbers there."""
    ours = [(group, key, fd) for group, fds in groups.items() for key, fd in fds.items()]
    theirs = _send_fds(ctx, sock, channel, park, [fd for _, _, fd in ours])
    passed: dict[str, dict[Any, int]] = {group: {} for group in groups}
    for (group, key, _), fd in zip(ours, theirs):
        passed[group][key] = fd
    return passed


def _send_fds(ctx: RestoreContext, sock: socket.socket, channel: int, park: int,
              fds: list[int]) -> list[int]:
    """Pass our fds into the seed; returns their numbers there (all >= park), in order."""
    result: list[int] = []
    for start in range(0, len(fds), _MAX_FDS_PER_MESSAGE):
        batch = fds[start:start + _MAX_FDS_PER_MESSAGE]
        sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", batch))])
        ctx.scratch.reset()
        control_len = _CMSG_HEADER.size + ((4 * len(batch) + 7) & ~7)
        control = ctx.scratch.reserve(control_len)
        byte = ctx.scratch.reserve(8)
        iov = ctx.scratch.put(struct.pack("<QQ", byte, 1))
        hdr = ctx.scratch.put(_MSGHDR.pack(0, 0, iov, 1, control, control_len, 0))
        ctx.leader.call("recvmsg", channel, hdr, 0)
        cmsg_len, level, kind = _CMSG_HEADER.unpack(ctx.mem.read(control, _CMSG_HEADER.size))
        count = (cmsg_len - _CMSG_HEADER.size) // 4
        if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS or count != len(batch):
            raise CkptError(f"fd transfer into pid {ctx.pid} lost descriptors ({count} of {len(batch)})")
        received = struct.unpack(f"<{count}i", ctx.mem.read(control + _CMSG_HEADER.size, 4 * count))
        for fd in received:
            result.append(ctx.leader.call("fcntl", fd, F_DUPFD, park))
            ctx.leader.call("close", fd)
    return result
