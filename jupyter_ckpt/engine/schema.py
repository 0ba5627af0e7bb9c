"""The image manifest's schema: every section typed, bounded and cross-checked in one place.

An image is untrusted input: it may come from a shared store, and anyone who can write its
directory can forge a manifest whose checksums agree. So before anything is restored (or
an image is stored), the whole manifest is checked against this schema, and any violation
is one line naming the field: `processes[0].threads[3].tid: must be an integer ...`.

The schema is declarative: each record type lists its required and optional fields with
their types and ranges (`Record`, `Int`, `Str`, ...), and unknown fields are refused, so a
field nobody validates cannot reach the restorer. Checks that span records (references
between sections, page runs inside their mapping and their blob, the leader thread first)
follow in `validate`. This module imports nothing of the engine's ptrace side, so the
store and tools can use it too. docs/image-format.md describes the same fields in prose.
"""
from __future__ import annotations

import base64
import bisect
import binascii
import os
import re
import socket
from typing import Any, Iterable

from .version import IMAGE_FORMAT as FORMAT, IMAGE_VERSION as VERSION

PID_MAX = 1 << 22  # PID_MAX_LIMIT on 64-bit kernels
FD_MAX = 1 << 20  # fds are refused at or above this (the kernel's default nr_open)
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
PATH_MAX = 4096
MIN_PAGE_SIZE = 4096
# Highest user address by architecture (the kernel's TASK_SIZE with 4-level page tables).
USER_ADDRESS_LIMIT = {"x86_64": 0x7FFFFFFFF000}
# Registers of `struct user_regs_struct`, by architecture (arch/ writes and reads them).
REGISTERS = {"x86_64": frozenset((
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
    "es", "fs", "gs"))}
MAX_PROCESSES = 4096
MAX_THREADS = 1 << 16
MAX_FILES = 1 << 20
MAX_VMAS = 1 << 20
MAX_RUNS = 1 << 24
MAX_BLOB_BYTES = 1 << 46
SIGINFO_SIZE = 128
XSTATE_MAX = 16384  # arch.XSTATE_BUFFER_SIZE
SIGNAL_MAX = 64
VMA_KINDS = ("anon", "file", "shmem", "sysv", "vdso", "vvar", "vvar_vclock")
SPECIAL_VMA_KINDS = ("vdso", "vvar", "vvar_vclock")
MADVISE_FLAGS = ("dc", "wf", "dd", "hg", "nh", "mg")
_HEX128 = re.compile(r"[0-9a-f]{32}\Z")
_BLOB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}\Z")
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,18})\Z")


class Invalid(ValueError):
    """One violation of the schema, with the path of the offending field."""

    def __init__(self, where: str, why: str):
        self.where = where
        self.why = why
        super().__init__(f"{where}: {why}" if where else why)


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


class Spec:
    """A type of JSON value: `check` raises Invalid or returns nothing. Plain classes, not
    dataclasses: building ten dataclasses cost every restore about 4 ms."""
    __slots__ = ()

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


class Int(Spec):
    __slots__ = ("lo", "hi")

    def __init__(self, lo: int = 0, hi: int = U64):
        self.lo, self.hi = lo, hi

    def check(self, value: Any, where: str) -> None:
        if type(value) is not int:
            raise Invalid(where, f"must be an integer, not {_kind(value)}")
        if not self.lo <= value <= self.hi:
            raise Invalid(where, f"{value} is outside [{self.lo}, {self.hi}]")


class Num(Spec):
    """An informational number (int or float)."""

    def check(self, value: Any, where: str) -> None:
        if type(value) not in (int, float):
            raise Invalid(where, f"must be a number, not {_kind(value)}")


class Bool(Spec):
    def check(self, value: Any, where: str) -> None:
        if type(value) is not bool:
            raise Invalid(where, f"must be true or false, not {_kind(value)}")


class Str(Spec):
    __slots__ = ("max_len", "pattern", "nul")

    def __init__(self, max_len: int = PATH_MAX, pattern: re.Pattern | None = None, nul: bool = False):
        self.max_len, self.pattern = max_len, pattern
        self.nul = nul  # may it hold NUL characters (paths may not)

    def check(self, value: Any, where: str) -> None:
        if type(value) is not str:
            raise Invalid(where, f"must be a string, not {_kind(value)}")
        if len(value) > self.max_len:
            raise Invalid(where, f"is {len(value)} characters long, at most {self.max_len} allowed")
        if not self.nul and "\0" in value:
            raise Invalid(where, "holds a NUL character")
        if self.pattern is not None and not self.pattern.match(value):
            raise Invalid(where, f"{value[:40]!r} is not of the expected form")


