"""Lazy restore: the restored processes run before their large private anonymous memory is
written. Each such area is registered (missing-page mode) with a userfaultfd made inside the
process (uffd.open_in); one page-server thread here then

  - serves every missing-page fault: from the image's blob (UFFDIO_COPY) while the page's
    snapshot content is still pending, else as a zero page (UFFDIO_ZEROPAGE: a page the
    image left out, or one the process discarded since). A blob is reached through a
    PageSource: a mapping of an image file, or a buffer that a snapshot store fills from its
    chunks, on demand and in the background, refusing a chunk that does not match its name;
  - pushes all pending pages in the background, a few MiB per UFFDIO_COPY, faults first;
  - follows the address space: MADV_DONTNEED/MADV_FREE (REMOVE) and munmap (UNMAP) drop what
    was pending there, mremap (REMAP) moves it, and fork (FORK) gives the child a userfaultfd
    of its own, served the same way with a copy of what was pending in the parent;
  - closes each userfaultfd when nothing is pending in it any more: closing it removes the
    registration, and the memory is plain memory again.

Faults the kernel takes on the process's behalf (read() into a buffer) are served too (no
UFFD_USER_MODE_ONLY). If serving fails, every restored process and its descendants are killed
(they must not run on with wrong memory) and wait() reports why. A watchdog process
(lazy_keeper.py) holds a duplicate of every userfaultfd and does the same if the server
itself dies (SIGKILL), before the kernel could drop the registrations.

The thread is not a daemon: the interpreter does not exit while pages are pending.
"""
from __future__ import annotations

import bisect
import errno
import os
import array
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from . import procfs, uffd
from .lazy_keeper import descendants as _descendants, kill_trees as _kill_trees
from .errors import CkptError
from .pagemap import PAGE_SIZE

FEATURES = (uffd.UFFD_FEATURE_EVENT_FORK | uffd.UFFD_FEATURE_EVENT_REMAP
            | uffd.UFFD_FEATURE_EVENT_REMOVE | uffd.UFFD_FEATURE_EVENT_UNMAP)
_CHUNK = 4 << 20  # background copy size: a fault waits at most about one of these
_FAULT_AHEAD = 16 * PAGE_SIZE  # a fault brings in this much of what follows it, if pending
_READ_BATCH = 64 * uffd.MSG_SIZE
_INF = float("inf")
# Tests hold the background pass back: for this many seconds, or until this file exists
# (for at most _MAX_PAUSE s), so that a program finds its memory still missing.
PAUSE_ENV = "JUPYTER_CKPT_LAZY_PAUSE"
_MAX_PAUSE = 600.0


@dataclass(frozen=True)
class LazyStats:
    """What the page server did (see Restored.wait_pages)."""

    pages_on_demand: int  # pages copied in because a fault asked for them
    zero_pages: int  # faults served with a zero page
    bytes_background: int  # bytes copied in by the background pass
    processes: int  # address spaces served (the restored ones, and children forked meanwhile)


class PageSource(Protocol):
    """Where the content of one blob of memory pages is, for the page server: mapped at
    `address` in this process, `size` bytes. `ensure(ranges)` returns once the blob's bytes
    in every [lo, hi) range are there (at once for a mapped file), or raises CkptError
    naming what could not be read; the content is then never wrong, only missing.
    `available(lo, hi)` says without waiting how many bytes from lo on are there already.
    `prefetch` asks it to bring everything in, in the background (called once the restore is
    complete, so that it does not compete with the restore). `release(lo, hi)`: that range
    is in the process and wanted nowhere else (its memory may go). `close` unmaps it."""

    address: int
    size: int

    def ensure(self, ranges: list[tuple[int, int]]) -> None: ...

    def available(self, lo: int, hi: int) -> int: ...

    def prefetch(self) -> None: ...

    def release(self, lo: int, hi: int) -> None: ...

    def close(self) -> None: ...


