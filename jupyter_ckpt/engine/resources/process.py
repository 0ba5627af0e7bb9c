"""Process-wide attributes: credentials, cwd, umask, rlimits, session and group, personality,
child subreaper, THP disabling and membarrier registrations, the mm fields the kernel keeps
about the address space (PR_SET_MM_MAP), and the namespaces the process must share with us."""
from __future__ import annotations

import errno
import logging
import os
import resource
import struct
from typing import Any, Callable

from .. import fileid, procfs, syscalls
from ..context import DumpContext, RestoreContext, TreeIndex
from ..errors import Blocker, RestoreConflict
from ..image import b64, unb64
from ..inject import RemoteThread
from .kind import Resource
from .tty import controlling_terminal

_RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}
_NAMESPACES = ("mnt", "net", "uts", "ipc", "user", "pid", "cgroup", "time")
_CAPS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
PR_SET_MM, PR_SET_MM_MAP, PR_SET_NO_NEW_PRIVS = 35, 14, 38
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37
PR_GET_THP_DISABLE, PR_SET_THP_DISABLE, PR_THP_DISABLE_EXCEPT_ADVISED = 42, 41, 1 << 1
_THP_DISABLE_VALUES = (0, 1, 1 | PR_THP_DISABLE_EXCEPT_ADVISED)  # off, disabled, but where advised
# linux/membarrier.h: the registrations of an address space, readable since Linux 6.3
MEMBARRIER_CMD_GET_REGISTRATIONS = 1 << 9
_MEMBARRIER_REGISTER = (1 << 2, 1 << 4, 1 << 6, 1 << 8)  # GLOBAL, PRIVATE, SYNC_CORE, RSEQ
_MM_FIELDS = ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
              "start_stack", "arg_start", "arg_end", "env_start", "env_end")
_MM_MAP = struct.Struct("<11QQII")
# linux/kcmp.h: tables a clone() without CLONE_THREAD may share, which restore makes apart
_KCMP_SHARED = ((2, "shared file descriptor table", "CLONE_FILES"),  # KCMP_FILES
                (3, "shared fs info (cwd, umask)", "CLONE_FS"))  # KCMP_FS
_LIMITS_VALUES_COLUMN = 26  # /proc/PID/limits: "%-25s %-20s %-20s %-10s"
log = logging.getLogger(__name__)


def _identity_user_ns(pid: int, root: int) -> bool:
    """Whether `pid` shares the tree root's user namespace and that one maps every id it
    knows to itself, so the ids we read are the ones the process sees."""
    if os.readlink(f"/proc/{pid}/ns/user") != os.readlink(f"/proc/{root}/ns/user"):
        return False
    for id_map in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{id_map}") as f:
            if any(inside != outside for inside, outside, _ in (line.split() for line in f)):
                return False
    return True