class B64(Spec):
    """Base64 of at most `max_bytes` bytes (exactly `size`, if given)."""
    __slots__ = ("max_bytes", "size")

    def __init__(self, max_bytes: int = 1 << 20, size: int | None = None):
        self.max_bytes, self.size = max_bytes, size

    def check(self, value: Any, where: str) -> None:
        Str(max_len=4 * (self.max_bytes // 3 + 1)).check(value, where)
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Invalid(where, "is not valid base64") from None
        if self.size is not None and len(raw) != self.size:
            raise Invalid(where, f"holds {len(raw)} bytes, expected {self.size}")


class Enum(Spec):
    __slots__ = ("values",)

    def __init__(self, values: tuple):
        self.values = values

    def check(self, value: Any, where: str) -> None:
        if type(value) not in (str, int) or value not in self.values:
            raise Invalid(where, f"{_show(value)} is not one of {', '.join(map(repr, self.values))}")


class Nullable(Spec):
    __slots__ = ("inner",)

    def __init__(self, inner: Spec):
        self.inner = inner

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            self.inner.check(value, where)


class List(Spec):
    __slots__ = ("item", "max_len", "min_len")

    def __init__(self, item: Spec, max_len: int = 1 << 16, min_len: int = 0):
        self.item, self.max_len, self.min_len = item, max_len, min_len

    def check(self, value: Any, where: str) -> None:
        if type(value) is not list:
            raise Invalid(where, f"must be a list, not {_kind(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise Invalid(where, f"has {len(value)} entries, expected {self.min_len} to {self.max_len}")
        for i, item in enumerate(value):
            self.item.check(item, _at(where, i))


class Tuple(Spec):
    """A list of fixed length whose entries each have their own type."""
    __slots__ = ("items",)

    def __init__(self, items: tuple):
        self.items = items

    def check(self, value: Any, where: str) -> None:
        if type(value) is not list:
            raise Invalid(where, f"must be a list, not {_kind(value)}")
        if len(value) != len(self.items):
            raise Invalid(where, f"has {len(value)} entries, expected {len(self.items)}")
        for i, (spec, item) in enumerate(zip(self.items, value)):
            spec.check(item, _at(where, i))


class OneOf(Spec):
    """The first alternative that accepts the value; the last one's complaint otherwise."""
    __slots__ = ("alternatives",)

    def __init__(self, alternatives: tuple):
        self.alternatives = alternatives

    def check(self, value: Any, where: str) -> None:
        for spec in self.alternatives[:-1]:
            try:
                spec.check(value, where)
                return
            except Invalid:
                pass
        self.alternatives[-1].check(value, where)


class Map(Spec):
    """A JSON object used as a dictionary: keys of one form, values of one type."""
    __slots__ = ("key", "value", "max_len")

    def __init__(self, key: Spec, value: Spec, max_len: int = 1 << 16):
        self.key, self.value, self.max_len = key, value, max_len

    def check(self, value: Any, where: str) -> None:
        if type(value) is not dict:
            raise Invalid(where, f"must be an object, not {_kind(value)}")
        if len(value) > self.max_len:
            raise Invalid(where, f"has {len(value)} entries, at most {self.max_len} allowed")
        for key, item in value.items():
            self.key.check(key, _at(where, f"<{key[:40]}>"))
            self.value.check(item, _at(where, key))


class Record(Spec):
    """A JSON object with named fields; fields not listed are refused."""
    __slots__ = ("required", "optional")

    def __init__(self, required: dict[str, Spec], optional: dict[str, Spec] | None = None):
        self.required = required
        self.optional = optional or {}

    def check(self, value: Any, where: str) -> None:
        if type(value) is not dict:
            raise Invalid(where, f"must be an object, not {_kind(value)}")
        for name, spec in self.required.items():
            if name not in value:
                raise Invalid(_at(where, name), "is missing")
            spec.check(value[name], _at(where, name))
        for name, item in value.items():
            if name in self.required:
                continue
            spec = self.optional.get(name)
            if spec is None:
                raise Invalid(_at(where, str(name)[:40]), "is not a field of this record")
            spec.check(item, _at(where, name))

    def extended(self, required: dict[str, Spec] | None = None,
                 optional: dict[str, Spec] | None = None) -> "Record":
        return Record({**self.required, **(required or {})}, {**self.optional, **(optional or {})})


class Any_(Spec):
    """Informational content nothing restores from (bounded only by the manifest's size)."""

    def check(self, value: Any, where: str) -> None:
        pass


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), "?")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------ the records

PID = Int(1, PID_MAX)
PID_OR_0 = Int(0, PID_MAX)  # 0: "outside our PID namespace" in ppid/pgid/sid
FD = Int(0, FD_MAX - 1)
SIZE = Int(0, MAX_BLOB_BYTES)
ADDR = Int(0, U64)
I32 = Int(-(1 << 31), (1 << 31) - 1)
I64 = Int(-(1 << 63), (1 << 63) - 1)
UID = Int(0, U32 - 1)
PATH = Str(PATH_MAX)
HEX128 = Str(32, _HEX128)
SHMEM_KEY = Str(64, re.compile(r"[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,20}\Z"))  # major:minor:inode
DECIMAL = Str(19, _DECIMAL)
BLOB = Str(255, _BLOB_NAME)
FLAGS = Int(0, U32)
DEVICE = Tuple((Int(0, U32), Int(0, U32)))
TIMESPEC = Tuple((Int(0, I64.hi), Int(0, 999_999_999)))
SIGINFO = B64(SIGINFO_SIZE, SIGINFO_SIZE)
RANGES = List(Tuple((SIZE, SIZE, SIZE)), MAX_RUNS)  # [offset, length, blob_offset]
SOCKOPTS = List(Tuple((Int(0, U32), Int(0, U32), I64)), 256)
HOSTPORT = Tuple((Str(255), Int(0, 65535)))
TIMEVAL = Tuple((Int(0, I64.hi), Int(0, 999_999)))
BPF_MAXINSNS = 4096
# socket options that are not integers (resources/sockets_common.py): a classic BPF filter
# (struct sock_filter array), the bound device, struct linger, the receive and send timeouts,
# and (TCP) the congestion control
SOCK_EXTRAS = Record({}, {
    "filter": B64(8 * BPF_MAXINSNS), "device": Str(15, re.compile(r"[^/\s]{1,15}\Z")),
    "linger": Tuple((Int(0, 1), Int(0, I32.hi))), "rcvtimeo": TIMEVAL, "sndtimeo": TIMEVAL,
    "congestion": Str(15, re.compile(r"[a-z0-9_]{1,15}\Z")),
    # (UDP) the multicast groups joined: [device, group address]
    "multicast": List(Tuple((Str(15, re.compile(r"[^/\s]{1,15}\Z")),
                             Str(45, re.compile(r"[0-9a-fA-F.:]{2,45}\Z")))), 1 << 12)})

# What identifies a mapped file or executable (fileid.py): size and time, and its GNU
# build-id or (small files) a checksum of its content.
FILE_FACTS = Record({"size": SIZE, "mtime_ns": I64},
                    {"build_id": Str(128, re.compile(r"[0-9a-f]{2,128}\Z")), "xxh3_128": HEX128,
                     "blob": BLOB})  # blob: a portable image's copy of the file

HOST = Record({
    "hostname": Str(255), "machine": Str(64), "kernel": Str(255), "boot_id": Str(64),
    "page_size": Int(1, 1 << 30), "cpu_flags": List(Str(64), 4096),
})

# linux/membarrier.h: REGISTER_GLOBAL_EXPEDITED, _PRIVATE_EXPEDITED, _SYNC_CORE, _RSEQ
MEMBARRIER_REGISTER_BITS = 1 << 2 | 1 << 4 | 1 << 6 | 1 << 8

PROCESS = Record({
    "ppid": PID_OR_0, "pgid": PID_OR_0, "sid": PID_OR_0, "ctty": Nullable(Int(0, U32)),
    "cwd": PATH, "umask": Int(0, 0o777),
    "uids": Tuple((UID,) * 4), "gids": Tuple((UID,) * 4), "groups": List(UID, 65536),
    "caps": Record({name: Str(16, re.compile(r"[0-9a-f]{1,16}\Z"))
                    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}),
    "no_new_privs": Bool(), "rlimits": Map(Str(32, re.compile(r"RLIMIT_[A-Z]+\Z")),
                                           Tuple((Int(-1, U64), Int(-1, U64))), 32),
    "personality": Int(0, U32), "oom_score_adj": Int(-1000, 1000),
    "mm": Record({name: ADDR for name in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk", "start_stack",
        "arg_start", "arg_end", "env_start", "env_end")}),
    "auxv": B64(4096), "exe": FILE_FACTS.extended({"path": PATH}),
    "cmdline": Str(1 << 20, nul=True),
}, {
    # absent in images of older versions (then restored as unset)
    "child_subreaper": Bool(), "thp_disable": Enum((0, 1, 3)),  # 3: disabled except advised
    "membarrier": Int(0, MEMBARRIER_REGISTER_BITS),  # absent before Linux 6.3
    "loginuid": Int(0, U32),  # absent without audit support; U32: unset ((uid_t)-1)
})

