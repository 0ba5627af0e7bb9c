"""Restore: recreate each process with its exact PID from a "seed" (a fork of the restorer
made with clone3(set_tid)), then rebuild its address space, files, threads and signals by
syscalls injected into it, and finally let it go exactly where it was stopped.

Files are built here in the restorer with ordinary calls (open, pipe, ...) and handed to the
seed over a unix socket (SCM_RIGHTS), then moved to their recorded numbers. If any step fails
the seed is killed: a restore either completes or leaves nothing behind.
"""
from __future__ import annotations

import array
import os
import resource
import signal
import socket
import struct
from dataclasses import dataclass
from typing import Any

from . import ptrace_ext, syscalls
from .context import RestoreContext, StdioPolicy
from .errors import CkptError, ImageError, RestoreConflict
from .hostinfo import incompatibilities
from .image import ImageReader
from .inject import RemoteMemory, RemoteThread, Scratch, find_gadget
from .procfs import read_vmas
from .resources import kind_named, memory, process, signals, threads

SCRATCH_SIZE = 256 * 1024
SEED_OPTIONS = ptrace_ext.O_TRACESYSGOOD | ptrace_ext.O_TRACECLONE | ptrace_ext.O_EXITKILL
_MAX_FDS_PER_MESSAGE = 250
_MSGHDR = struct.Struct("<QI4xQQQQi4x")
_CMSG_HEADER = struct.Struct("<Qii")
F_DUPFD = 0
O_CLOEXEC = 0o2000000
_UINT_MAX = 0xFFFFFFFF


@dataclass
class Restored:
    pid: int

    def wait(self) -> int:
        """Wait for the restored root to end; its exit status as a shell would report it."""
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def load(path: str, allow_foreign_owner: bool = False) -> ImageReader:
    """Open and fully verify an image, and check it may and can be restored here."""
    image = ImageReader(path)
    owner = image.manifest["owner_uid"]
    st = os.stat(path)
    if owner != os.getuid() or st.st_uid != os.getuid():
        if os.getuid() != 0 or not allow_foreign_owner:
            raise ImageError(f"{path} belongs to uid {owner}, not to you (uid {os.getuid()}); "
                             "root may restore it with --allow-foreign-owner")
    problems = incompatibilities(image.manifest["host"])
    if problems:
        raise RestoreConflict("cannot restore on this host: " + "; ".join(problems))
    return image


def restore(path: str, stdio: str = "inherit", allow_foreign_owner: bool = False) -> Restored:
    image = load(path, allow_foreign_owner)
    (proc,) = image.manifest["processes"]
    for tid in (t["tid"] for t in proc["threads"]):
        if os.path.exists(f"/proc/{tid}") or os.path.exists(f"/proc/{proc['pid']}/task/{tid}"):
            raise RestoreConflict(f"pid/tid {tid} is in use on this host (is the original still running?)")
    seed = _spawn_seed(proc["pid"])
    try:
        threads_out = _restore_process(image, proc, seed, StdioPolicy(stdio))
    except BaseException:
        _kill(seed.pid)
        raise
    finally:
        seed.close()
    for thread in threads_out:
        ptrace_ext.detach(thread.tid)
    return Restored(proc["pid"])


@dataclass
class _Seed:
    pid: int
    sock: socket.socket  # our end of the fd channel
    child_sock_fd: int  # the seed's copy of the other end (same number as ours was)
    wake_fd: int

    def close(self) -> None:
        self.sock.close()
        os.close(self.wake_fd)


def _spawn_seed(pid: int) -> _Seed:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        child = syscalls.fork_with_pid(pid)
    except OSError as err:
        ours.close(), theirs.close(), os.close(r), os.close(w)
        if err.errno == 17:
            raise RestoreConflict(f"pid {pid} is in use on this host") from None
        raise CkptError(f"cannot create a process with pid {pid}: {err.strerror}") from None
    if child == 0:  # the seed: wait, stopped, to be rebuilt; never returns
        try:
            os.close(w)
            os.read(r, 1)
        finally:
            os._exit(127)
    os.close(r)
    child_sock_fd = theirs.fileno()
    theirs.close()
    ptrace_ext.seize(child, SEED_OPTIONS)
    ptrace_ext.interrupt(child)
    stop = ptrace_ext.wait(child)
    if stop.event != ptrace_ext.EVENT_STOP:
        _kill(child)
        raise CkptError(f"seed process: {stop.describe()}")
    return _Seed(child, ours, child_sock_fd, w)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _restore_process(image: ImageReader, proc: dict[str, Any], seed: _Seed,
                     stdio: StdioPolicy) -> list[RemoteThread]:
    pid = proc["pid"]
    mem = RemoteMemory(pid)
    try:
        vdso = next(v for v in read_vmas(pid) if v.path == "[vdso]")
        leader = RemoteThread(pid, find_gadget(mem, vdso.start, vdso.end))
        signals.block_all(leader)
        threads.unregister_inherited_rseq(leader)
        scratch_addr = memory.prepare_address_space(leader, mem, proc["memory"], SCRATCH_SIZE)
        leader.stack = scratch_addr + SCRATCH_SIZE - 64
        ctx = RestoreContext(pid, image, leader, mem, Scratch(mem, scratch_addr, SCRATCH_SIZE), stdio)
        try:
            return _rebuild(ctx, proc, seed)
        finally:
            ctx.close()
    finally:
        mem.close()


