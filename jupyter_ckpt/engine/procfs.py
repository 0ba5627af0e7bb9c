"""Parsers for the /proc files the engine reads. Pure functions of the text, easy to test."""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class Vma:
    start: int
    end: int
    perms: str  # "rwxp"
    offset: int
    dev: str
    inode: int
    path: str
    vmflags: set[str] = field(default_factory=set)
    swap_kb: int = 0  # how much of it is swapped out (smaps' Swap:)
    shared_kb: int = 0  # its pages mapped by other processes too (smaps' Shared_Clean/Dirty:)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def prot(self) -> int:
        return (1 if self.perms[0] == "r" else 0) | (2 if self.perms[1] == "w" else 0) \
            | (4 if self.perms[2] == "x" else 0)

    @property
    def deleted(self) -> bool:
        return self.path.endswith(DELETED)


DELETED = " (deleted)"  # how /proc shows the path of a file unlinked since it was opened
_MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")


def parse_maps(text: str) -> list[Vma]:
    vmas = []
    for line in text.splitlines():
        m = _MAPS_LINE.match(line)
        if not m:
            raise ValueError(f"unparsable maps line: {line!r}")
        vmas.append(Vma(int(m[1], 16), int(m[2], 16), m[3], int(m[4], 16), m[5], int(m[6]), m[7]))
    return vmas


def own_mappings(paths: tuple[str, ...]) -> list[Vma]:
    """This process's mappings of the given paths (e.g. "[vdso]"), from maps: the few lines
    wanted are parsed, not the hundreds an interpreter maps, and smaps' page table walk is
    not needed for ranges."""
    with open("/proc/self/maps") as f:
        wanted = "".join(line for line in f if line.rstrip("\n").endswith(paths))
    return [vma for vma in parse_maps(wanted) if vma.path in paths]


def read_vmas(pid: int) -> list[Vma]:
    """Mappings with their VmFlags and swapped-out size (from smaps, which repeats the maps
    header lines)."""
    with open(f"/proc/{pid}/smaps") as f:
        text = f.read()
    vmas: list[Vma] = []
    for line in text.splitlines():
        m = _MAPS_LINE.match(line)
        if m and not line.startswith("VmFlags"):
            vmas.append(Vma(int(m[1], 16), int(m[2], 16), m[3], int(m[4], 16), m[5], int(m[6]), m[7]))
        elif line.startswith("VmFlags:"):
            vmas[-1].vmflags = set(line.split()[1:])
        elif line.startswith("Swap:"):
            vmas[-1].swap_kb = int(line.split()[1])
        elif line.startswith(("Shared_Clean:", "Shared_Dirty:")):
            vmas[-1].shared_kb += int(line.split()[1])
    return vmas


def _mounts(mountinfo: str) -> Iterator[tuple[list[str], list[str]]]:
    """Each line of a /proc/PID/mountinfo text as its fields before the " - " separator
    (id, parent, major:minor, root, mount point, options, optional fields) and after it
    (type, source, super options)."""
    for line in mountinfo.splitlines():
        head, _, tail = line.partition(" - ")
        yield head.split(), tail.split()


def parse_tmpfs_devices(mountinfo: str) -> set[tuple[int, int]]:
    """(major, minor) of every tmpfs mounted, from /proc/PID/mountinfo text."""
    devices = set()
    for fields, tail in _mounts(mountinfo):
        if tail[:1] == ["tmpfs"]:
            major, minor = fields[2].split(":")
            devices.add((int(major), int(minor)))
    return devices


def mount_table(mountinfo: str) -> Counter[tuple[str, ...]]:
    """The mounts of a /proc/PID/mountinfo text as they can be compared between mount
    namespaces: device, root, mount point, options, type and source of each (not the ids
    or propagation, which differ in a copy). /proc and what is below it are left out: a
    PID namespace's copy has its own (pidns.py)."""
    table: Counter[tuple[str, ...]] = Counter()
    for fields, tail in _mounts(mountinfo):
        if fields[4] == "/proc" or fields[4].startswith("/proc/"):
            continue
        table[(fields[2], fields[3], fields[4], fields[5], *tail[:2])] += 1
    return table


def mount_point_of(mountinfo: str, major: int, minor: int) -> str | None:
    """Where the file system with device (major, minor) is mounted, from mountinfo text
    (its first mount of the file system's root, or else its first mount)."""
    found = None
    for fields, _ in _mounts(mountinfo):
        if fields[2] == f"{major}:{minor}":
            where = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # \040: space
            if fields[3] == "/":
                return where
            found = found or where
    return found


def parse_fdinfo(text: str) -> dict[str, str]:
    """Key/value lines of /proc/PID/fdinfo/N; repeated keys (tfd, inotify) keep a list."""
    info: dict[str, str] = {}
    extra: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in info:
            extra.setdefault(key, [info[key]]).append(value)
        info[key] = value
    for key, values in extra.items():
        info[key] = values  # type: ignore[assignment]
    return info


def read_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def read_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat, indexed from 1 as in proc(5) (index 0 is unused)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    comm_end = text.rindex(")")
    head = text[:comm_end + 1]
    pid_str, _, comm = head.partition(" (")
    return ["", pid_str, comm[:-1]] + text[comm_end + 2:].split()


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def readlink(path: str) -> str:
    return os.readlink(path)


def has_capability(cap: int) -> bool:
    """Whether this process holds capability number `cap` (effective set)."""
    return bool(int(read_status(os.getpid())["CapEff"], 16) >> cap & 1)


def tree_pids(root: int) -> list[int]:
    """`root` and every process below it, parents before their children, in one pass over
    /proc (no per-process lookups); [] if `root` is gone."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    if not os.path.exists(f"/proc/{root}"):
        return []
    pids = [root]
    i = 0
    while i < len(pids):
        pids += sorted(children.get(pids[i], []))
        i += 1
    return pids


def ancestors(pid: int) -> list[int]:
    """The parent of `pid`, its parent, and so on up to the first process."""
    chain = []
    try:
        parent = int(read_stat(pid)[4])
        while parent > 0 and parent not in chain:
            chain.append(parent)
            parent = int(read_stat(parent)[4])
    except FileNotFoundError:
        pass  # an ancestor exited meanwhile: the chain above it is no longer ours
    return chain