SIGNALS = Record({
    "actions": Map(Enum(tuple(str(n) for n in range(1, SIGNAL_MAX + 1))),
                   Tuple((ADDR, ADDR, ADDR, ADDR)), SIGNAL_MAX),
    "itimers": Map(Enum(("0", "1", "2")), Tuple((Int(0, I64.hi), Int(0, 999_999),
                                                Int(0, I64.hi), Int(0, 999_999))), 3),
    "shared_pending": List(SIGINFO, 4096),
    "thread_pending": Map(DECIMAL, List(SIGINFO, 4096), MAX_THREADS),
})

THREAD = Record({
    "tid": PID, "regs": Map(Str(16), ADDR, 64), "restart": Nullable(Str(32)),
    "xstate": B64(XSTATE_MAX), "sigmask": ADDR, "robust_list": Tuple((ADDR, SIZE)),
    "rseq": Nullable(Record({"pointer": ADDR, "size": Int(0, 1 << 16), "signature": Int(0, U32)})),
    "clear_child_tid": ADDR, "sigaltstack": Tuple((ADDR, FLAGS, SIZE)), "comm": Str(64),
    # SCHED_OTHER, FIFO, RR, BATCH, IDLE; priority 1-99 for FIFO and RR, else 0
    "sched": Record({"policy": Enum((0, 1, 2, 3, 5)), "priority": Int(0, 99),
                     "nice": Int(-20, 19), "reset_on_fork": Bool()}),
})

FD_ENTRY = Record({"fd": FD, "file": Str(64), "cloexec": Bool()})

RUN = OneOf((Tuple((ADDR, SIZE, SIZE)), Tuple((ADDR, SIZE, SIZE, Int(0, 255)))))

VMA = Record({
    "start": ADDR, "end": ADDR, "prot": Int(0, 7), "kind": Enum(VMA_KINDS), "shared": Bool(),
    "path": Str(PATH_MAX + 64), "growsdown": Bool(), "noreserve": Bool(),
    "madvise": List(Enum(MADVISE_FLAGS), len(MADVISE_FLAGS)), "pages": List(RUN, MAX_RUNS),
}, {
    "offset": SIZE, "file": FILE_FACTS, "shmem": SHMEM_KEY,
    "shmid": Int(0, (1 << 31) - 1),
    # resources/memory.py: pages still shared copy-on-write with the parent (its content)
    "cow": List(Tuple((ADDR, SIZE)), MAX_RUNS),
})

MEMORY = Record({"vmas": List(VMA, MAX_VMAS), "pages_blob": BLOB},
                {"vdso_xxh3_128": HEX128, "zero_bytes": SIZE,
                 # the vdso's exported functions: name -> offset in it (resources/vdso.py)
                 "vdso_symbols": Map(Str(64), SIZE, 256),
                 # this kernel's getrandom vdso state parameters (resources/vdso.py)
                 "vdso_getrandom": Record({"state_size": Int(1, 1 << 30), "prot": Int(0, 7),
                                           "flags": Int(0, U32)})})

# resources/posix_timers.py: notify 0 signal, 1 none, 2 thread (glibc's SIGEV_THREAD
# runs as a signal), 4 signal to the thread `tid`; a negative clock is a CPU clock
POSIX_TIMER = Record({
    "id": Int(0, (1 << 31) - 1), "clock": I32, "signal": I32, "value": ADDR,
    "notify": Enum((0, 1, 2, 4)), "interval": TIMESPEC, "remaining": TIMESPEC,
    "overrun": Int(0, (1 << 31) - 1),
}, {"tid": PID})
POSIX_CLOCKS = (0, 1, 2, 3, 7, 8, 9, 11)

