"""The vdso, and a proxy for it when the image was made under another kernel build.

Programs call the vdso's functions through addresses resolved once, at start (glibc keeps
them in its own data; so do Go and others), so after a restore the image's vdso addresses
must still work. Under the same kernel build the vdso block is simply moved back where it
was (memory.py). Under another build the vdso's code, layout and data page differ, and its
code cannot be copied in: it reads its own kernel's data page. So:

Dump: the name and offset of every function the process's vdso exports (`vdso_symbols`),
and when getrandom is one, the parameters of its per-thread state under the kernel the
process ran under (`vdso_getrandom`), which the C library caches at start.

Restore under another build: this kernel's vdso block (vvar pages and vdso, which find each
other by fixed distance) is put where it collides with nothing of the image, and a private
anonymous *proxy* is mapped where the image's vdso was: at each entry point the image's
vdso had, a jump to the same function of this kernel's vdso; every other byte traps. A
function the image's vdso exports that this kernel's lacks is refused by name, by the host
verdict, before anything is created; so is getrandom when this kernel wants other state
parameters than the recorded ones (states themselves are never in an image: they are
MAP_DROPPABLE memory, refused by memory.py). The proxy holds no ELF header: a library that parses
the vdso after the restore (from AT_SYSINFO_EHDR) finds none and falls back to system calls.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import mmap
from typing import Any, Callable

from .. import arch, elfsyms, procfs
from ..inject import RemoteMemory

log = logging.getLogger(__name__)

MAP_FIXED_NOREPLACE = 0x100000  # (not in the mmap module)

# getrandom's vdso function keeps per-thread state in memory the program allocates with
# the parameters (size, protections, flags) its kernel gave once, cached by the C library.
_GETRANDOM = ("__vdso_getrandom", "getrandom")


class _GetrandomParams(ctypes.Structure):  # struct vgetrandom_opaque_params
    _fields_ = [("size_of_opaque_state", ctypes.c_uint32), ("mmap_prot", ctypes.c_uint32),
                ("mmap_flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 13)]


def dump(code: bytes, pid: int) -> dict[str, Any]:
    """The memory record's vdso fields for a process whose vdso is `code`: nothing when it
    cannot be read as ELF (the image then restores only under this kernel build)."""
    try:
        symbols = elfsyms.exported_functions(code)
    except elfsyms.ElfError as err:
        log.warning("pid %d: its vdso's symbols cannot be read (%s): it restores only under "
                    "this kernel build", pid, err)
        return {}
    found: dict[str, Any] = {"vdso_symbols": symbols}
    state = getrandom_state()
    if state is not None and any(name in symbols for name in _GETRANDOM):
        found["vdso_getrandom"] = state
    return found


def symbols(code: bytes) -> dict[str, int]:
    """The exported functions of this kernel's vdso `code` (none if it cannot be read)."""
    try:
        return elfsyms.exported_functions(code)
    except elfsyms.ElfError as err:
        log.warning("this kernel's vdso cannot be read as ELF (%s): no vdso proxy", err)
        return {}


def own_code() -> tuple[int, bytes]:
    """Address and code of this process's vdso: this kernel's."""
    vma = next(iter(procfs.own_mappings(("[vdso]",))), None)
    return (vma.start, ctypes.string_at(vma.start, vma.end - vma.start)) if vma else (0, b"")


@functools.cache
def getrandom_state() -> dict[str, int] | None:
    """This kernel's parameters for getrandom's per-thread vdso state, from its vdso (None
    when it has no getrandom)."""
    base, code = own_code()
    offset = symbols(code).get("__vdso_getrandom")
    if offset is None:
        return None
    call = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                            ctypes.c_void_p, ctypes.c_size_t)(base + offset)
    params = _GetrandomParams()
    if call(None, 0, 0, ctypes.addressof(params), ctypes.c_size_t(-1).value) != 0:
        return None  # (the documented query: no buffer, no flags, opaque_len ~0)
    return {"state_size": params.size_of_opaque_state, "prot": params.mmap_prot,
            "flags": params.mmap_flags}


def refusals(image_symbols: dict[str, int] | None, vdso_size: int, here: dict[str, int],
             image_getrandom: dict[str, int] | None = None) -> list[str]:
    """Why the image's vdso (`image_symbols`, `vdso_size` bytes, getrandom state parameters
    `image_getrandom`) cannot be proxied to this kernel's (`here`): one line per reason,
    empty when it can."""
    if image_symbols is None:
        return ["the image does not record its vdso's symbols: it restores only under the "
                "kernel build that made it"]
    found = [f"vdso symbol {name} missing: the image's vdso exports it, this kernel's does not"
             for name in sorted(set(image_symbols) - set(here))]
    name = next((n for n in _GETRANDOM if n in image_symbols and n in here), None)
    if name and image_getrandom != getrandom_state():
        found.append(f"vdso symbol {name}: this kernel's getrandom state ({getrandom_state()}) is "
                     f"not the one the image's C library was told ({image_getrandom})")
    entries = sorted(set(image_symbols.values()))
    for entry, following in zip(entries, entries[1:] + [vdso_size]):
        if following - entry < arch.JUMP_LEN:
            names = sorted(n for n, off in image_symbols.items() if off == entry)
            found.append(f"vdso symbol {names[0]}: too short for a jump to this kernel's vdso")
    return found


def proxy_code(image_symbols: dict[str, int], vdso_size: int, here: dict[str, int],
               here_base: int) -> bytes:
    """The proxy's bytes: a jump to this kernel's function (its vdso at `here_base`) at each
    entry point of the image's vdso, traps elsewhere. `refusals` must have found nothing."""
    code = bytearray(arch.FILL_INSN * vdso_size)
    for name, offset in image_symbols.items():
        code[offset:offset + arch.JUMP_LEN] = arch.jump_to(here_base + here[name])
    return bytes(code)


def install_proxy(call: Callable[..., int], mem: RemoteMemory, start: int, code: bytes) -> None:
    """Map the proxy `code` at `start` (where the image's vdso was) in the process whose
    syscalls `call` injects, read and execute only, like a vdso."""
    call("mmap", start, len(code), mmap.PROT_READ | mmap.PROT_WRITE,
         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
    mem.write(start, code)
    call("mprotect", start, len(code), mmap.PROT_READ | mmap.PROT_EXEC)