class _Pending:
    """Address intervals whose snapshot content is not in the process yet: [start, end, src],
    sorted, disjoint; src is the address of the content in our mapping of the blob."""

    def __init__(self, intervals: list[list[int]]):
        self.iv = sorted(intervals)

    def __bool__(self) -> bool:
        return bool(self.iv)

    def copy(self) -> "_Pending":
        return _Pending([list(i) for i in self.iv])

    def find(self, addr: int) -> list[int] | None:
        i = bisect.bisect_right(self.iv, [addr, _INF]) - 1
        if i >= 0 and self.iv[i][1] > addr:
            return self.iv[i]
        return None

    def remove(self, lo: int, hi: int) -> list[list[int]]:
        """Drop [lo, hi); returns the pieces dropped."""
        j = max(bisect.bisect_right(self.iv, [lo, _INF]) - 1, 0)
        k = j
        kept: list[list[int]] = []
        gone: list[list[int]] = []
        while k < len(self.iv) and self.iv[k][0] < hi:
            s, e, src = self.iv[k]
            k += 1
            if e <= lo:
                kept.append([s, e, src])
                continue
            if s < lo:
                kept.append([s, lo, src])
            if e > hi:
                kept.append([hi, e, src + hi - s])
            a = max(s, lo)
            gone.append([a, min(e, hi), src + a - s])
        if gone:
            self.iv[j:k] = kept
        return gone

    def add(self, pieces: list[list[int]]) -> None:
        for piece in pieces:
            bisect.insort(self.iv, piece)


class _Space:
    """One address space being served: its userfaultfd, what is pending in it, faults to
    serve again once the address space has settled."""

    def __init__(self, fd: int, pid: int | None, pending: _Pending):
        self.id = 0  # the keeper's name for it
        self.fd = fd
        self.pid = pid  # as we see it; None for a child forked meanwhile (not told to us)
        self.pending = pending
        self.retry: list[int] = []
        self.gone = False

    @property
    def name(self) -> str:
        return f"pid {self.pid}" if self.pid else "a process forked after the restore"