PROCESS_ENTRY = Record({
    "pid": PID, "process": PROCESS, "signals": SIGNALS,
    "threads": List(THREAD, MAX_THREADS, min_len=1), "fds": List(FD_ENTRY, FD_MAX),
    "memory": MEMORY, "posix_timers": List(POSIX_TIMER, 1 << 16),
})

_FILE = Record({"id": Str(64), "kind": Str(32), "owner": PID})
LOCK = Record({"kind": Enum(("posix", "flock", "ofd")), "write": Bool(), "start": SIZE,
               "end": Nullable(SIZE)})
# One record type per file kind (resources/*.py); `kind` selects it.
FILE_KINDS: dict[str, Record] = {
    "external-stdio": _FILE.extended({"stream": Int(0, 2)}, {"was": Str(PATH_MAX + 64), "flags": FLAGS}),
    "memfd": _FILE.extended({"shmem": SHMEM_KEY, "flags": FLAGS, "pos": SIZE}),
    "regular-file": _FILE.extended(
        {"path": PATH, "flags": FLAGS, "pos": SIZE, "size": SIZE, "mode": Int(0, 0o177777),
         "locks": List(LOCK, 4096)},
        {"unlinked": Record({"inode": Tuple((ADDR, ADDR)), "blob": BLOB, "uid": UID, "gid": UID},
                            {"data": RANGES,  # absent: the blob is the whole content
                             "times": Tuple((I64, I64))}),  # atime, mtime in ns
         "shmem": SHMEM_KEY}),  # a file on a tmpfs: the object that holds it
    "directory": _FILE.extended({"path": PATH, "flags": FLAGS, "pos": I64}),
    "path-only": _FILE.extended({"path": PATH, "flags": FLAGS, "type": Enum((
        "file", "directory", "symlink", "fifo", "socket", "char-device", "block-device"))}),
    "char-device": _FILE.extended({"device": DEVICE, "path": Enum((
        "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")), "flags": FLAGS,
        "pos": SIZE}),
    "pty": _FILE.extended({"index": Int(0, U32), "side": Enum(("master", "slave")), "flags": FLAGS}),
    "pipe": _FILE.extended({"inode": Int(0, U64), "fifo_path": Nullable(PATH), "flags": FLAGS,
                            "capacity": Int(4096, 1 << 31)},
                           {"data_blob": BLOB, "dev": Int(0, U64)}),  # dev: FIFOs only
    "eventfd": _FILE.extended({"count": Int(0, U64 - 1), "flags": FLAGS, "semaphore": Bool()}),
    "timerfd": _FILE.extended({"clockid": Int(0, 11), "ticks": Int(0, U64), "value": TIMESPEC,
                               "interval": TIMESPEC, "flags": FLAGS,
                               "settime_flags": Int(0, 3), "deadline": Nullable(Int(0, I64.hi))}),
    "signalfd": _FILE.extended({"sigmask": ADDR, "flags": FLAGS}),
    "pidfd": _FILE.extended({"pid": PID, "flags": FLAGS}),
    "inotify": _FILE.extended({"flags": FLAGS, "watches": List(Record(
        {"wd": Int(1, (1 << 31) - 1), "mask": Int(0, U32), "path": PATH}), 1 << 16)}),
    "epoll": _FILE.extended({"flags": FLAGS, "targets": List(Tuple((FD, Int(0, U32), ADDR)), 1 << 16)}),
    "unix-socket": _FILE.extended(
        {"inode": Int(0, U64), "type": Enum((1, 2, 5)), "flags": FLAGS,
         "name": Nullable(B64(110)), "peer": Nullable(Int(0, U64)), "shutdown": Int(0, 3),
         "options": SOCKOPTS, "role": Enum(("listening", "pending", "pair", "connected",
                                            "connected-outside", "disconnected", "unconnected")),
         "queue": List(B64(1 << 20), 1 << 16)},
        {"backlog": Int(0, 1 << 20), "peer_name": Nullable(B64(110)),
         # the bound socket file (null: removed), and the directory a relative name is from
         "file": Nullable(Record({"mode": Int(0, 0o7777), "uid": UID, "gid": UID})),
         "dir": PATH,
         "pending": List(Int(0, U64), 1 << 16),  # listening: the tree's sockets to accept
         # datagram sockets: who sent each queued message, and its credentials
         "senders": List(Record({"name": Nullable(B64(110)), "inode": Nullable(Int(0, U64))}),
                         1 << 16),
         "creds": List(Nullable(Tuple((PID, UID, UID))), 1 << 16), "sockopts": SOCK_EXTRAS,
         # a socketpair's creator that had exited: [pid, uid, gid] (SO_PEERCRED)
         "peercred": Tuple((PID, UID, UID))}),
    "inet-socket": _FILE.extended(
        {"family": Enum((2, 10)), "type": Enum((1, 2)), "flags": FLAGS, "local": HOSTPORT,
         "options": SOCKOPTS, "state": Enum(("listen", "disconnected", "close", "udp", "established"))},
        {"backlog": Int(0, 1 << 20), "peer": Nullable(HOSTPORT), "sockopts": SOCK_EXTRAS,
         "shutdown": Int(1, 3),  # sock_diag's: 1 for reading, 2 for writing, 3 both
         "protocol": Enum((socket.IPPROTO_UDPLITE,)),  # a datagram socket's, when not UDP
         # an established connection (tcp_repair.py): sequence numbers (where each queue
         # ends), queued data, how much of the send queue was not sent yet, negotiated
         # options, TCP_TIMESTAMP and struct tcp_repair_window
         "tcp": Record({"send_seq": Int(0, U32), "recv_seq": Int(0, U32), "unsent": SIZE,
                        "send_blob": BLOB, "recv_blob": BLOB, "mss": Int(0, 0xFFFF),
                        "sack": Bool(), "timestamps": Bool(),
                        "wscale": Nullable(Tuple((Int(0, 14), Int(0, 14)))),
                        "timestamp": Int(0, U32), "window": Tuple((Int(0, U32),) * 5)}),
         # a connection dumped with tcp_close: the state it was in (it comes back reset)
         "was": Enum(("established", "syn-sent", "syn-recv", "fin-wait1", "fin-wait2",
                      "time-wait", "close-wait", "last-ack", "closing"))}),
}

