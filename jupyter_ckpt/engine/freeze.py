"""Freeze a process tree race-free with PTRACE_SEIZE + PTRACE_INTERRUPT, and release it.

Every thread of every process under the root is seized and interrupted; the tree is
rescanned until a pass finds nothing new. Threads or children created meanwhile are caught
either by the rescan or, when a seized thread creates them, by the kernel's auto-attach.
If anything fails, every thread seized so far is detached and runs on untouched.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from . import procfs, ptrace_ext, syscalls
from .errors import Blocker, CkptError, Refused

log = logging.getLogger(__name__)

SEIZE_OPTIONS = (ptrace_ext.O_TRACESYSGOOD | ptrace_ext.O_TRACECLONE
                 | ptrace_ext.O_TRACEFORK | ptrace_ext.O_TRACEVFORK)
_NEW_TASK_EVENTS = (ptrace_ext.EVENT_CLONE, ptrace_ext.EVENT_FORK, ptrace_ext.EVENT_VFORK)


@dataclass
class FrozenTree:
    """A stopped process tree: pid -> its thread ids, the thread group leader first."""

    root: int
    processes: dict[int, list[int]] = field(default_factory=dict)
    zombies: set[int] = field(default_factory=set)  # exited children not yet reaped: not seized
    _stopped: set[int] = field(default_factory=set)
    # what a dump changed in the stopped tree: called with False before the tree runs on
    # (to undo it), with True just before it is killed
    on_end: list[Callable[[bool], None]] = field(default_factory=list)

    @property
    def tids(self) -> list[int]:
        return [tid for tids in self.processes.values() for tid in tids]

    def release(self) -> None:
        """Let every thread run again (interrupted syscalls restart as usual)."""
        while self.on_end:
            self.on_end.pop()(False)
        for tid in list(self._stopped):
            try:
                ptrace_ext.detach(tid)
            except ptrace_ext.PtraceError as err:
                log.debug("tid %d: not detached (%s): it has exited meanwhile", tid, err)
        self._stopped.clear()

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole tree and return once every process in it is dead."""
        while self.on_end:
            self.on_end.pop()(True)
        for pid in self.processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Collect our (tracer's) exit notifications; a leader reports only after its threads.
        for tid in sorted(self._stopped, key=lambda t: t in self.processes):
            try:
                ptrace_ext.wait(tid)
            except ChildProcessError:
                log.debug("tid %d: already collected", tid)
        self._stopped.clear()
        deadline = time.monotonic() + timeout
        for pid in self.processes:
            while _alive(pid):
                if time.monotonic() > deadline:
                    raise CkptError(f"pid {pid} did not die after SIGKILL")
                time.sleep(0.005)


def _alive(pid: int) -> bool:
    """Dead means gone or a zombie: reaping is the parent's business, not ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def _tree_pids(root: int) -> list[int]:
    pids = procfs.tree_pids(root)
    if not pids:
        raise CkptError(f"pid {root} exited during the freeze")
    return pids


def _tids(pid: int) -> list[int]:
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return []
    return sorted(tids, key=lambda t: t != pid)  # leader first


def freeze(root: int) -> FrozenTree:
    check_root(root)
    tree = FrozenTree(root)
    try:
        _freeze_until_stable(tree)
    except BaseException:
        tree.release()
        raise
    return tree


def check_root(root: int) -> None:
    """Refuse, in one clear line, a pid that is not a live user process we may freeze."""
    if root <= 0:
        raise CkptError(f"invalid pid {root}: process ids are positive numbers")
    if root == os.getpid():
        raise CkptError("refusing to checkpoint the checkpointing process itself")
    try:
        _check_root(root)
        if root in procfs.ancestors(os.getpid()):
            raise CkptError(f"pid {root} is an ancestor of this checkpointing process: a tree "
                            "cannot be checkpointed from inside itself")
    except (FileNotFoundError, ProcessLookupError):
        raise CkptError(f"no process with pid {root}") from None


_PF_KTHREAD = 0x00200000


def _check_root(root: int) -> None:
    """Refuse, by name, a pid that is not a live user-space process of its own."""
    stat = procfs.read_stat(root)
    if int(stat[9]) & _PF_KTHREAD:
        raise CkptError(f"pid {root} is a kernel thread ({stat[2]}); only user processes can be checkpointed")
    tgid = int(procfs.read_status(root).get("Tgid", root))
    if tgid != root:
        raise CkptError(f"{root} is a thread of process {tgid}, not a process; checkpoint pid {tgid}")
    if stat[3] in ("Z", "X"):
        others = len(os.listdir(f"/proc/{root}/task")) - 1
        if others > 0:
            raise CkptError(f"pid {root}: its main thread has exited while {others} other thread(s) "
                            "run on; such a process is not supported")
        raise CkptError(f"pid {root} has exited (a zombie waiting for its parent)")


VFORK_WAIT = 5.0  # seconds the freeze waits for a vfork() child of the tree to exec or _exit


def _freeze_until_stable(tree: FrozenTree) -> None:
    vforked_since: float | None = None
    while True:
        pids = _tree_pids(tree.root)
        new: list[int] = []
        zombies: set[int] = set()
        vforked: list[int] = []
        live: list[int] = []
        for pid in pids:
            if pid != tree.root and not _alive(pid):
                if os.path.exists(f"/proc/{pid}"):  # (not reaped since we listed it)
                    zombies.add(pid)
                continue
            if pid != tree.root and _in_vfork(pid):
                vforked.append(pid)  # seized in a later pass, once it has called exec or _exit
                continue
            live.append(pid)
            new += [tid for tid in _tids(pid) if tid not in tree._stopped]
        # Kept from the last pass only: it finds every parent stopped, so none can reap a
        # zombie any more (one seen in an earlier pass may have been reaped since).
        tree.zombies = zombies
        if new:
            _seize_all(tree, new)
            continue
        if not vforked:
            break
        vforked_since = vforked_since or time.monotonic()
        if time.monotonic() - vforked_since > VFORK_WAIT:
            raise Refused([Blocker(pid, "process", "vfork",
                                   "shares its parent's memory: a vfork() child that has not "
                                   "called exec or _exit yet (checkpoint once it has), or a "
                                   "clone(CLONE_VM) child") for pid in vforked])
        time.sleep(0.001)
    # The last pass found every process stopped: none can have forked or reaped since, so
    # its list is the tree (parents before their children) without another scan of /proc.
    for pid in live:
        tree.processes[pid] = [t for t in _tids(pid) if t in tree._stopped]


def _in_vfork(pid: int) -> bool:
    """Whether `pid` shares its parent's memory: a vfork() child that has not called exec or
    _exit yet (or a clone(CLONE_VM) child, refused by the dump anyway). Its parent may wait
    in the kernel until it has, where no ptrace stop reaches it: seized in the same pass,
    the child would be held stopped while we wait for its parent to stop, and neither ever
    would. (Whether the parent already sleeps there cannot be read reliably: it may still be
    on its way.) Sharing only ever ends, so a child found not sharing stays so."""
    try:
        parent = int(procfs.read_stat(pid)[4])
        return bool(parent) and syscalls.kcmp(pid, parent, syscalls.KCMP_VM, 0, 0) == 0
    except OSError:
        return False  # gone meanwhile


def _seize_all(tree: FrozenTree, tids: list[int]) -> None:
    """Seize and interrupt every thread first, then collect their stops: the whole tree
    stops at about one moment, and the waits for each thread to get a CPU and stop overlap
    instead of adding up. A thread seized is waited for even when a later one fails, so
    that release() finds it stopped and can let it go."""
    interrupted: list[int] = []
    failure: BaseException | None = None
    try:
        for tid in tids:
            if _seize_one(tid):
                interrupted.append(tid)
    except BaseException as err:
        failure = err
    for tid in interrupted:
        if tid in tree._stopped:
            continue  # a new thread of one waited for before: collected with it
        try:
            _wait_for_interrupt_stop(tree, tid)
        except BaseException as err:
            failure = failure or err
    if failure is not None:
        raise failure


def _seize_one(tid: int) -> bool:
    """Seize and interrupt `tid`; whether a stop of it is to be waited for (not if it has
    exited meanwhile)."""
    try:
        ptrace_ext.seize(tid, SEIZE_OPTIONS)
    except ptrace_ext.PtraceError as err:
        if err.errno == errno.ESRCH:  # exited meanwhile
            return False
        if err.errno == errno.EPERM:  # auto-attached by a fork/clone we traced, or not allowed
            if not _is_traced_by_us(tid):
                raise CkptError(f"cannot trace tid {tid}: permission denied "
                                f"({_why_not_traceable(tid)})") from None
        else:
            raise CkptError(f"cannot seize tid {tid}: {err}") from None
    else:
        ptrace_ext.interrupt(tid)
    return True


def _why_not_traceable(tid: int) -> str:
    """The likely reason, so a user knows what to change."""
    tracer = int(procfs.read_status(tid).get("TracerPid", "0"))
    if tracer:
        return f"already traced by pid {tracer}"
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read())
    except FileNotFoundError:
        scope = 0
    if scope >= 1 and os.geteuid() != 0:
        return (f"Yama ptrace_scope={scope} lets only an ancestor trace a process: checkpoint it "
                "from the program that started it, e.g. the Jupyter server")
    return "it belongs to another user, or we lack CAP_SYS_PTRACE"


def _is_traced_by_us(tid: int) -> bool:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1]) == os.getpid()
    except FileNotFoundError:
        pass
    return False


def _wait_for_interrupt_stop(tree: FrozenTree, tid: int) -> None:
    tree._stopped.add(tid)
    while True:
        stop = ptrace_ext.wait(tid)
        if stop.exited:
            tree._stopped.discard(tid)
            return
        if stop.event == ptrace_ext.EVENT_STOP:
            return
        if stop.event == ptrace_ext.EVENT_VFORK:
            # Resumed, it would wait in the kernel, where no stop reaches it, for a child we
            # hold stopped. Refuse; release() lets both go on.
            child = ptrace_ext.geteventmsg(tid)
            _wait_for_interrupt_stop(tree, child)
            raise Refused([Blocker(int(procfs.read_status(tid)["Tgid"]), "process", "vfork",
                                   f"started child {child} with vfork() while being frozen; "
                                   "checkpoint once it has called exec or _exit")])
        if stop.event in _NEW_TASK_EVENTS:
            child = ptrace_ext.geteventmsg(tid)
            ptrace_ext.cont(tid)
            ptrace_ext.interrupt(tid)
            _wait_for_interrupt_stop(tree, child)
            continue
        if stop.event == ptrace_ext.EVENT_EXEC or stop.event == ptrace_ext.EVENT_EXIT:
            ptrace_ext.cont(tid)
            ptrace_ext.interrupt(tid)
            continue
        # A signal arrived: deliver it as it would have been, then stop again.
        ptrace_ext.cont(tid, stop.sig if stop.event == 0 else 0)
        ptrace_ext.interrupt(tid)
