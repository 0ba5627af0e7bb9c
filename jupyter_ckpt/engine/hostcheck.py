"""The host verdict: can an image be restored here, and what differs from where it was made?

Run before anything is created (it is the first step of every restore) and on request
(`jupyter-ckpt inspect DIR --host`, `jupyter-ckpt snapshots check ID`), from the manifest
alone: an image checked out of a store need not be, which makes it cheap to ask about a
snapshot made on another machine. Each difference is one line and says whether it stops
the restore (architecture, page size, CPU features, a kernel build whose vdso cannot be
proxied, an executable, library or open file that is missing or not the same, an owner that
is not the caller) or is only worth knowing (another host, a reboot since, another kernel
build whose vdso is proxied, a listening port taken here).
"""
from __future__ import annotations

import ctypes
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator

import xxhash

from . import fileid, procfs
from .hostinfo import host_facts, incompatibilities
from .resources import vdso as vdso_proxy

log = logging.getLogger(__name__)

_VDSO_BLOCK = ("[vdso]", "[vvar]", "[vvar_vclock]")


@dataclass(frozen=True)
class Difference:
    what: str
    fatal: bool  # the restore would be refused

    def __str__(self) -> str:
        return f"{'refused' if self.fatal else 'differs'}: {self.what}"


def verdict(manifest: dict[str, Any], allow_foreign_owner: bool = False) -> list[Difference]:
    """Every difference between this host and the one `manifest` (a validated image
    manifest) was made on that matters to its restore; fatal ones first."""
    found = [Difference(problem, True) for problem in incompatibilities(manifest["host"])]
    found += _owner(manifest, allow_foreign_owner)
    found += _kernel_build(manifest)
    found += _files(manifest)
    found += _host(manifest)
    found += _ports(manifest)
    return sorted(found, key=lambda d: not d.fatal)


def fatal(differences: list[Difference]) -> list[str]:
    return [d.what for d in differences if d.fatal]


def _owner(manifest: dict[str, Any], allow_foreign_owner: bool) -> list[Difference]:
    owner = manifest["owner_uid"]
    if owner == os.getuid():
        return []
    if os.getuid() == 0 and allow_foreign_owner:
        return [Difference(f"made by uid {owner}: restored with that user's credentials", False)]
    return [Difference(f"made by uid {owner}, not by you (uid {os.getuid()})", True)]


def _host(manifest: dict[str, Any]) -> list[Difference]:
    there, here = manifest["host"], host_facts()
    found = []
    if there["hostname"] != here["hostname"]:
        found.append(Difference(f"made on host {there['hostname']} (this is {here['hostname']})", False))
    if there["kernel"] != here["kernel"]:
        found.append(Difference(f"made under kernel {there['kernel']} (this is {here['kernel']})", False))
    elif there["boot_id"] != here["boot_id"]:
        found.append(Difference("made before this host's last boot", False))
    return found


def _own_vdso() -> tuple[dict[str, int], bytes]:
    """Sizes of this kernel's vdso block, and its vdso code (the same in every process: it
    is the kernel's, read here from our own mapping)."""
    sizes, code = {}, b""
    for vma in procfs.own_mappings(_VDSO_BLOCK):
        sizes[vma.path] = vma.end - vma.start
        if vma.path == "[vdso]":
            code = ctypes.string_at(vma.start, vma.end - vma.start)
    return sizes, code


def _kernel_build(manifest: dict[str, Any]) -> list[Difference]:
    """Another kernel build (its vdso differs) is fine when the image's vdso can be proxied
    to this one (resources/vdso.py), and refused by name when it cannot."""
    sizes, code = _own_vdso()
    checksum = xxhash.xxh3_128_hexdigest(code)
    here: dict[str, int] | None = None
    found: dict[str, Difference] = {}
    for proc in manifest["processes"]:
        memory = proc["memory"]
        theirs = {v["path"]: v["end"] - v["start"] for v in memory["vmas"] if v["path"] in _VDSO_BLOCK}
        recorded = memory.get("vdso_xxh3_128")
        if theirs == sizes and (not recorded or recorded == checksum):
            continue
        if here is None:
            here = vdso_proxy.symbols(code)
        problems = vdso_proxy.refusals(memory.get("vdso_symbols"), theirs.get("[vdso]", 0), here,
                                       memory.get("vdso_getrandom"))
        for problem in problems:
            found.setdefault(problem, Difference(problem, True))
        if not problems:
            what = (f"another kernel build (made under {manifest['host']['kernel']}): vdso proxied "
                    f"({len(memory['vdso_symbols'])} entry points forwarded to this kernel's)")
            found.setdefault(what, Difference(what, False))
    return list(found.values())


def _files(manifest: dict[str, Any]) -> list[Difference]:
    found = []
    seen: set[str] = set()
    for what, path, facts in _needed_files(manifest):
        if path in seen or path.startswith("/proc/"):
            continue  # (/proc/PID/... of the tree's processes exists once they are back)
        seen.add(path)
        if facts is None:
            if not os.path.lexists(path):
                found.append(Difference(f"{what} {path} is gone", True))
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            why, problem = err.strerror, f"{what} {path}: {err.strerror}"
        else:
            try:
                why = fileid.mismatch(fd, facts)
            finally:
                os.close(fd)
            problem = f"{what} {path} changed since the checkpoint ({why})"
        if why and "blob" in facts:
            found.append(Difference(f"{problem}: the copy in the image is used", False))
        elif why:
            found.append(Difference(problem, True))
    return found


def _needed_files(manifest: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    """(what, path, identity facts or None when only its existence matters) of every file
    the restore opens by path."""
    for proc in manifest["processes"]:
        exe = proc["process"]["exe"]
        yield "executable", exe["path"], exe
        for v in proc["memory"]["vmas"]:
            if v["kind"] == "file":
                yield "mapped file", v["path"], v["file"]
        yield "working directory", proc["process"]["cwd"], None
    for f in manifest["files"]:
        if f["kind"] == "regular-file" and "unlinked" not in f and "shmem" not in f:
            # (files on a tmpfs are saved whole and re-made: they may be gone, as after a reboot)
            yield "open file", f["path"], None
        elif f["kind"] == "directory":
            yield "open directory", f["path"], None
        elif f["kind"] == "pipe" and f["fifo_path"] and not f["fifo_path"].endswith(procfs.DELETED):
            yield "FIFO", f["fifo_path"], None


def _ports(manifest: dict[str, Any]) -> list[Difference]:
    found = []
    for f in manifest["files"]:
        host, port = f["local"] if f["kind"] == "inet-socket" else ("", 0)
        if not port or f["state"] not in ("listen", "udp"):
            continue
        if not _port_free(f["family"], f["type"], host, port):
            proto = "TCP" if f["type"] == socket.SOCK_STREAM else "UDP"
            # not fatal here: a copy restored beside its original takes new ports
            found.append(Difference(f"{proto} port {port} ({host}) is in use here: only a copy "
                                    "that takes new ports can be restored", False))
    return found


def _port_free(family: int, kind: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        return True
    except OSError as err:
        log.debug("port %s:%d: %s", host, port, err)
        return False