ZOMBIE = Record({"pid": PID, "ppid": PID, "exit_code": Int(0, 0xFFFF)})

OWNER = Record({"mode": Int(0, 0o7777), "uid": UID, "gid": UID})
# resources/shmem.py: one object per (device, inode) of a tmpfs file, memfd or shared
# anonymous region; its names in one tmpfs directory, mode and owner (null when read
# through a mapping), and the checksum of its content (holes as zeros)
SHMEM = Record({"inode": Int(0, U64), "device": DEVICE, "name": Str(255, nul=False),
                "size": SIZE, "seals": Int(0, 0xFFFF), "data": RANGES, "blob": BLOB,
                "mode": Nullable(Int(0, 0o7777)), "uid": Nullable(UID), "gid": Nullable(UID),
                "paths": List(PATH, 64), "parent": Nullable(OWNER), "xxh3_128": HEX128})

_TERMIOS = Tuple((FLAGS, FLAGS, FLAGS, FLAGS, FLAGS, FLAGS,
                  List(OneOf((Int(0, 255), B64(1, 1))), 64)))
PTY = Record({"termios": _TERMIOS, "master_termios": _TERMIOS,
              "winsize": Tuple((Int(0, 0xFFFF),) * 4), "locked": Int(0, 1),
              "input": B64(1 << 20), "output": B64(1 << 20), "foreground": PID_OR_0},
             {"slave_owner": Tuple((UID, UID)), "slave_mode": Int(0, 0o7777)})

SYSV = Record({"shmid": Int(0, (1 << 31) - 1), "key": I32, "mode": Int(0, 0o177777),
               "size": SIZE, "data": RANGES, "blob": BLOB})

MANIFEST = Record({
    "format": Enum((FORMAT,)), "version": Int(0, U32), "manifest_xxh3_128": HEX128,
    "owner_uid": UID, "root_pid": PID, "host": HOST,
    "processes": List(PROCESS_ENTRY, MAX_PROCESSES, min_len=1),
    "zombies": List(ZOMBIE, MAX_PROCESSES), "files": List(Any_(), MAX_FILES),
    "shmem": Map(SHMEM_KEY, SHMEM), "ptys": Map(DECIMAL, PTY, 4096), "sysv": Map(DECIMAL, SYSV, 4096),
    "blobs": Map(BLOB, Record({"size": SIZE, "xxh3_128": HEX128}), 1 << 20),
}, {
    "created": Str(64), "tool_version": Str(64), "stats": Any_(),
    "bases": List(Record({"path": PATH, "manifest_xxh3_128": HEX128}), 255),
})


# ------------------------------------------------------------------ cross-checks

def validate(manifest: Any) -> None:
    """Raise Invalid unless `manifest` is a well-formed image manifest of this version
    whose records agree with each other and with its blob table."""
    if type(manifest) is not dict:
        raise Invalid("", "the manifest must be a JSON object")
    if manifest.get("format") != FORMAT:
        raise Invalid("format", "not a jupyter-ckpt image")
    if manifest.get("version") != VERSION:
        raise Invalid("version", f"image format version {_show(manifest.get('version'))}, "
                      f"this jupyter-ckpt reads version {VERSION}")
    MANIFEST.check(manifest, "")
    for i, f in enumerate(manifest["files"]):
        where = f"files[{i}]"
        if type(f) is not dict:
            raise Invalid(where, f"must be an object, not {_kind(f)}")
        kind = f.get("kind")
        if kind not in FILE_KINDS:
            raise Invalid(_at(where, "kind"), f"{_show(kind)} is not a known kind of open file")
        FILE_KINDS[kind].check(f, where)
    _Checker(manifest).run()