def _rebuild(ctx: RestoreContext, proc: dict[str, Any], seed: _Seed) -> list[RemoteThread]:
    call = ctx.leader.call
    highest = max([r["fd"] for r in proc["fds"]] + [2])
    channel = highest + 1  # the seed's end of the fd channel, above every recorded fd
    park = channel + 1  # fds arrive here before moving to their numbers
    _ensure_fd_room(ctx.pid, park + len(proc["files"]) + len(proc["memory"]["vmas"]) + 16)
    if seed.child_sock_fd != channel:
        call("dup3", seed.child_sock_fd, channel, 0)
    call("close_range", 0, channel - 1, 0)
    call("close_range", channel + 1, _UINT_MAX, 0)

    # Build every file here, then ship them all in one go.
    ours: list[int] = []
    for rec in proc["files"]:
        ours.append(kind_named(rec["kind"]).restore(rec, ctx))
    mapped = memory.files_to_map(proc["memory"])
    writable = {v["path"] for v in proc["memory"]["vmas"]
                if v["kind"] == "file" and v["shared"] and v["prot"] & memory.PROT_WRITE}
    for path, facts in mapped.items():
        ours.append(ctx.keep(memory.open_mapped_file(path, facts, path in writable)))
    exe = ctx.keep(process.open_exe(proc["process"]))
    ours.append(exe)
    ours.append(ctx.keep(process.open_cwd(proc["process"])))
    theirs = _send_fds(ctx, seed.sock, channel, park, ours)
    n_files = len(proc["files"])
    by_id = {rec["id"]: theirs[i] for i, rec in enumerate(proc["files"])}
    map_fds = dict(zip(mapped, theirs[n_files:n_files + len(mapped)]))
    exe_fd, cwd_fd = theirs[-2], theirs[-1]
    if process.same_exe(ctx.pid, exe):
        exe_fd = -1

    memory.restore(ctx, proc["memory"], map_fds)
    call("close", channel)
    for entry in proc["fds"]:
        call("dup3", by_id[entry["file"]], entry["fd"], O_CLOEXEC if entry["cloexec"] else 0)
    first_fd = {}
    for entry in proc["fds"]:
        first_fd.setdefault(entry["file"], entry["fd"])
    for rec in proc["files"]:
        kind = kind_named(rec["kind"])
        if kind.after_install is not None:
            kind.after_install(rec, ctx, first_fd[rec["id"]])
    process.restore(ctx, proc["process"], exe_fd, cwd_fd)
    call("close_range", park, _UINT_MAX, 0)
    signals.restore_dispositions(ctx, proc["signals"])

    all_threads = threads.create(ctx, proc["threads"])
    for rec, thread in zip(proc["threads"], all_threads):
        signals.block_all(thread)
        threads.restore(ctx, rec, thread)
    for thread in all_threads:
        ctx.scratch.reset()
        process.set_credentials(thread, proc["process"], ctx.scratch.put)
    signals.queue_pending(ctx, proc["signals"])
    call("munmap", ctx.scratch.addr, ctx.scratch.size)
    for rec, thread in zip(proc["threads"], all_threads):
        threads.finish(rec, thread)
        ptrace_ext.set_sigmask(thread.tid, rec["sigmask"])
    process.set_rlimits(ctx.pid, proc["process"])
    process.verify_capabilities(ctx.pid, proc["process"])
    return all_threads


def _ensure_fd_room(pid: int, needed: int) -> None:
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard < needed:
            hard = needed
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (needed, hard))


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