class PageServer:
    """Serves the lazily restored memory of one restore (all its processes)."""

    def __init__(self) -> None:
        self.pids: list[int] = []  # the restored processes (killed, with descendants, on failure)
        self._spaces: list[_Space] = []
        self._new: list[_Space] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._blobs: dict[tuple[int, str], PageSource] = {}
        self._by_address: list[tuple[int, int, PageSource]] = []  # sorted (address, end, source)
        self._thread: threading.Thread | None = None
        self._sealed = False
        self._stop = False
        self._closed = False
        self._done = threading.Event()
        self._error: str | None = None
        self._pause_until = 0.0
        self._pause_file: str | None = None
        self._turn = 0
        self._keeper: subprocess.Popen | None = None
        self._keeper_sock: socket.socket | None = None
        self._keeper_lock = threading.Lock()
        self._ids = 0
        self._stats = {"demand": 0, "zero": 0, "background": 0, "spaces": 0}
        self._keeper_checked = False
        try:
            self._start_keeper()
        except OSError as err:
            self._finish()
            raise CkptError(f"lazy restore: cannot start its watchdog process: {err}") from None

    # ---- the restorer's side

    def blob_address(self, image: Any, name: str) -> int:
        """Address of our mapping of an image's blob (kept until the server ends): the
        image's page_source (see PageSource)."""
        key = (id(image), name)
        if key not in self._blobs:
            source = image.page_source(name)
            if source is None:
                raise CkptError(f"memory pages missing from {image.path}")
            self._blobs[key] = source
            bisect.insort(self._by_address, (source.address, source.address + source.size,
                                             source), key=lambda e: e[0])
        return self._blobs[key].address

    def _source(self, src: int, length: int) -> tuple[int, PageSource]:
        i = bisect.bisect_right(self._by_address, src, key=lambda e: e[0]) - 1
        if i < 0 or src + length > self._by_address[i][1]:
            raise CkptError(f"lazy restore: no page source holds {src:#x}+{length:#x}")
        return self._by_address[i][0], self._by_address[i][2]

    def _ensure(self, src: int, length: int) -> None:
        """The source content at [src, src + length) is in (see PageSource.ensure)."""
        address, source = self._source(src, length)
        source.ensure([(src - address, src - address + length)])

    def add(self, pid: int, fd: int, runs: list[tuple[int, int, int]]) -> None:
        """Serve `fd` (a registered userfaultfd of `pid`, now ours) with the (address, length,
        source address) runs of content it lacks. Starts serving at once: the rest of the
        restore may touch that memory too."""
        space = _Space(fd, pid, _Pending([[a, a + n, src] for a, n, src in runs if n]))
        try:
            self._check_keeper()
            self._keep(space, strict=True)
        except OSError as err:
            os.close(fd)
            raise CkptError(f"lazy restore: its watchdog process did not start: {err}") from None
        with self._lock:
            if self._closed:
                os.close(fd)
                raise CkptError(self._error or "lazy restore: the page server has stopped")
            self.pids.append(pid)
            self._new.append(space)
        if self._thread is None:
            pause = os.environ.get(PAUSE_ENV) or "0"
            try:
                self._pause_until = time.monotonic() + float(pause)
            except ValueError:
                self._pause_file = pause
                self._pause_until = time.monotonic() + _MAX_PAUSE
            self._thread = threading.Thread(target=self._run, name="ckpt-lazy-pages", daemon=False)
            self._thread.start()
        self._poke()

    def seal(self) -> None:
        """The restore is complete: no more processes come; end once every page is in."""
        for source in list(self._blobs.values()):
            source.prefetch()
        self._sealed = True
        self._poke()
        if self._thread is None:
            self._finish()

    def close(self) -> None:
        """The restore failed (its processes are being killed): stop serving now."""
        self._stop = True
        self._sealed = True
        self._poke()
        if self._thread is not None:
            self._thread.join()
        else:
            self._finish()

    def wait(self, timeout: float | None = None) -> LazyStats:
        """Block until every page is in (or every process served has ended). Raises
        CkptError if serving failed (the processes were then killed)."""
        if not self._done.wait(timeout):
            raise TimeoutError("lazy restore: pages still being copied in")
        if self._error:
            raise CkptError(self._error)
        s = self._stats
        return LazyStats(s["demand"], s["zero"], s["background"], s["spaces"])

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _start_keeper(self) -> None:
        """Start the watchdog (lazy_keeper.py); it says "ready" once it runs. Started early,
        and outside any PID namespace the restore makes; waited for at the first add()."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        try:
            self._keeper = subprocess.Popen(
                [sys.executable, "-m", "jupyter_ckpt.engine.lazy_keeper", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True, env=env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._keeper_sock = ours

    def _check_keeper(self) -> None:
        if self._keeper_checked or self._keeper_sock is None:
            return
        self._keeper_sock.settimeout(60)
        try:
            hello = self._keeper_sock.recv(16)
        finally:
            self._keeper_sock.settimeout(None)
        if hello != b"ready":
            raise OSError(f"exit status {self._keeper.poll() if self._keeper else None}")
        self._keeper_checked = True

    def _tell_keeper(self, message: str, fd: int | None = None, strict: bool = False) -> None:
        """A message to the watchdog. Only the restore's own (`strict`) must get through: if
        the watchdog was killed later, serving goes on without it."""
        if self._keeper_sock is None:
            return
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if fd is not None else []
        try:
            with self._keeper_lock:
                self._keeper_sock.sendmsg([message.encode()], rights)
        except OSError:
            if strict:
                raise

    def _keep(self, space: _Space, strict: bool = False) -> None:
        with self._keeper_lock:
            self._ids += 1
            space.id = self._ids
        self._tell_keeper(f"add {space.id} {space.pid or 0}", space.fd, strict)

    def _poke(self) -> None:
        with self._lock:  # not once _finish has closed the pipe (its number may be reused)
            if self._closed:
                return
            try:
                os.write(self._wake_w, b"!")
            except BlockingIOError:
                pass

    # ---- the server thread

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as err:  # noqa: BLE001 - any failure must stop the processes
            why = str(err) if isinstance(err, CkptError) else f"{type(err).__name__}: {err}"
            killed = _kill_trees(self.pids)
            self._error = (f"lazy restore: serving memory failed, killed pid(s) "
                           f"{', '.join(map(str, killed)) or 'none'}: {why}")
        finally:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._closed = True
            spaces, self._spaces, self._new = self._spaces + self._new, [], []
        for space in spaces:
            os.close(space.fd)
        if self._keeper_sock is not None:
            self._tell_keeper("done")  # all in, or the processes were killed
            self._keeper_sock.close()
            self._keeper_sock = None
        if self._keeper is not None:
            self._keeper.wait()
            self._keeper = None
        sources = list(self._blobs.values())
        self._blobs.clear()
        self._by_address.clear()
        for source in sources:
            source.close()
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        self._done.set()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd: dict[int, _Space] = {}
        stalled = False
        while not self._stop:
            with self._lock:
                new, self._new = self._new, []
                self._spaces += new
            for space in new:
                self._adopt(space, poller, by_fd)
            for space in [s for s in self._spaces if s.gone or (not s.pending and not s.retry)]:
                self._retire(space, poller, by_fd)
            if not self._spaces:
                if self._sealed and not self._new:
                    return
            if self._pause_file and os.path.exists(self._pause_file):
                self._pause_until, self._pause_file = 0.0, None
            paused = time.monotonic() < self._pause_until
            pushing = not paused and any(s.pending for s in self._spaces)
            if pushing and not stalled:
                timeout = 0
            elif stalled or any(s.retry for s in self._spaces):
                timeout = 1
            elif paused:
                timeout = 10 if self._pause_file else max(1, int((self._pause_until - time.monotonic()) * 1000))
            else:
                timeout = -1
            stalled = False
            for fd, _ in poller.poll(timeout):
                if fd == self._wake_r:
                    while True:
                        try:
                            if not os.read(fd, 512):
                                break
                        except BlockingIOError:
                            break
                elif fd in by_fd:
                    self._read(by_fd[fd], poller, by_fd)
            for space in self._spaces:
                waiting, space.retry = space.retry, []
                for addr in waiting:
                    self._fault(space, addr)
            if pushing:  # the restored processes first: a forked child may well exit or exec soon
                live = [s for s in self._spaces if s.pending and not s.gone]
                live = [s for s in live if s.pid] or live
                if live:
                    self._turn = (self._turn + 1) % len(live)
                    stalled = not self._push(live[self._turn])

    def _adopt(self, space: _Space, poller: select.poll, by_fd: dict[int, _Space]) -> None:
        self._stats["spaces"] += 1
        by_fd[space.fd] = space
        poller.register(space.fd, select.POLLIN)

    def _retire(self, space: _Space, poller: select.poll, by_fd: dict[int, _Space]) -> None:
        """Nothing pending: closing the userfaultfd unregisters its ranges (faults still
        waiting are retried by the kernel as ordinary faults)."""
        self._spaces.remove(space)
        by_fd.pop(space.fd, None)
        poller.unregister(space.fd)
        self._tell_keeper(f"drop {space.id}")
        os.close(space.fd)

    def _read(self, space: _Space, poller: select.poll, by_fd: dict[int, _Space]) -> None:
        while not space.gone:
            try:
                data = os.read(space.fd, _READ_BATCH)
            except BlockingIOError:
                return
            for at in range(0, len(data), uffd.MSG_SIZE):
                self._message(space, data, at, poller, by_fd)
            if len(data) < _READ_BATCH:
                return

    def _message(self, space: _Space, data: bytes, at: int, poller: select.poll,
                 by_fd: dict[int, _Space]) -> None:
        event = data[at]
        if event == uffd.UFFD_EVENT_PAGEFAULT:
            _flags, address = struct.unpack_from("QQ", data, at + 8)
            self._fault(space, address & ~(PAGE_SIZE - 1))
        elif event == uffd.UFFD_EVENT_FORK:
            (fd,) = struct.unpack_from("I", data, at + 8)
            child = _Space(fd, None, space.pending.copy())
            self._spaces.append(child)
            self._adopt(child, poller, by_fd)  # before anything can fail: closed at the end
            self._keep(child)
            self._not_wiped(space, child)
        elif event == uffd.UFFD_EVENT_REMAP:
            source, dest, length = struct.unpack_from("QQQ", data, at + 8)
            moved = space.pending.remove(source, source + length)
            space.pending.remove(dest, dest + length)
            space.pending.add([[s - source + dest, e - source + dest, src] for s, e, src in moved])
        elif event in (uffd.UFFD_EVENT_REMOVE, uffd.UFFD_EVENT_UNMAP):
            start, end = struct.unpack_from("QQ", data, at + 8)
            space.pending.remove(start, end)  # discarded: it reads as zeros (or is gone)
        else:
            raise CkptError(f"{space.name}: unexpected userfaultfd event {event:#x}")

    def _not_wiped(self, parent: _Space, child: _Space) -> None:
        """A forked child gets no content in MADV_WIPEONFORK areas: nothing is pending there.
        We know which areas those are only for a process whose pid we know."""
        if not child.pending:
            return
        if parent.pid is not None:
            try:
                vmas = procfs.read_vmas(parent.pid)
            except (FileNotFoundError, ProcessLookupError):
                vmas = []
            for vma in vmas:
                if "wf" in vma.vmflags:
                    child.pending.remove(vma.start, vma.end)
            return
        known = set(self.pids)
        for pid in _descendants(self.pids):
            if pid in known:
                continue
            try:
                vmas = procfs.read_vmas(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
            for vma in vmas:
                if "wf" in vma.vmflags and child.pending.remove(vma.start, vma.end):
                    raise CkptError("a process forked from a child of the restored tree has "
                                    "MADV_WIPEONFORK memory not yet restored (not supported lazily)")

    def _fault(self, space: _Space, addr: int) -> None:
        if space.gone:
            return
        interval = space.pending.find(addr)
        if interval is not None:
            end = min(interval[1], addr + _FAULT_AHEAD)
            if not self._fill(space, addr, end, demand=True) and space.pending.find(addr) is not None:
                space.retry.append(addr)  # the address space is changing: after its event
            return
        err = uffd.zeropage(space.fd, addr, PAGE_SIZE)
        if err == 0:
            self._stats["zero"] += 1
        elif err in (errno.EEXIST, errno.ENOENT):
            uffd.wake(space.fd, addr, PAGE_SIZE)  # there already, or no longer ours to serve
        elif err == errno.EAGAIN:
            space.retry.append(addr)  # the address space is changing: after its event
        elif err == errno.ESRCH:
            space.gone = True
        else:
            raise CkptError(f"{space.name}: zero page at {addr:#x}: {os.strerror(err)}")

    def _push(self, space: _Space) -> bool:
        """Copy in what is pending first, as far as its source has it already (a fault
        must not wait behind a source that is still reading). False: try again shortly."""
        start, end, src = space.pending.iv[0]
        length = min(end, start + _CHUNK) - start
        address, source = self._source(src, length)
        ready = source.available(src - address, src - address + length)
        if not ready:
            return False
        return self._fill(space, start, start + ready, demand=False)

    def _fill(self, space: _Space, lo: int, hi: int, demand: bool) -> bool:
        """Copy the pending content of [lo, hi) in. False if the address space is changing
        (an event is on its way): try again after reading it."""
        pos = lo
        cap = hi - lo
        while pos < hi and not space.gone:
            interval = space.pending.find(pos)
            if interval is None:
                pos += PAGE_SIZE
                continue
            length = min(hi, interval[1], pos + cap) - pos
            self._ensure(interval[2] + pos - interval[0], length)
            copied, err = uffd.copy(space.fd, pos, interval[2] + pos - interval[0], length)
            if copied:
                space.pending.remove(pos, pos + copied)
                if self._stats["spaces"] == 1:  # no other address space can still want it
                    address, source = self._source(interval[2] + pos - interval[0], copied)
                    source.release(interval[2] + pos - interval[0] - address,
                                   interval[2] + pos - interval[0] - address + copied)
                self._stats["demand" if demand else "background"] += \
                    copied // PAGE_SIZE if demand else copied
                pos += copied
                cap = min(hi - lo, cap * 2)
                if err in (0, errno.EAGAIN):
                    continue
            if err == 0:
                continue
            if err == errno.EEXIST:  # populated meanwhile (moved here by mremap, ...)
                space.pending.remove(pos, pos + PAGE_SIZE)
                uffd.wake(space.fd, pos, PAGE_SIZE)
                pos += PAGE_SIZE
            elif err in (errno.ENOENT, errno.EINVAL) and length > PAGE_SIZE:
                cap = max(PAGE_SIZE, length // 2 // PAGE_SIZE * PAGE_SIZE)  # crosses a mapping's end
            elif err == errno.ENOENT:  # not in a mapping registered with this userfaultfd (any more)
                space.pending.remove(pos, pos + PAGE_SIZE)
                uffd.wake(space.fd, pos, PAGE_SIZE)
                pos += PAGE_SIZE
            elif err == errno.EAGAIN:
                return False
            elif err == errno.ESRCH:  # the address space is gone (exit, exec)
                space.gone = True
            else:
                raise CkptError(f"{space.name}: copying memory to {pos:#x}: {os.strerror(err)}")
        return True