def dump(ctx: DumpContext) -> dict[str, Any]:
    pid = ctx.pid
    for ns in _NAMESPACES:
        if ns == "pid" and ctx.tree.ns_depth:
            # below ours (we see it): fine, if the whole tree shares it (ids are recorded
            # as seen inside, and restored the same way)
            root_ns = os.readlink(f"/proc/{ctx.tree.root}/ns/pid")
            if os.readlink(f"/proc/{pid}/ns/pid") != root_ns:
                raise ctx.refuse("process", "pid namespace", "not in the PID namespace of the tree's root")
            continue
        if ns == "user" and _identity_user_ns(pid, ctx.tree.root):
            continue  # an unprivileged restore's namespace (userns.py): ids are ours
        if ns == "mnt":
            if not ctx.tree.mounts_like_ours(pid):
                raise ctx.refuse("process", "mnt namespace",
                                 "sees other mounts than ours, so its paths mean other files")
            continue
        if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
            raise ctx.refuse("process", f"{ns} namespace", "runs in another namespace than ours")
    if os.readlink(f"/proc/{pid}/root") != "/":
        raise ctx.refuse("process", "chroot", "has a different root directory")
    status = procfs.read_status(pid)
    stat = procfs.read_stat(pid)
    cwd = os.readlink(f"/proc/{pid}/cwd")
    if cwd.endswith(procfs.DELETED):
        raise ctx.refuse("process", "cwd", f"{cwd}: working directory was removed")
    exe = os.readlink(f"/proc/{pid}/exe")
    mm = {"start_code": int(stat[26]), "end_code": int(stat[27]), "start_stack": int(stat[28]),
          "start_data": int(stat[45]), "end_data": int(stat[46]), "start_brk": int(stat[47]),
          "arg_start": int(stat[48]), "arg_end": int(stat[49]), "env_start": int(stat[50]),
          "env_end": int(stat[51])}
    extra: dict[str, Any] = {}
    if ctx.leader is not None:
        mm["brk"] = ctx.leader.call("brk", 0)
        extra = _prctl_state(ctx)
    return {
        "ppid": ctx.tree.inner(int(stat[4])), "pgid": ctx.tree.inner_own(pid, "NSpgid", int(stat[5])),
        "sid": ctx.tree.inner_own(pid, "NSsid", int(stat[6])),
        # a pty of the tree (one outside, such as the terminal we were started from, is
        # not brought back as a controlling terminal)
        "ctty": controlling_terminal(ctx.tree, pid),
        "cwd": cwd, "umask": int(status["Umask"], 8),
        "uids": [int(x) for x in status["Uid"].split()],
        "gids": [int(x) for x in status["Gid"].split()],
        "groups": [int(x) for x in status["Groups"].split()],
        "caps": {k: status[k] for k in _CAPS},
        "no_new_privs": status.get("NoNewPrivs", "0") == "1",
        "rlimits": _read_rlimits(pid),
        "personality": int(open(f"/proc/{pid}/personality").read(), 16),
        "oom_score_adj": int(open(f"/proc/{pid}/oom_score_adj").read()),
        "mm": mm, "auxv": b64(procfs.read_bytes(f"/proc/{pid}/auxv")),
        "exe": {"path": exe, **ctx.tree.identities.facts(f"/proc/{pid}/exe")},
        "cmdline": procfs.read_bytes(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(
            errors="replace").strip(),
        **_loginuid(pid),
        **extra,
    }


def _loginuid(pid: int) -> dict[str, int]:
    """The audit login uid, which the kernel's audit records name the process's actions by
    (set once at login, inherited); none on a kernel built without audit."""
    try:
        return {"loginuid": int(procfs.read_bytes(f"/proc/{pid}/loginuid"))}
    except FileNotFoundError:
        return {}


def _prctl_state(ctx: DumpContext) -> dict[str, Any]:
    """What only the process itself can ask the kernel about, by injected calls: whether it
    is a child subreaper (its orphaned descendants become its children), its
    PR_SET_THP_DISABLE setting, and its address space's membarrier() registrations."""
    call = ctx.leader.call
    ctx.scratch.reset()
    flag = ctx.scratch.put(bytes(4))
    call("prctl", PR_GET_CHILD_SUBREAPER, flag, 0, 0, 0)
    state: dict[str, Any] = {"child_subreaper": ctx.mem.read(flag, 4) != bytes(4),
                             "thp_disable": call("prctl", PR_GET_THP_DISABLE, 0, 0, 0, 0)}
    if state["thp_disable"] not in _THP_DISABLE_VALUES:
        raise ctx.refuse("process", "THP setting", f"PR_GET_THP_DISABLE gives {state['thp_disable']}, "
                         "a setting not known here")
    try:
        state["membarrier"] = call("membarrier", MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
        log.debug("pid %d: membarrier registrations cannot be read before Linux 6.3", ctx.pid)
    return state


def _read_rlimits(pid: int) -> dict[str, list[int]]:
    """From /proc/PID/limits (rows in resource order): prlimit() on a process of another
    user wants CAP_SYS_RESOURCE even to read."""
    with open(f"/proc/{pid}/limits") as f:
        rows = f.read().splitlines()[1:]
    values = [[resource.RLIM_INFINITY if v == "unlimited" else int(v)
               for v in row[_LIMITS_VALUES_COLUMN:].split()[:2]] for row in rows]
    return {name: values[num] for name, num in _RLIMITS.items()}


def shared_tables(pids: list[int]) -> list[Blocker]:
    """Processes of the tree sharing a file descriptor table or fs info (clone with
    CLONE_FILES or CLONE_FS, not a thread): each would come back with its own, so what one
    opens or changes the other would no longer see."""
    blockers = []
    live = [pid for pid in pids if not _is_zombie(pid)]  # (exited: no tables to compare)
    for i, pid in enumerate(live):
        for other in live[:i]:
            for kind, name, flag in _KCMP_SHARED:
                try:
                    if syscalls.kcmp(pid, other, kind, 0, 0) == 0:
                        blockers.append(Blocker(pid, "process", name,
                                                f"shares it with pid {other} ({flag}); each would "
                                                "be restored with its own"))
                except OSError:
                    continue  # gone meanwhile
    return blockers


def _is_zombie(pid: int) -> bool:
    try:
        return procfs.read_status(pid)["State"].startswith(("Z", "X"))
    except (FileNotFoundError, ProcessLookupError):
        return True  # gone: nothing to compare either


def group_stopped(pids: list[int]) -> list[Blocker]:
    """Processes stopped by SIGSTOP or job control: seizing them cannot freeze them the
    usual way, and a restore would not leave them stopped. Read from /proc only."""
    blockers = []
    for pid in pids:
        try:
            state = procfs.read_status(pid)["State"]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state.startswith("T"):
            blockers.append(Blocker(pid, "process", "stopped",
                                    "stopped by SIGSTOP or job control (group stop), which a "
                                    "restore would not keep; continue it (SIGCONT) first"))
    return blockers


def shared_address_spaces(pids: list[int]) -> list[Blocker]:
    """Processes that share their memory with their parent: a vfork() child that has not
    called exec or _exit yet (its parent waits in the kernel, where no ptrace stop reaches
    it, so freezing it would wait forever), or a clone(CLONE_VM) child. Two address spaces
    would come back. Read from /proc and kcmp only: nothing is stopped."""
    blockers = []
    for pid in pids:
        try:
            parent = int(procfs.read_stat(pid)[4])
            if not parent or syscalls.kcmp(pid, parent, syscalls.KCMP_VM, 0, 0) != 0:
                continue
            with open(f"/proc/{parent}/wchan") as f:
                waiting = f.read() == "kernel_clone"
        except OSError:
            continue  # gone, or a parent we may not inspect (then not one we could share with)
        if waiting:
            blockers.append(Blocker(parent, "process", "vfork",
                                    f"waits in vfork() for its child {pid}, which runs in its "
                                    "memory until it calls exec or _exit; checkpoint once it has"))
        else:
            blockers.append(Blocker(pid, "process", "shared address space",
                                    f"shares its memory with its parent {parent} (clone with CLONE_VM)"))
    return blockers


def seccomp_modes(pid: int, tids: list[int]) -> list[Blocker]:
    """Threads under seccomp, each read before anything is injected into the process: in
    strict mode an injected system call kills it, a filter may fail or kill it, and neither
    mode can be set up again at restore."""
    blockers = []
    for tid in tids:
        try:
            status = procfs.read_status(tid)
        except FileNotFoundError:
            continue  # exited meanwhile
        mode = status.get("Seccomp", "0")
        if mode == "1":
            why = "strict mode (SECCOMP_MODE_STRICT) is not supported: a checkpoint would kill it"
        elif mode == "2":
            why = (f"filter mode (SECCOMP_MODE_FILTER, filters: {status.get('Seccomp_filters', '?')}) "
                   "is not supported")
        else:
            continue
        blockers.append(Blocker(pid, "process" if tid == pid else f"tid {tid}", "seccomp", why))
    return blockers


def same_exe(pid: int, fd: int) -> bool:
    here, want = os.stat(f"/proc/{pid}/exe"), os.fstat(fd)
    return (here.st_dev, here.st_ino) == (want.st_dev, want.st_ino)


def open_exe(rec: dict[str, Any], image: fileid.BlobReader) -> int:
    """The recorded executable (or a portable image's copy of it, where it is gone or
    another build), refusing any other file."""
    exe = rec["exe"]
    try:
        fd = os.open(exe["path"], os.O_RDONLY | os.O_CLOEXEC)
        why = fileid.mismatch(fd, exe)
        if why:
            os.close(fd)
    except OSError as err:
        why = err.strerror
    if not why:
        return fd
    if "blob" in exe:
        return fileid.open_copy(image, exe, exe["path"])
    raise RestoreConflict(f"executable {exe['path']} changed since the checkpoint ({why})"
                          if os.path.exists(exe["path"]) else f"executable {exe['path']}: {why}")


def restore(ctx: RestoreContext, rec: dict[str, Any], exe_fd: int, cwd_fd: int) -> None:
    """Address-space bookkeeping, cwd, umask, personality (in the leader). Sessions and
    groups are set up while the tree's seeds are created (see restore._create_seeds).

    `exe_fd` is -1 when the seed already runs the right executable: the kernel refuses to
    swap /proc/PID/exe for a file that is still mapped, and the image maps its own exe."""
    call = ctx.leader.call
    ctx.scratch.reset()
    auxv = unb64(rec["auxv"])
    auxv_addr = ctx.scratch.put(auxv)
    mm = rec["mm"]
    mm_map = _MM_MAP.pack(*(mm[f] for f in _MM_FIELDS), auxv_addr, len(auxv), exe_fd & 0xFFFFFFFF)
    call("prctl", PR_SET_MM, PR_SET_MM_MAP, ctx.scratch.put(mm_map), _MM_MAP.size, 0)
    call("fchdir", cwd_fd)
    call("umask", rec["umask"])
    call("personality", rec["personality"])
    if rec["no_new_privs"]:
        call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # (the seed, a fork of ours, inherited our own THP setting and registrations)
    thp = rec.get("thp_disable", 0)
    call("prctl", PR_SET_THP_DISABLE, 1 if thp else 0,
         thp & PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0)
    for command in _MEMBARRIER_REGISTER:
        if rec.get("membarrier", 0) & command:
            call("membarrier", command, 0, 0)
    # setting it marks the children forked already: their orphans come to this process
    call("prctl", PR_SET_CHILD_SUBREAPER, int(rec.get("child_subreaper", False)), 0, 0, 0)
    with open(f"/proc/{ctx.pid}/oom_score_adj", "w") as f:
        f.write(str(rec["oom_score_adj"]))
    _set_loginuid(ctx, rec)


def _set_loginuid(ctx: RestoreContext, rec: dict[str, Any]) -> None:
    """The seed inherited our audit login uid; a process may only set its own (with
    CAP_AUDIT_CONTROL, which it still has here, before its credentials are set)."""
    if "loginuid" not in rec or _loginuid(ctx.pid).get("loginuid") == rec["loginuid"]:
        return
    call = ctx.leader.call
    ctx.scratch.reset()
    path = ctx.scratch.put(b"/proc/self/loginuid\0")
    value = str(rec["loginuid"]).encode()
    text = ctx.scratch.put(value)
    try:
        fd = call("openat", syscalls.AT_FDCWD, path, os.O_WRONLY | os.O_CLOEXEC, 0)
        try:
            call("write", fd, text, len(value))
        finally:
            call("close", fd)
    except OSError as err:
        raise RestoreConflict(f"cannot give it its audit login uid {rec['loginuid']}: "
                              f"{err.strerror}") from None


def open_cwd(rec: dict[str, Any]) -> int:
    try:
        return os.open(rec["cwd"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise RestoreConflict(f"working directory {rec['cwd']}: {err.strerror}") from None


def set_rlimits(pid: int, rec: dict[str, Any]) -> None:
    for name, limits in rec["rlimits"].items():
        if name in _RLIMITS:
            resource.prlimit(pid, _RLIMITS[name], tuple(limits))


_CAPSET_HEADER = struct.Struct("<Ii")
_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 47, 2, 4


def set_credentials(thread: RemoteThread, rec: dict[str, Any], scratch_put: Callable[[bytes], int],
                    in_user_ns: bool = False) -> None:
    """Credentials are per thread in the kernel: each thread sets its own, last. In a user
    namespace restore (userns.py) setgroups is not allowed; the thread keeps the groups it
    inherited from the restorer, which are the user's own."""
    uids, gids = rec["uids"], rec["gids"]
    groups = rec["groups"]
    caps = {k: int(v, 16) for k, v in rec["caps"].items()}
    extra_bounding = int(procfs.read_status(thread.tid)["CapBnd"], 16) & ~caps["CapBnd"]
    for cap in range(64):  # the bounding set only shrinks, and while we may still do so
        if extra_bounding >> cap & 1:
            thread.call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
    if not in_user_ns:
        thread.call("setgroups", len(groups), scratch_put(struct.pack(f"<{len(groups)}I", *groups)) if groups else 0)
    thread.call("setresgid", gids[0], gids[1], gids[2])
    thread.call("setfsgid", gids[3])  # while we may still set any (setresgid made it egid)
    thread.call("setresuid", uids[0], uids[1], uids[2])
    thread.call("setfsuid", uids[3])  # (verify_credentials checks what the kernel let through)
    halves = [(caps[k] & 0xFFFFFFFF, caps[k] >> 32) for k in ("CapEff", "CapPrm", "CapInh")]
    data = struct.pack("<6I", *(half[i] for i in (0, 1) for half in halves))
    thread.call("capset", scratch_put(_CAPSET_HEADER.pack(_CAPABILITY_VERSION_3, 0)), scratch_put(data))
    thread.call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):
        if caps["CapAmb"] >> cap & 1:
            thread.call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0)


def verify_credentials(pid: int, rec: dict[str, Any]) -> None:
    """setfsuid() and setfsgid() report no failure: the ids are read back, with the
    capabilities, which capset() sets only within what the new ids allow."""
    status = procfs.read_status(pid)
    for key, line in (("uids", "Uid"), ("gids", "Gid")):
        ids = [int(x) for x in status[line].split()]
        if ids != rec[key]:
            raise RestoreConflict(f"{line} of the restored process would be {ids}, not the "
                                  f"checkpointed {rec[key]} (real, effective, saved, filesystem)")
    differ = [k for k in _CAPS if status[k] != rec["caps"][k]]
    if differ:
        raise RestoreConflict("capabilities of the restored process would differ from the "
                              f"checkpointed ones ({', '.join(differ)}); restore as the right user")


def _check(tree: TreeIndex, processes: list[dict[str, Any]]) -> list[Blocker]:
    return _check_zombie_groups(tree.zombies) + _check_sessions(tree.inner(tree.root), processes)


def _check_zombie_groups(zombies: set[int]) -> list[Blocker]:
    """A zombie comes back as a child that exits at once, in its parent's process group and
    session: one that had moved to another (its group's leader since gone, as after a
    setpgid then fork) would come back in the wrong one."""
    blockers = []
    for pid in sorted(zombies):
        stat = procfs.read_stat(pid)
        try:
            parent = procfs.read_stat(int(stat[4]))
        except FileNotFoundError:
            continue  # its parent is gone too: it is reaped with it
        if (stat[5], stat[6]) != (parent[5], parent[6]):
            blockers.append(Blocker(pid, "process", "zombie", f"its process group {stat[5]} "
                                    f"(session {stat[6]}) is not its parent's ({parent[5]}, "
                                    f"{parent[6]}): it cannot be re-created in it"))
    return blockers


def _check_sessions(root: int, processes: list[dict[str, Any]]) -> list[Blocker]:
    """Sessions and process groups must be reproducible by setsid/setpgid from inside the
    tree: a process's session is its own or its parent's; its group is its own, that of a
    group leader in the tree, or the root's (which the restored root inherits from us)."""
    by_pid = {p["pid"]: p["process"] for p in processes if p.get("process")}
    leaders = {pid for pid, attrs in by_pid.items() if attrs["pgid"] == pid}
    root_attrs = by_pid.get(root)
    blockers = []
    for pid, attrs in by_pid.items():
        if pid == root:
            continue
        parent = by_pid.get(attrs["ppid"])
        if attrs["sid"] != pid and (parent is None or attrs["sid"] != parent["sid"]):
            blockers.append(Blocker(pid, "process", "session",
                                    f"session {attrs['sid']} cannot be re-created from inside the tree"))
        elif attrs["pgid"] not in leaders and (root_attrs is None or attrs["pgid"] != root_attrs["pgid"]):
            blockers.append(Blocker(pid, "process", "process group",
                                    f"group {attrs['pgid']} has no leader in the tree"))
    return blockers


PROCESS = Resource("process", record="process", dump_process=dump, check=_check)
