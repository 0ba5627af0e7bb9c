"""Shared memory objects: anonymous MAP_SHARED regions (inherited over fork they are one object
in several processes), memfd files, and files on a tmpfs (POSIX shared memory and named
semaphores in /dev/shm, joblib's memmapping folders), whether mapped or open as fds, linked
or unlinked.

An object is known by (device, inode), whatever name each process reaches it by: glibc's
sem_open() maps a temporary file and links it to the semaphore's name before unlinking the
temporary one, so its creator maps "sem.XXXXXX (deleted)" while the processes that opened it
by name map "sem.NAME"; both are the same object, and must stay one.

Each object is saved once per checkpoint, by (device, inode), from the object itself (read
through /proc/PID/map_files, the fd or one of its names, skipping holes), with its mode,
owner, seals, a checksum of its content and the names it has in its directory. So it survives
a reboot, which empties every tmpfs. At restore it becomes one file for the whole tree: a
memfd for an object without a name; for a named one, the file at its name when that holds the
recorded content, or else a new file with that content, mode and owner, linked at its names
once the whole tree is in. A name that holds other content is refused before anything is made.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable

import xxhash

from .. import procfs, syscalls
from ..context import DumpContext, OpenFile, RestoreContext, RestoreTree, TreeIndex
from ..errors import Blocker, CkptError, RestoreConflict
from ..image import ImageReader, append_run
from .kind import FileKind, Resource

log = logging.getLogger(__name__)

F_ADD_SEALS, F_GET_SEALS = 1033, 1034
_CAP_CHOWN = 0
_MEMFD_PREFIX = "/memfd:"
_ZEROS = memoryview(bytes(1 << 20))


def object_key(device: tuple[int, int], inode: int) -> str:
    """How the image names an object: "MAJOR:MINOR:INODE" (inode numbers are unique only
    within one file system)."""
    return f"{device[0]}:{device[1]}:{inode}"


def object_name(path: str) -> str:
    """The name to give the memfd: a memfd's own name, "dev/zero" for shared anonymous
    memory, the file name of an unlinked tmpfs file."""
    if path.endswith(procfs.DELETED):
        path = path[:-len(procfs.DELETED)]
    if path.startswith(_MEMFD_PREFIX):
        return path[len(_MEMFD_PREFIX):]
    if path.startswith("/dev/zero"):
        return "dev/zero"
    return os.path.basename(path)


def is_shmem_path(path: str) -> bool:
    return path.startswith(_MEMFD_PREFIX) or path.startswith("/dev/zero")


def _names(path: str, inode: int, device: tuple[int, int]) -> list[str]:
    """The names the object has in the directory `path` (how some process reached it) is
    in: none for a memfd or shared anonymous memory, nor for a file unlinked everywhere."""
    if is_shmem_path(path) or not path.startswith("/"):
        return []
    if path.endswith(procfs.DELETED):
        path = path[:-len(procfs.DELETED)]
    names = []
    try:
        with os.scandir(os.path.dirname(path)) as entries:
            for entry in entries:
                if entry.inode() != inode or not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_ino == inode and (os.major(st.st_dev), os.minor(st.st_dev)) == device:
                    names.append(entry.path)
    except OSError:
        return []
    return sorted(names)


def _parent(path: str) -> dict[str, int]:
    st = os.stat(os.path.dirname(path))
    return {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


@dataclass
class _Saved:
    """Dump: every object saved so far, by key (the manifest's "shmem" section)."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)


def _section(tree: TreeIndex) -> dict[str, Any]:
    return dict(tree.state(_Saved).objects)


def register(ctx: DumpContext, inode: int, device: tuple[int, int], path: str,
             open_object: Callable[[], int]) -> str:
    """Save the object once per checkpoint; its key. `open_object()` returns a readable fd
    of it."""
    key = object_key(device, inode)
    saved = ctx.tree.state(_Saved).objects
    if key in saved:
        return key
    names = _names(path, inode, device)
    fd = open_object()
    try:
        st = os.fstat(fd)
        size = st.st_size
        if not is_shmem_path(path) and st.st_nlink > len(names):
            raise ctx.refuse(path, "shared memory", f"also linked outside {os.path.dirname(path)} "
                             "(only names in one directory are restored)")
        try:
            seals = fcntl.fcntl(fd, F_GET_SEALS)
        except OSError:
            seals = 0
        obj: dict[str, Any] = {"inode": inode, "device": list(device), "name": object_name(path),
                               "size": size, "seals": seals, "data": [], "blob": None,
                               "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                               "paths": names, "parent": _parent(names[0]) if names else None,
                               "xxh3_128": None}
        if ctx.writer is not None:
            obj["data"], content = read_data(fd, size)
            obj["xxh3_128"] = content_digest(obj["data"], content, size)
            obj["blob"] = ctx.add_blob(f"shmem-{key.replace(':', '-')}.bin", content)
    finally:
        os.close(fd)
    saved[key] = obj
    return key


def register_mapping(ctx: DumpContext, vma: procfs.Vma, device: tuple[int, int], source: str,
                     readable: bool) -> str:
    """Save the object a shared memory mapping maps; its key. Read through
    /proc/PID/map_files (`source`) when we may, else through one of its names, else through
    the process's own mapping."""
    key = object_key(device, vma.inode)
    if readable or key in ctx.tree.state(_Saved).objects:
        return register(ctx, vma.inode, device, vma.path,
                        lambda: os.open(source, os.O_RDONLY | os.O_CLOEXEC))
    names = _names(vma.path, vma.inode, device)
    if names:
        return register(ctx, vma.inode, device, vma.path,
                        lambda: os.open(names[0], os.O_RDONLY | os.O_CLOEXEC))
    register_through_mapping(ctx, vma, device)
    return key


def register_file(ctx: DumpContext, f: OpenFile) -> str:
    """Save the object an fd (a memfd, a file on a tmpfs) refers to; its key. Read through
    the fd, or a read-only reopening of it when it is open for writing only."""
    device = (os.major(f.st.st_dev), os.minor(f.st.st_dev))

    def open_object() -> int:
        if f.access == os.O_WRONLY:
            return os.open(f"/proc/{f.pid}/fd/{f.fd}", os.O_RDONLY | os.O_CLOEXEC)
        return os.dup(ctx.dup_of(f.fd))
    return register(ctx, f.st.st_ino, device, f.link, open_object)


def register_through_mapping(ctx: DumpContext, vma: procfs.Vma, device: tuple[int, int]) -> None:
    """Save an object we may not open: without CAP_CHECKPOINT_RESTORE /proc/PID/map_files
    is closed to us, so shared anonymous memory or a file unlinked from a tmpfs (which
    nothing else reaches) is read through the process's own mapping. The object's pages
    are found with mincore, run in the process (it sees what the object holds, touched by
    whichever process), and read from its memory. That is the whole object only if the
    mapping starts at its beginning, nothing of it is swapped out, and no process of the
    tree maps more of it; otherwise, and for a memfd (whose seals we could not see), it is
    refused by name. Its mode and owner are not known: it comes back with the restorer's."""
    where = f"{vma.start:#x}-{vma.end:#x}"
    key = object_key(device, vma.inode)
    saved = ctx.tree.state(_Saved).objects
    known = saved.get(key)
    if known is not None:
        if vma.offset + vma.size > known["size"]:
            raise ctx.refuse(where, "shared memory", "processes of the tree map different parts "
                             "of it; reading it whole takes CAP_CHECKPOINT_RESTORE")
        return
    if vma.path.startswith(_MEMFD_PREFIX):
        raise ctx.refuse(where, "shared memory", "a memfd only mapped: reading it and its seals "
                         "takes CAP_CHECKPOINT_RESTORE (through /proc/PID/map_files), which we lack")
    if vma.offset:
        raise ctx.refuse(where, "shared memory", f"mapped from offset {vma.offset}: the part before "
                         "cannot be read without CAP_CHECKPOINT_RESTORE")
    if vma.swap_kb:
        raise ctx.refuse(where, "shared memory", "partly swapped out: reading it whole takes "
                         "CAP_CHECKPOINT_RESTORE")
    obj: dict[str, Any] = {"inode": vma.inode, "device": list(device), "name": object_name(vma.path),
                           "size": vma.size, "seals": 0, "data": [], "blob": None,
                           "mode": None, "uid": None, "gid": None, "paths": [], "parent": None,
                           "xxh3_128": None}
    if ctx.writer is not None:
        page = os.sysconf("SC_PAGE_SIZE")
        for stored, index in enumerate(_resident_pages(ctx, vma, page)):
            append_run(obj["data"], [index * page, page, stored * page])
        content = b"".join(ctx.mem.read(vma.start + offset, length) for offset, length, _ in obj["data"])
        obj["xxh3_128"] = content_digest(obj["data"], content, vma.size)
        obj["blob"] = ctx.add_blob(f"shmem-{key.replace(':', '-')}.bin", content)
    saved[key] = obj


def _resident_pages(ctx: DumpContext, vma: procfs.Vma, page: int) -> list[int]:
    """Indexes of the pages the object holds under the mapping, from a mincore() run in the
    (frozen) process. Its main thread has been put back already (see
    dumper._collect_process), so it is blocked again meanwhile and put back again after."""
    thread = ctx.leader
    count = vma.size // page
    vec_size = -(-count // page) * page
    thread.block_signals()
    try:
        vec = thread.mmap_scratch(vec_size)
        try:
            thread.call("mincore", vma.start, vma.size, vec)
            resident = ctx.mem.read(vec, count)
        finally:
            thread.call("munmap", vec, vec_size)
    finally:
        thread.restore_live(ctx.saved_masks[thread.tid])
    return [index for index, flag in enumerate(resident) if flag & 1]


def outside_sharers(pids: list[int]) -> list[Blocker]:
    """Shared memory without a name (MAP_SHARED anonymous memory, a memfd, a deleted tmpfs
    file) comes back as a new object that only the restored tree holds. A process outside
    the tree that maps it or holds it open (an orphan forked from the tree, a sibling forked
    from a common parent, one the tree passed a memfd to) would silently stop sharing it with
    the tree: refused by name. Read before the freeze, as it scans the maps of other
    processes: those of the tree's users only (another user's process could only have such
    memory passed on to it deliberately), every process for a tree that runs as root."""
    held = _nameless_objects(pids)
    if not held:
        return []
    tree = set(pids) | {os.getpid()}
    users = {_owner(pid) for pid in pids}
    blockers: list[Blocker] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in tree or (0 not in users and _owner(entry) not in users):
            continue
        for key in _held_by(int(entry), held):
            pid, where = held[key]
            blockers.append(Blocker(pid, where, "shared memory",
                                    f"also held by pid {entry}, outside the tree: a restore would "
                                    "no longer share it with that process"))
            del held[key]
        if not held:
            break
    return blockers


def _owner(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


def _nameless_objects(pids: list[int]) -> dict[tuple[str, int], tuple[int, str]]:
    """The tree's shared memory objects without a name, by (device as in maps, inode): the
    first process holding each and where (a mapping's range or an fd)."""
    found: dict[tuple[str, int], tuple[int, str]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    fields = line.split(maxsplit=5)
                    if len(fields) == 6 and _nameless(fields[3], fields[5].rstrip("\n")):
                        found.setdefault((fields[3], int(fields[4])), (pid, fields[0]))
            for fd in os.listdir(f"/proc/{pid}/fd"):
                key = _fd_object(pid, fd)
                if key is not None:
                    found.setdefault(key, (pid, f"fd {fd}"))
        except (FileNotFoundError, PermissionError):
            continue  # gone, or a zombie's (no maps, no fds): the freeze and dump report them
    return found


def _nameless(device: str, path: str) -> bool:
    # device major 0: the kernel's internal shmem mount or a tmpfs
    return device.startswith("00:") and path.endswith(procfs.DELETED)


def _fd_object(pid: int, fd: str) -> tuple[str, int] | None:
    link = f"/proc/{pid}/fd/{fd}"
    try:
        if not os.readlink(link).endswith(procfs.DELETED):
            return None
        st = os.stat(link)
    except OSError:
        return None  # closed meanwhile, or not a file (a socket, a pipe)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    return (device, st.st_ino) if _nameless(device, procfs.DELETED) and stat.S_ISREG(st.st_mode) else None


def _held_by(pid: int, held: dict[tuple[str, int], tuple[int, str]]) -> set[tuple[str, int]]:
    keys: set[tuple[str, int]] = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                if not line.endswith(procfs.DELETED + "\n"):
                    continue
                fields = line.split(maxsplit=5)
                key = (fields[3], int(fields[4]))
                if key in held:
                    keys.add(key)
        for fd in os.listdir(f"/proc/{pid}/fd"):
            key = _fd_object(pid, fd)
            if key is not None and key in held:
                keys.add(key)
    except (FileNotFoundError, PermissionError):
        pass  # gone meanwhile, or a kernel thread's
    return keys


def read_data(fd: int, size: int) -> tuple[list[list[int]], bytes]:
    """(offset, length, blob offset) of every non-hole range, and their bytes."""
    segments, chunks, stored, offset = [], [], 0, 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data past offset
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        data = os.pread(fd, end - start, start)
        if len(data) != end - start:
            raise CkptError("short read of a shared memory object")
        segments.append([start, end - start, stored])
        chunks.append(data)
        stored += len(data)
        offset = end
    return segments, b"".join(chunks)


def content_digest(segments: list[list[int]], content: bytes, size: int) -> str:
    """xxh3-128 of the object's `size` bytes, holes read as zeros: the same for a sparse
    file and a dense one with the same bytes."""
    digest = xxhash.xxh3_128()
    at = 0

    def zeros(count: int) -> None:
        while count:
            take = min(count, len(_ZEROS))
            digest.update(_ZEROS[:take])
            count -= take
    with memoryview(content) as view:
        for offset, length, stored in segments:
            zeros(offset - at)
            digest.update(view[stored:stored + length])
            at = offset + length
    zeros(size - at)
    return digest.hexdigest()


# ---------------------------------------------------------------- restore

def _file_digest(path: str) -> str | None:
    """Checksum of the regular file at `path` (None if it is something else)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        segments, content = read_data(fd, st.st_size)
        return content_digest(segments, content, st.st_size)
    finally:
        os.close(fd)


def _existing(obj: dict[str, Any]) -> str | None:
    """The first of the object's names that exists; RestoreConflict if one holds other
    content, or they are different files."""
    found: dict[str, tuple[int, int]] = {}
    for name in obj["paths"]:
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        if _file_digest(name) != obj["xxh3_128"]:
            raise RestoreConflict(f"{name} exists with other content than at the checkpoint")
        found[name] = (st.st_dev, st.st_ino)
    if len(set(found.values())) > 1:
        raise RestoreConflict(f"{' and '.join(found)} were one file at the checkpoint, "
                              "now they are different files")
    return next(iter(found), None)


def _describe(obj: dict[str, Any]) -> str:
    return obj["paths"][0] if obj["paths"] else f"shared memory object {obj['name']!r}"


def check(image: ImageReader) -> None:
    """Before anything is made: every name of a saved object is free or holds the recorded
    content, the directory of a missing one can be made, and objects we will make can be
    given their owner."""
    chown = procfs.has_capability(_CAP_CHOWN)
    with open("/proc/self/mountinfo") as f:
        tmpfs = procfs.parse_tmpfs_devices(f.read())
    for obj in image.manifest["shmem"].values():
        made = not obj["paths"] or _existing(obj) is None
        if obj["paths"] and made:
            directory = os.path.dirname(obj["paths"][0])
            if not os.path.isdir(directory) and not os.path.isdir(os.path.dirname(directory)):
                raise RestoreConflict(f"{obj['paths'][0]}: its directory {directory} is missing")
            # only files that lived on a tmpfs are re-made, and only on one: an image must
            # not be a way to place files elsewhere
            home = directory if os.path.isdir(directory) else os.path.dirname(directory)
            st = os.stat(home)
            if (os.major(st.st_dev), os.minor(st.st_dev)) not in tmpfs:
                raise RestoreConflict(f"{obj['paths'][0]}: {home} is not on a tmpfs here, "
                                      "so the saved file is not re-made there")
        owner = (obj["uid"], obj["gid"])
        if made and obj["uid"] is not None and owner != (os.geteuid(), os.getegid()) and not chown:
            raise RestoreConflict(f"{_describe(obj)}: owned by uid {owner[0]} gid {owner[1]} at the "
                                  "checkpoint; giving it that owner takes CAP_CHOWN")


@dataclass
class _Made:
    """Restore: our fd of each object made for the tree, by key, the named ones made
    anew, to link at their names once the whole tree is in (publish), and the memfds whose
    own description (memfd_create's) an fd has been given already (_restore)."""

    fds: dict[str, int] = field(default_factory=dict)
    to_link: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    own_given: set[str] = field(default_factory=set)


def object_fd(ctx: RestoreContext, key: str) -> int:
    """Our fd of the restored object (made once per restore, shared by the whole tree)."""
    made = ctx.state(_Made)
    if key not in made.fds:
        made.fds[key] = _create(ctx, key, ctx.image.manifest["shmem"][key])
    return made.fds[key]


def _create(ctx: RestoreContext, key: str, obj: dict[str, Any]) -> int:
    if obj["paths"]:
        existing = _existing(obj)
        if existing is not None:
            log.debug("%s reused: it holds the checkpointed content", existing)
            fd = ctx.keep(_open_existing(existing))
        else:
            fd = ctx.keep(_new_unlinked(obj))
        ctx.state(_Made).to_link.append((obj, fd))
        if existing is not None:
            return fd
    else:
        fd = ctx.keep(os.memfd_create(obj["name"], os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING))
    os.ftruncate(fd, obj["size"])
    if obj["data"]:
        blob = ctx.image.map_blob(obj["blob"])
        assert blob is not None
        with memoryview(blob) as view:
            for offset, length, stored in obj["data"]:
                os.pwrite(fd, view[stored:stored + length], offset)
        blob.close()
    if obj["mode"] is not None:
        os.fchmod(fd, obj["mode"])
    _give_owner(fd, obj)
    if obj["seals"] and not obj["paths"]:
        fcntl.fcntl(fd, F_ADD_SEALS, obj["seals"])
    return fd


def _open_existing(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise RestoreConflict(f"cannot open {path}: {err.strerror}") from None


def _new_unlinked(obj: dict[str, Any]) -> int:
    """A file without a name on the file system of the object's names (in their directory,
    or the one above when it is missing: publish() makes it), linked there by publish()."""
    directory = os.path.dirname(obj["paths"][0])
    where = directory if os.path.isdir(directory) else os.path.dirname(directory)
    try:
        return os.open(where, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise RestoreConflict(f"{obj['paths'][0]}: cannot make a file in {where}: "
                              f"{err.strerror}") from None


def _give_owner(fd: int, obj: dict[str, Any]) -> None:
    if obj["uid"] is None:
        return
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) == (obj["uid"], obj["gid"]):
        return
    try:
        os.fchown(fd, obj["uid"], obj["gid"])
    except OSError as err:
        raise RestoreConflict(f"{_describe(obj)}: cannot give it its owner uid {obj['uid']} "
                              f"gid {obj['gid']}: {err.strerror}") from None


def publish(tree: RestoreTree) -> None:
    """Link every named object made by this restore at its names (making their directory
    when missing), once the whole tree is in: a failed restore leaves no file behind. A
    name taken meanwhile undoes the links made here and refuses the restore."""
    made: list[str] = []
    try:
        for obj, fd in tree.state(_Made).to_link:
            directory = os.path.dirname(obj["paths"][0])
            if not os.path.isdir(directory):
                os.mkdir(directory, obj["parent"]["mode"])
                made.append(directory)
                os.chmod(directory, obj["parent"]["mode"])
                os.chown(directory, obj["parent"]["uid"], obj["parent"]["gid"])
            for name in obj["paths"]:
                try:
                    syscalls.link_open_file(fd, name)
                except FileExistsError:
                    if os.path.samefile(name, f"/proc/self/fd/{fd}"):
                        continue
                    raise RestoreConflict(f"{name} was made by another process during the "
                                          "restore") from None
                made.append(name)
                log.debug("%s made again with its checkpointed content", name)
    except BaseException:
        for path in reversed(made):
            try:
                (os.rmdir if os.path.isdir(path) else os.unlink)(path)
            except OSError as err:
                log.warning("could not remove %s after a failed restore: %s", path, err)
        raise


def _claims(f: OpenFile, ctx: DumpContext) -> bool:
    return f.link.startswith(_MEMFD_PREFIX)


def _dump(f: OpenFile, ctx: DumpContext) -> dict[str, Any]:
    return {"shmem": register_file(ctx, f), "flags": f.flags, "pos": f.pos}


def reopen(key: str, flags: int, ctx: RestoreContext) -> int:
    """A new open file description of the restored object, with `flags`."""
    holder = object_fd(ctx, key)
    flags = flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC) | os.O_CLOEXEC
    try:
        return ctx.keep(os.open(f"/proc/self/fd/{holder}", flags))
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            obj = ctx.image.manifest["shmem"][key]
            raise RestoreConflict(f"cannot reopen {_describe(obj)}: {err.strerror}") from None
        raise


# The status flags memfd_create gives its description (the kernel adds O_LARGEFILE, which
# Python's os module leaves 0 on 64-bit), and those F_SETFL may have added since.
_MEMFD_FLAGS = os.O_RDWR | 0o100000
_SETFL_FLAGS = os.O_APPEND | os.O_NONBLOCK | os.O_NOATIME | os.O_DIRECT


def _restore(rec: dict[str, Any], ctx: RestoreContext) -> int:
    """A memfd's fd. The description memfd_create made does not count as a writer of the
    file, one opened again read-write does, and exec of the memfd (execveat, fexecve)
    fails with ETXTBSY while a writer is open: so the first read-write fd of a memfd gets
    the description our memfd_create made, the others one opened again."""
    key = rec["shmem"]
    status = rec["flags"] & ~os.O_CLOEXEC
    given = ctx.state(_Made).own_given
    if (status & ~_SETFL_FLAGS == _MEMFD_FLAGS and key not in given
            and not ctx.image.manifest["shmem"][key]["paths"]):
        given.add(key)
        fd = ctx.keep(os.dup(object_fd(ctx, key)))
        fcntl.fcntl(fd, fcntl.F_SETFL, status & _SETFL_FLAGS)
    else:
        fd = reopen(key, rec["flags"], ctx)
    os.lseek(fd, rec["pos"], os.SEEK_SET)
    return fd


SHMEM = Resource("shmem", section="shmem", dump_section=_section, verify=check, finish=publish)
MEMFD = FileKind("memfd", _claims, _dump, _restore)
