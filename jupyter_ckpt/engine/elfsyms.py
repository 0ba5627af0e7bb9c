"""The exported functions of a vdso image: a small, pure-Python reader of ELF dynamic symbols.

A vdso is an ELF shared object that the kernel maps whole (its file offset 0 at the start of
the [vdso] area), so the same bytes can be read from a process's memory or from a kernel
build's `vdso64.so`. Only what the vdso proxy needs is read: the name and offset (from the
start of the image) of every defined, exported function in `.dynsym`.
"""
from __future__ import annotations

import logging
import struct

log = logging.getLogger(__name__)

_MAGIC = b"\x7fELF"
_ELFCLASS64, _ELFDATA2LSB = 2, 1
_PT_LOAD = 1
_SHT_DYNSYM = 11
_STT_FUNC = 2
_STB_GLOBAL, _STB_WEAK = 1, 2
_SHN_UNDEF = 0
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")


class ElfError(ValueError):
    """The bytes are not a 64-bit little-endian ELF image this reader understands."""


def _unpack(fmt: struct.Struct, data: bytes, offset: int) -> tuple:
    if offset < 0 or offset + fmt.size > len(data):
        raise ElfError(f"truncated ELF image: {fmt.size} bytes wanted at {offset:#x} of {len(data):#x}")
    return fmt.unpack_from(data, offset)


def _string(data: bytes, table: int, size: int, offset: int) -> str:
    if offset >= size:
        raise ElfError(f"symbol name offset {offset:#x} outside its string table")
    end = data.find(b"\0", table + offset, table + size)
    if end < 0:
        raise ElfError("unterminated symbol name")
    return data[table + offset:end].decode("ascii", "replace")


def exported_functions(image: bytes) -> dict[str, int]:
    """name -> offset from the image's start of each defined global or weak function
    symbol in its dynamic symbol table (versions are left out: a vdso has one per name)."""
    ident, _type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, \
        shentsize, shnum, _shstrndx = _unpack(_EHDR, image, 0)
    if ident[:4] != _MAGIC or ident[4] != _ELFCLASS64 or ident[5] != _ELFDATA2LSB:
        raise ElfError("not a 64-bit little-endian ELF image")
    if phentsize != _PHDR.size or shentsize != _SHDR.size:
        raise ElfError("unexpected ELF header entry sizes")
    # st_value is a virtual address; the image starts where its first load segment's file
    # offset 0 would be loaded
    loads = [_unpack(_PHDR, image, phoff + i * phentsize) for i in range(phnum)]
    loads = [p for p in loads if p[0] == _PT_LOAD]
    if not loads:
        raise ElfError("no loadable segment")
    bias = loads[0][3] - loads[0][2]  # p_vaddr - p_offset
    sections = [_unpack(_SHDR, image, shoff + i * shentsize) for i in range(shnum)]
    dynsym = next((s for s in sections if s[1] == _SHT_DYNSYM), None)
    if dynsym is None:
        raise ElfError("no dynamic symbol table")
    _name, _kind, _flags, _addr, sym_off, sym_size, link, _info, _align, entsize = dynsym
    if entsize != _SYM.size or link >= len(sections):
        raise ElfError("malformed dynamic symbol table")
    str_off, str_size = sections[link][4], sections[link][5]
    if str_off + str_size > len(image):
        raise ElfError("string table outside the image")
    found: dict[str, int] = {}
    for i in range(sym_size // entsize):
        name, info, _other, shndx, value, _size = _unpack(_SYM, image, sym_off + i * entsize)
        if info & 0xF != _STT_FUNC or info >> 4 not in (_STB_GLOBAL, _STB_WEAK) or shndx == _SHN_UNDEF:
            continue
        offset = value - bias
        if not 0 <= offset < len(image):
            raise ElfError(f"symbol at {value:#x} lies outside the image")
        found[_string(image, str_off, str_size, name)] = offset
    return found
