"""Is this the file the process had? Identity of executables and mapped files by content,
and the copies of them that a portable image carries.

A restore must map exactly the bytes the process mapped. Path, size and modification time
say so on the host that made the image, but not after a copy to another host, a package
reinstall of the same build, or a container image rebuilt from the same layers: there the
times differ while the content is the same. So a dump records, beside size and time, the
file's GNU build-id when it is an ELF object that has one (every distribution's shared
libraries and interpreters do), else a checksum of its content when it is small enough to
read at dump time. A restore accepts a file of the same size whose build-id or checksum
matches, whatever its time; it falls back to the time only for a large file recorded
without either.

A portable image (`dump --portable`) also carries a copy of every executable and mapped
file it identifies by content, as a blob named after that identity (so each file is stored
once per image, and a store deduplicates it across snapshots). Where the host's file is
missing or another build, the restore maps that copy instead, materialized once in a cache
directory of the user's (`$XDG_CACHE_HOME/jupyter-ckpt/files`), checked against the
recorded identity before use.
"""
from __future__ import annotations

import logging
import mmap
import os
import shutil
import struct
import tempfile
from typing import Any, Protocol

import xxhash

from .errors import RestoreConflict

log = logging.getLogger(__name__)

HASH_LIMIT = 64 << 20  # bytes: bigger files without a build-id are identified by their time
_ELF_MAGIC = b"\x7fELF"
_ELF64_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_ELF64_PHDR = struct.Struct("<IIQQQQQQ")
_PT_NOTE = 4
_NT_GNU_BUILD_ID = 3
_NOTE_HEADER = struct.Struct("<III")


def _build_id(data: mmap.mmap | bytes) -> str | None:
    """The GNU build-id of a 64-bit little-endian ELF image, if it carries one."""
    if len(data) < _ELF64_HEADER.size or data[:4] != _ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return None
    header = _ELF64_HEADER.unpack_from(data, 0)
    phoff, phentsize, phnum = header[5], header[9], header[10]
    if phentsize < _ELF64_PHDR.size or phoff + phnum * phentsize > len(data):
        return None
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz, _, _ = _ELF64_PHDR.unpack_from(data, phoff + i * phentsize)
        if p_type != _PT_NOTE or p_offset + p_filesz > len(data):
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + _NOTE_HEADER.size <= end:
            namesz, descsz, kind = _NOTE_HEADER.unpack_from(data, at)
            name_at = at + _NOTE_HEADER.size
            desc_at = name_at + (namesz + 3) // 4 * 4
            if desc_at + descsz > end:
                break
            if kind == _NT_GNU_BUILD_ID and data[name_at:name_at + namesz] == b"GNU\0":
                return bytes(data[desc_at:desc_at + descsz]).hex()
            at = desc_at + (descsz + 3) // 4 * 4
    return None


def _content_facts(fd: int, size: int) -> dict[str, Any]:
    """build-id, or else (small files) an xxh3-128 of the content; {} for large others."""
    if not size:
        return {"xxh3_128": xxhash.xxh3_128_hexdigest(b"")}
    try:
        data = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as err:
        log.debug("fd %d: not mappable for identification (%s): identified by its time", fd, err)
        return {}
    try:
        build_id = _build_id(data)
        if build_id:
            return {"build_id": build_id}
        if size <= HASH_LIMIT:
            return {"xxh3_128": xxhash.xxh3_128_hexdigest(data)}
        return {}
    finally:
        data.close()


class BlobWriter(Protocol):
    """What a dump writes a file's copy with (image.ImageWriter)."""

    def blob_path(self, name: str) -> str: ...

    def adopt_blob(self, name: str) -> None: ...


class BlobReader(Protocol):
    """What a restore reads a file's copy from (image.ImageReader)."""

    def open_blob(self, name: str) -> int: ...


class FileIdentities:
    """Facts of the files of one dump, each file read once however often it is mapped.
    Given a `writer`, files identified by content are also copied into the image."""

    def __init__(self, writer: BlobWriter | None = None) -> None:
        self._known: dict[tuple[int, int, int, int], dict[str, Any]] = {}
        self._writer = writer

    def facts(self, path: str) -> dict[str, Any]:
        """{"size", "mtime_ns"} and, where it can be had, "build_id" or "xxh3_128"."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in self._known:
                facts = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                         **_content_facts(fd, st.st_size)}
                if self._writer is not None and _identity(facts):
                    facts["blob"] = self._copy(fd, facts)
                self._known[key] = facts
            return dict(self._known[key])
        finally:
            os.close(fd)


    def _copy(self, fd: int, facts: dict[str, Any]) -> str:
        """The file's content as a blob named after its identity (one per image)."""
        assert self._writer is not None
        name = f"file-{_identity(facts)}"
        target = self._writer.blob_path(name)
        if not os.path.exists(target):
            with open(target, "wb") as out:
                os.lseek(fd, 0, os.SEEK_SET)
                with os.fdopen(os.dup(fd), "rb") as source:
                    shutil.copyfileobj(source, out, 8 << 20)
            self._writer.adopt_blob(name)
        return name


def _identity(facts: dict[str, Any]) -> str | None:
    return facts.get("build_id") or facts.get("xxh3_128")


def open_copy(image: BlobReader, facts: dict[str, Any], path: str) -> int:
    """Open the portable image's copy of the file recorded at `path` (materialized in the
    user's cache, checked against `facts`), read-only."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "jupyter-ckpt", "files", _identity(facts) or "unknown")
    copy = os.path.join(cache, os.path.basename(path) or "file")
    try:
        fd = os.open(copy, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        os.makedirs(cache, mode=0o700, exist_ok=True)
        source = image.open_blob(facts["blob"])
        try:
            with tempfile.NamedTemporaryFile(dir=cache, delete=False) as out, \
                    os.fdopen(source, "rb", closefd=False) as blob:
                shutil.copyfileobj(blob, out, 8 << 20)
            os.chmod(out.name, 0o500)
            os.rename(out.name, copy)
        finally:
            os.close(source)
        fd = os.open(copy, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    why = mismatch(fd, facts)
    if why:
        os.close(fd)
        raise RestoreConflict(f"the copy of {path} in {cache} is not the recorded file ({why})")
    log.info("%s: mapping the image's copy %s", path, copy)
    return fd


def mismatch(fd: int, facts: dict[str, Any]) -> str | None:
    """Why the open file `fd` is not the one `facts` describe (None when it is)."""
    st = os.fstat(fd)
    if st.st_size != facts["size"]:
        return f"its size is {st.st_size} bytes, it was {facts['size']}"
    if "build_id" in facts or "xxh3_128" in facts:
        found = _content_facts(fd, st.st_size)
        for key, what in (("build_id", "build-id"), ("xxh3_128", "content")):
            if key in facts:
                return None if found.get(key) == facts[key] else f"its {what} differs"
    if st.st_mtime_ns != facts["mtime_ns"]:
        return "its modification time differs (too large to compare by content)"
    return None
