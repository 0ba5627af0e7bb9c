"""What a notebook user can do about a refused snapshot.

The engine refuses by naming the resource (`Blocker`: pid, where, kind, why), which is exact
but speaks of file descriptors and system calls. Here each refused *kind* (the engine's
stable names, e.g. "io_uring", "POSIX timer", "unix socket") maps to advice in a notebook's
terms: what in a notebook usually holds such a thing and how to let go of it. The REST API
sends the advice with the technical line, which clients show as details.
"""
from __future__ import annotations

from typing import Any

from ..engine import Blocker

_SUBPROCESS = ("A subprocess of the kernel is {what}. End it or wait for it "
               "(proc.wait(), proc.kill(); in R, tools::pskill), then snapshot again.")
_SOCKET = ("The kernel has a {what} open, usually a client of a local service (a database, "
           "Docker, D-Bus, an X display) or a library's own helper process. Close the client "
           "(conn.close(), client.close()) and reconnect after the snapshot.")
_NAMESPACE = ("A process of the kernel runs in a container or sandbox of its own ({what}). "
              "End that process (or the tool that started it) before snapshotting.")
_MAPPING = ("Memory the kernel maps cannot be saved as it is ({what}): a numpy.memmap, "
            "mmap object or native library holding it. Delete that object (del arr; "
            "gc.collect()) or copy the data into ordinary memory, then snapshot again.")