class _Checker:
    """References between sections, and sizes against the blob table."""

    def __init__(self, manifest: dict[str, Any]):
        self.m = manifest
        self.machine = manifest["host"]["machine"]
        # Alignment is checked at the smallest page size Linux has: whether the image's page
        # size is this host's is for the host check to say (hostinfo.incompatibilities).
        self.page = MIN_PAGE_SIZE
        self.blobs = manifest["blobs"]
        self.pids = [p["pid"] for p in manifest["processes"]]
        self.zombie_pids = [z["pid"] for z in manifest["zombies"]]
        self.files = {f["id"]: f for f in manifest["files"]}
        self.unix_sockets = {f["inode"] for f in manifest["files"] if f["kind"] == "unix-socket"}

    def run(self) -> None:
        m = self.m
        page_size = m["host"]["page_size"]
        if page_size & (page_size - 1) or page_size < MIN_PAGE_SIZE:
            raise Invalid("host.page_size", f"{page_size} is not a page size")
        _unique(self.pids + self.zombie_pids, "processes[].pid and zombies[].pid")
        if m["root_pid"] != self.pids[0]:
            raise Invalid("root_pid", f"{m['root_pid']} is not processes[0].pid ({self.pids[0]})")
        tids = [t["tid"] for p in m["processes"] for t in p["threads"]]
        _unique(tids + self.zombie_pids, "thread ids")
        _unique(list(self.files), "files[].id")
        for i, z in enumerate(m["zombies"]):
            if z["ppid"] not in self.pids:
                raise Invalid(f"zombies[{i}].ppid", f"{z['ppid']} is not a process of the image")
        for i, f in enumerate(m["files"]):
            self._file(f, f"files[{i}]")
        for key, obj in m["shmem"].items():
            if key != f"{obj['device'][0]}:{obj['device'][1]}:{obj['inode']}":
                raise Invalid(f"shmem.{key}", "its device and inode do not match its key")
            self._ranges(obj["data"], obj["size"], obj["blob"], f"shmem.{key}")
            paths = obj["paths"]
            if any(not p.startswith("/") or "/../" in p + "/" or "/./" in p + "/" for p in paths) \
                    or len({os.path.dirname(p) for p in paths}) > 1:
                raise Invalid(f"shmem.{key}.paths", "names must be absolute, normalized and "
                              "in one directory")
            if (obj["parent"] is None) != (not paths):
                raise Invalid(f"shmem.{key}.parent", "is given exactly when the object has names")
        for key, seg in m["sysv"].items():
            if key != str(seg["shmid"]):
                raise Invalid(f"sysv.{key}.shmid", f"{seg['shmid']} does not match its key")
            self._ranges(seg["data"], seg["size"], seg["blob"], f"sysv.{key}")
        for i, p in enumerate(m["processes"]):
            self._process(p, f"processes[{i}]")

    def _blob(self, name: str, where: str) -> int:
        if name not in self.blobs:
            raise Invalid(where, f"names blob {name!r}, which is not in the blob table")
        return self.blobs[name]["size"]

    def _ranges(self, ranges: list, size: int, blob: str, where: str) -> None:
        blob_size = self._blob(blob, _at(where, "blob"))
        end = 0
        for j, (offset, length, blob_offset) in enumerate(ranges):
            if offset < end or offset + length > size:
                raise Invalid(f"{where}.data[{j}]", "ranges must be in order and inside the object")
            if blob_offset + length > blob_size:
                raise Invalid(f"{where}.data[{j}]", f"reaches past the end of blob {blob}")
            end = offset + length

    def _file(self, f: dict[str, Any], where: str) -> None:
        if f["owner"] not in self.pids:
            raise Invalid(_at(where, "owner"), f"{f['owner']} is not a process of the image")
        kind = f["kind"]
        if kind in ("memfd", "regular-file") and "shmem" in f and f["shmem"] not in self.m["shmem"]:
            raise Invalid(_at(where, "shmem"), f"{f['shmem']} is not in shmem")
        if kind == "pty" and str(f["index"]) not in self.m["ptys"]:
            raise Invalid(_at(where, "index"), f"{f['index']} is not in ptys")
        if kind == "pidfd" and f["pid"] not in self.pids + self.zombie_pids:
            raise Invalid(_at(where, "pid"), f"{f['pid']} is not a process of the image")
        if kind == "pipe" and "data_blob" in f:
            size = self._blob(f["data_blob"], _at(where, "data_blob"))
            if size > f["capacity"]:
                raise Invalid(_at(where, "data_blob"), f"holds {size} bytes, more than the "
                              f"pipe's capacity of {f['capacity']}")
        if kind == "regular-file" and "unlinked" in f:
            self._blob(f["unlinked"]["blob"], _at(where, "unlinked.blob"))
            if "data" in f["unlinked"]:
                self._ranges(f["unlinked"]["data"], f["size"], f["unlinked"]["blob"],
                             _at(where, "unlinked"))
            elif self._blob(f["unlinked"]["blob"], _at(where, "unlinked.blob")) != f["size"]:
                raise Invalid(_at(where, "unlinked.blob"), "without data ranges it must hold "
                              "the whole file")
        if kind in ("regular-file", "directory", "path-only") and not f["path"].startswith("/"):
            raise Invalid(_at(where, "path"), "must be an absolute path")
        if kind == "path-only" and not f["flags"] & os.O_PATH:
            raise Invalid(_at(where, "flags"), "an O_PATH file's flags must hold O_PATH")
        if kind == "unix-socket":
            self._unix_socket(f, where)
        if kind == "inet-socket":
            self._inet_socket(f, where)

    def _sockopts(self, f: dict[str, Any], where: str) -> None:
        """A filter is whole instructions; only TCP has a congestion control."""
        extras = f.get("sockopts", {})
        if "filter" in extras and (not extras["filter"] or len(base64.b64decode(extras["filter"])) % 8):
            raise Invalid(_at(where, "sockopts.filter"), "is not a whole number of BPF instructions")
        if "congestion" in extras and (f["kind"] != "inet-socket" or f["type"] != socket.SOCK_STREAM):
            raise Invalid(_at(where, "sockopts.congestion"), "only a TCP socket has a congestion control")
        if "multicast" in extras and (f["kind"] != "inet-socket" or f["type"] != socket.SOCK_DGRAM):
            raise Invalid(_at(where, "sockopts.multicast"), "only a UDP socket joins multicast groups")

    def _inet_socket(self, f: dict[str, Any], where: str) -> None:
        """An established connection has its peer and saved state, and only it has them."""
        self._sockopts(f, where)
        if "protocol" in f and f["type"] != socket.SOCK_DGRAM:
            raise Invalid(_at(where, "protocol"), "only a datagram socket may be UDP-Lite")
        if (f["state"] == "established") != ("tcp" in f):
            raise Invalid(_at(where, "tcp"), "an established connection, and only one, has a saved state")
        if "tcp" not in f:
            return
        if f["type"] != socket.SOCK_STREAM or f.get("peer") is None:
            raise Invalid(_at(where, "peer"), "an established connection is a TCP one with a peer")
        tcp = f["tcp"]
        if tcp["unsent"] > self._blob(tcp["send_blob"], _at(where, "tcp.send_blob")):
            raise Invalid(_at(where, "tcp.unsent"), "more than the send queue holds")
        self._blob(tcp["recv_blob"], _at(where, "tcp.recv_blob"))

    def _unix_socket(self, f: dict[str, Any], where: str) -> None:
        """The references unix.py follows at restore: peers, senders and connections
        waiting to be accepted are sockets of the image; per-message lists match the queue."""
        self._sockopts(f, where)
        if "peercred" in f and f["role"] not in ("pair", "disconnected"):
            raise Invalid(_at(where, "peercred"), "only a socketpair's end has a creator")
        if f["role"] == "pair" and f["peer"] not in self.unix_sockets:
            raise Invalid(_at(where, "peer"), f"{f['peer']} is not a unix socket of the image")
        if f["role"] == "connected" and not f.get("peer_name"):
            raise Invalid(_at(where, "peer_name"), "a connected socket needs its peer's name")
        for inode in f.get("pending", []):
            if inode not in self.unix_sockets:
                raise Invalid(_at(where, "pending"), f"{inode} is not a unix socket of the image")
        if f["type"] == 2 and f["queue"] and "senders" not in f:
            raise Invalid(_at(where, "senders"), "is missing (queued datagrams need their senders)")
        for name in ("senders", "creds"):
            if name in f and len(f[name]) != len(f["queue"]):
                raise Invalid(_at(where, name), f"has {len(f[name])} entries for "
                              f"{len(f['queue'])} queued messages")
        for sender in f.get("senders", []):
            if sender["inode"] is not None and sender["inode"] not in self.unix_sockets:
                raise Invalid(_at(where, "senders"), f"{sender['inode']} is not a unix socket "
                              "of the image")
        if "dir" in f and not f["dir"].startswith("/"):
            raise Invalid(_at(where, "dir"), "must be an absolute path")

    def _process(self, p: dict[str, Any], where: str) -> None:
        pid = p["pid"]
        if p["threads"][0]["tid"] != pid:
            raise Invalid(f"{where}.threads[0].tid", f"the thread group leader ({pid}) must come first")
        registers = REGISTERS.get(self.machine)
        for j, t in enumerate(p["threads"]):
            sched = t["sched"]
            if (sched["policy"] in (1, 2)) != (sched["priority"] > 0):
                raise Invalid(f"{where}.threads[{j}].sched.priority", "real-time policies "
                              "(FIFO, RR) need a priority of 1 to 99, the others 0")
            if registers is not None and set(t["regs"]) != registers:
                missing = sorted(registers - set(t["regs"])) or sorted(set(t["regs"]) - registers)
                raise Invalid(f"{where}.threads[{j}].regs", f"registers of {self.machine} expected "
                              f"(differs in {', '.join(missing[:3])})")
        if p["process"].get("membarrier", 0) & ~MEMBARRIER_REGISTER_BITS:
            raise Invalid(f"{where}.process.membarrier", "holds bits other than the "
                          "MEMBARRIER_CMD_REGISTER_* ones")
        tids = {t["tid"] for t in p["threads"]}
        for tid in p["signals"]["thread_pending"]:
            if int(tid) not in tids:
                raise Invalid(f"{where}.signals.thread_pending.{tid}", "is not a thread of this process")
        for facts, at in [(p["process"]["exe"], f"{where}.process.exe")] + [
                (v["file"], f"{where}.memory.vmas[{j}].file")
                for j, v in enumerate(p["memory"]["vmas"]) if "file" in v]:
            if "blob" in facts:
                if self._blob(facts["blob"], f"{at}.blob") != facts["size"]:
                    raise Invalid(f"{at}.blob", "the copy is not of the file's recorded size")
                if not ("build_id" in facts or "xxh3_128" in facts):
                    raise Invalid(f"{at}.blob", "a copy needs the file's build-id or checksum")
        timer_ids = [t["id"] for t in p["posix_timers"]]
        _unique(timer_ids, f"{where}.posix_timers[].id")
        for j, t in enumerate(p["posix_timers"]):
            at = f"{where}.posix_timers[{j}]"
            if t["clock"] >= 0 and t["clock"] not in POSIX_CLOCKS:
                raise Invalid(_at(at, "clock"), f"{t['clock']} is not a clock a timer can use")
            if t["notify"] != 1 and not 1 <= t["signal"] <= SIGNAL_MAX:
                raise Invalid(_at(at, "signal"), f"{t['signal']} is not a signal")
            if (t["notify"] == 4) != ("tid" in t) or ("tid" in t and t["tid"] not in tids):
                raise Invalid(_at(at, "tid"), "a timer signals a thread of its own process "
                              "exactly when its notify mode says so")
        ctty = p["process"]["ctty"]
        if ctty is not None and str(ctty) not in self.m["ptys"]:
            raise Invalid(f"{where}.process.ctty", f"{ctty} is not in ptys")
        for name, (soft, hard) in p["process"]["rlimits"].items():
            if hard != -1 and (soft == -1 or soft > hard):
                raise Invalid(f"{where}.process.rlimits.{name}", "soft limit above the hard limit")
        for j, entry in enumerate(p["fds"]):
            file = self.files.get(entry["file"])
            if file is None:
                raise Invalid(f"{where}.fds[{j}].file", f"{entry['file']!r} is not in files")
        _unique([e["fd"] for e in p["fds"]], f"{where}.fds[].fd")
        fds = {e["fd"] for e in p["fds"]}
        for f in self.files.values():
            if f["kind"] == "epoll" and f["owner"] == pid:
                for target, _, _ in f["targets"]:
                    if target not in fds:
                        raise Invalid(f"files[{f['id']}].targets", f"fd {target} is not open in {pid}")
        self._memory(p["memory"], f"{where}.memory")
        self._cow(p, f"{where}.memory")

    def _cow(self, p: dict[str, Any], where: str) -> None:
        """Pages shared with the parent are its content: the parent must be restored with
        the same private memory there (anonymous, or the same file at the same offset), and
        the process must save no page of its own there."""
        parent = next((q for q in self.m["processes"] if q["pid"] == p["process"]["ppid"]), None)
        for j, v in enumerate(p["memory"]["vmas"]):
            at = f"{where}.vmas[{j}].cow"
            if not v.get("cow"):
                continue
            if v["kind"] not in ("anon", "file") or v["shared"] or parent is None:
                raise Invalid(at, "only private memory of a process whose parent is in the "
                              "image can share pages with it")
            areas = [(a["start"], a["end"]) for a in parent["memory"]["vmas"]
                     if a["kind"] == v["kind"] and not a["shared"] and (v["kind"] == "anon" or (
                         a["path"] == v["path"] and a.get("offset", -1) - a["start"] == v["offset"] - v["start"]))]
            area_starts = [lo for lo, _ in areas]
            own = sorted((run[0], run[0] + run[1]) for run in v["pages"])
            own_starts = [lo for lo, _ in own]
            previous_end = v["start"]
            for k, (address, length) in enumerate(v.get("cow", [])):
                end = address + length
                if address % self.page or length % self.page or not length \
                        or address < previous_end or end > v["end"]:
                    raise Invalid(f"{at}[{k}]", "is not a page-aligned run inside its mapping, "
                                  "after the previous one")
                previous_end = end
                i = bisect.bisect_right(area_starts, address) - 1
                if i < 0 or end > areas[i][1]:
                    raise Invalid(f"{at}[{k}]", "is not inside the same private memory of the parent")
                i = bisect.bisect_left(own_starts, end) - 1  # the last own run starting before its end
                if i >= 0 and own[i][1] > address:
                    raise Invalid(f"{at}[{k}]", "overlaps pages the process saved itself")

    def _memory(self, memory: dict[str, Any], where: str) -> None:
        limit = USER_ADDRESS_LIMIT.get(self.machine, U64)
        page = self.page
        blob_size = self.blobs.get(memory["pages_blob"], {}).get("size")
        bases = len(self.m.get("bases", []))
        previous_end = 0
        if "vdso_symbols" in memory and not any(v["kind"] == "vdso" for v in memory["vmas"]):
            raise Invalid(_at(where, "vdso_symbols"), "names symbols of a vdso the image does not map")
        for j, v in enumerate(memory["vmas"]):
            at = f"{where}.vmas[{j}]"
            start, end, kind = v["start"], v["end"], v["kind"]
            if start % page or end % page or not start < end <= limit:
                raise Invalid(at, f"{start:#x}-{end:#x} is not a page-aligned range of user memory")
            if start < previous_end:
                raise Invalid(at, "mappings must be in address order and must not overlap")
            previous_end = end
            if kind == "vdso":
                for name, offset in memory.get("vdso_symbols", {}).items():
                    if offset >= end - start:
                        raise Invalid(_at(_at(where, "vdso_symbols"), name), "lies outside the vdso")
            needs = {"file": ("offset", "file"), "shmem": ("offset", "shmem"),
                     "sysv": ("offset", "shmid")}.get(kind, ())
            for name in needs:
                if name not in v:
                    raise Invalid(_at(at, name), f"is missing (a {kind} mapping needs it)")
            if kind == "shmem" and v["shmem"] not in self.m["shmem"]:
                raise Invalid(_at(at, "shmem"), f"{v['shmem']} is not in shmem")
            if kind == "sysv" and str(v["shmid"]) not in self.m["sysv"]:
                raise Invalid(_at(at, "shmid"), f"{v['shmid']} is not in sysv")
            if kind == "file" and not v["path"].startswith("/"):
                raise Invalid(_at(at, "path"), "a file mapping needs an absolute path")
            if "offset" in v and v["offset"] % page:
                raise Invalid(_at(at, "offset"), "must be a multiple of the page size")
            if v["pages"] and (v["shared"] or kind not in ("anon", "file", "shmem")):
                # the content of shared and special mappings lives in their file or object:
                # writing saved pages there would write into that file
                raise Invalid(_at(at, "pages"), f"a {'shared' if v['shared'] else kind} "
                              "mapping cannot hold saved pages")
            for k, run in enumerate(v["pages"]):
                address, length, offset = run[:3]
                if address % page or length % page or not length \
                        or address < start or address + length > end:
                    raise Invalid(f"{at}.pages[{k}]", "is not a page-aligned run inside its mapping")
                if len(run) == 4:
                    if run[3] >= bases:
                        raise Invalid(f"{at}.pages[{k}]", f"names base {run[3]}, which the image "
                                      "does not list")
                elif blob_size is None:
                    raise Invalid(_at(where, "pages_blob"), f"{memory['pages_blob']!r} is not in "
                                  "the blob table")
                elif offset + length > blob_size:
                    raise Invalid(f"{at}.pages[{k}]", f"reaches past the end of {memory['pages_blob']}")


def _unique(values: Iterable[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise Invalid(what, f"{_show(value)} appears twice")
        seen.add(value)


def validate_base_runs(manifest: dict[str, Any], bases: list[dict[str, Any]]) -> None:
    """Runs of an incremental image that name a base (each already validated) must lie
    inside the pages blob of the same process in that base."""
    for i, p in enumerate(manifest["processes"]):
        for j, v in enumerate(p["memory"]["vmas"]):
            for k, run in enumerate(v["pages"]):
                if len(run) != 4:
                    continue
                base = bases[run[3]]
                proc = next((q for q in base["processes"] if q["pid"] == p["pid"]), None)
                blob = base["blobs"].get(proc["memory"]["pages_blob"]) if proc else None
                if blob is None or run[2] + run[1] > blob["size"]:
                    raise Invalid(f"processes[{i}].memory.vmas[{j}].pages[{k}]",
                                  f"is not inside pid {p['pid']}'s pages in base {run[3]}")