# refused kind -> advice (str.format'ed with what=kind)
ADVICE: dict[str, str] = {
    "io_uring": "Asynchronous I/O through io_uring is in use (liburing, used by some "
                "database drivers and fast file libraries). Close the library's files or "
                "stop its event loop so that the ring is closed, then snapshot again.",
    "fanotify": "A filesystem monitor (fanotify) is open. Stop the monitoring library "
                "before snapshotting.",
    "userfaultfd": "A userfaultfd is open (a memory checkpointing or live-migration "
                   "library). Close it before snapshotting.",
    "perf_event": "A performance counter is open (a profiler such as perf, py-spy in "
                  "native mode, or a PAPI/likwid binding). Stop the profiler, then snapshot.",
    "bpf-map": "An eBPF object is open (a tracing tool). Stop it, then snapshot.",
    "bpf-prog": "An eBPF object is open (a tracing tool). Stop it, then snapshot.",
    "inotify": "A file watcher (watchdog, inotify, a live-reload helper) has events not "
               "read yet or watches a file that is gone. Stop the observer "
               "(observer.stop(); observer.join()) or let it catch up, then snapshot again.",
    "POSIX timer": "A timer made with timer_create (profilers, timeout helpers, some native "
                   "libraries) cannot be re-created as it is. Stop the profiler or cancel "
                   "the timeout, then snapshot again.",
    "timerfd": "A timer file (an event loop's or a native library's timer) cannot be "
               "re-created as it is. Stop the event loop or cancel its timer first.",
    "TCP connection": "The kernel holds a network connection. Close it (session.close(), "
                      "conn.close()) and reconnect after the snapshot.",
    "file lease": "A file has a lease on it (F_SETLEASE, used by file-sharing servers). "
                  "Release it or close the file, then snapshot again.",
    "file lock": "A file is locked in a way that cannot be restored (mandatory locking). "
                 "Release the lock (close the file), then snapshot again.",
    "file": "A file the kernel has open was deleted or replaced since it was opened, so it "
            "could not be reopened. Close it (f.close(), or delete the object holding it) "
            "and open it again if needed.",
    "directory": "A directory the kernel has open was removed. Close it (os.close, or end "
                 "the os.scandir / os.walk using it).",
    "cwd": "The kernel's working directory was deleted. Change to an existing one "
           "(os.chdir(...), %cd, or setwd() in R), then snapshot again.",
    "chroot": "A process of the kernel runs with another root directory (chroot). End it first.",
    "character device": "A device is open: a GPU (CUDA, /dev/nvidia*), a serial port or "
                        "another special file. Device state cannot be saved: move your data "
                        "off the device and release it (e.g. free the GPU context), or close "
                        "the port, then snapshot again.",
    "block device": "A disk device is open. Close it, then snapshot again.",
    "terminal": "A terminal whose other end is outside the kernel is open (a pty used by "
                "pexpect or a shell helper). Close it or end that helper.",
    "controlling terminal": _SUBPROCESS.format(what="attached to a terminal of its own"),
    "session": _SUBPROCESS.format(what="running in a session of its own (start_new_session)"),
    "process group": _SUBPROCESS.format(what="running in a process group of its own"),
    "zombie": _SUBPROCESS.format(what="finished but not waited for"),
    "zombie leader": "A process of the kernel ended its main thread while other threads run "
                     "on. End that process, then snapshot again.",
    "stopped": "A subprocess of the kernel is stopped (SIGSTOP or job control). Let it "
               "continue (kill -CONT PID) or end it, then snapshot again.",
    "vfork": "A subprocess of the kernel is being started right now. Try again in a moment.",
    "seccomp": "A process of the kernel runs under a seccomp sandbox (a sandboxing library "
               "or a browser-based helper). It cannot be frozen safely: end that process, or "
               "restart the kernel without the sandbox.",
    "shared address space": "Processes of the kernel share memory without being threads "
                            "(clone with CLONE_VM). End the helper that made them.",
    "shared file descriptor table": "Processes of the kernel share one file descriptor table without being "
                "threads. End the helper that made them.",
    "shared fs info (cwd, umask)": "Processes of the kernel share their working directory without being "
               "threads. End the helper that made them.",
    "parent-death signal": "A thread asked to be signalled when its parent dies "
                           "(PR_SET_PDEATHSIG, used by process-pool and sandbox helpers). End "
                           "that helper, then snapshot again.",
    "scheduling policy": "A thread runs with a real-time scheduling policy. Set it back to "
                         "normal (os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))).",
    "pipe": "A pipe connects the kernel to a program outside it (a subprocess's output, a "
            "shell helper). Close the pipe (proc.stdout.close()) or end that program.",
    "FIFO": "A named pipe (FIFO) is open whose other end is outside the kernel. Close it.",
    "shared memory": "Memory is shared with a process outside the kernel, or in a way that "
                     "cannot be saved (multiprocessing or joblib/loky workers, Ray, Arrow "
                     "plasma). Shut the worker pool down (pool.close(); pool.join(), or "
                     "joblib's get_reusable_executor().shutdown()), then snapshot again.",
    "SysV shared memory": "A SysV shared memory segment is attached (an old IPC library, an "
                          "X11 or database client). Detach it, then snapshot again.",
    "memfd": _MAPPING.format(what="an anonymous shared file"),
    "mapping": _MAPPING.format(what="locked, sealed, device or huge-page memory"),
    "mapping of a deleted file": _MAPPING.format(what="a file deleted since it was mapped"),
    "file mapping": _MAPPING.format(what="a file replaced since it was mapped"),
    "shared file mapping": _MAPPING.format(what="a shared mapping of a file we may not write"),
    "signal-driven I/O": "A file uses signal-driven I/O (O_ASYNC). Close it, then snapshot.",
    "file owner": "A file is set to signal a process (F_SETOWN). Close it, then snapshot.",
    "epoll": "An event loop watches a file that was closed meanwhile. Restart or stop the "
             "event loop (asyncio, zmq, tornado) that owns it, then snapshot again.",
    "pidfd": "The kernel holds a handle on a process that ended or is not its own. Close "
             "it (os.close on the pidfd) or wait for the subprocess first.",
}
FALLBACK = ("Release what the kernel holds (close the file or connection, stop the worker or "
            "subprocess), then snapshot again; `jupyter-ckpt check PID` lists everything "
            "that blocks a snapshot.")


def advice(kind: str) -> str:
    """What a user can do about a refused resource of this kind."""
    if kind in ADVICE:
        return ADVICE[kind]
    if kind.endswith(" socket"):
        return _SOCKET.format(what=kind)
    if kind.endswith(" namespace"):
        return _NAMESPACE.format(what=kind)
    return FALLBACK


def refusals(blockers: list[Blocker]) -> list[dict[str, Any]]:
    """The blockers of a refusal as the REST API shows them, each with its advice."""
    return [{"pid": b.pid, "where": b.where, "kind": b.kind, "why": b.why,
             "detail": str(b), "advice": advice(b.kind)} for b in blockers]
