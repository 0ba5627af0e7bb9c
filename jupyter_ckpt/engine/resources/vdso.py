"""The vdso, and a proxy for it when the image was made under another kernel build.

Programs call the vdso's functions through addresses resolved once, at start (glibc keeps
them in its own data; so do Go and others), so after a restore the image's vdso addresses
must still work. Under the same kernel build the vdso block is simply moved back where it
was (memory.py). Under another build the vdso's code, layout and data page differ, and its
code cannot be copied in: it reads its own kernel's data page. So:

Dump: the name and offset of every function the process's vdso exports (`vdso_symbols`).

Restore under another build: this kernel's vdso block (vvar pages and vdso, which find each
other by fixed distance) is put where it collides with nothing of the image, and a private
anonymous *proxy* is mapped where the image's vdso was: at each entry point the image's
vdso had, a jump to the same function of this kernel's vdso; every other byte traps. A
function the image's vdso exports that this kernel's lacks is refused by name, by the host
verdict, before anything is created. The proxy holds no ELF header: a library that parses
the vdso after the restore (from AT_SYSINFO_EHDR) finds none and falls back to system calls.
"""
from __future__ import annotations

import logging
from typing import Any

from .. import arch, elfsyms

log = logging.getLogger(__name__)

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0x2, 0x20, 0x100000

# getrandom's vdso function keeps per-thread state in memory the program allocated with
# the kernel's parameters (size, protections), cached by the C library at start: another
# build may want other ones, and the engine does not know them for the image's kernel.
_STATEFUL = ("__vdso_getrandom", "getrandom")


def dump_symbols(code: bytes, pid: int) -> dict[str, int] | None:
    """The exported functions of the vdso `code` (None, and a restore elsewhere is then
    refused, when it cannot be read as ELF)."""
    try:
        return elfsyms.exported_functions(code)
    except elfsyms.ElfError as err:
        log.warning("pid %d: its vdso's symbols cannot be read (%s): it restores only under "
                    "this kernel build", pid, err)
        return None


def refusals(image_symbols: dict[str, int] | None, vdso_size: int, here: dict[str, int]) -> list[str]:
    """Why the image's vdso (`image_symbols`, `vdso_size` bytes) cannot be proxied to this
    kernel's (`here`): one line per reason, empty when it can."""
    if image_symbols is None:
        return ["the image does not record its vdso's symbols: it restores only under the "
                "kernel build that made it"]
    found = [f"vdso symbol {name} missing: the image's vdso exports it, this kernel's does not"
             for name in sorted(set(image_symbols) - set(here))]
    found += [f"vdso symbol {name}: its per-thread state (vgetrandom) cannot be carried to "
              "another kernel build" for name in _STATEFUL if name in image_symbols]
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


def install_proxy(call: Any, mem: Any, start: int, code: bytes) -> None:
    """Map the proxy `code` at `start` (where the image's vdso was) in the process whose
    syscalls `call` injects, read and execute only, like a vdso."""
    call("mmap", start, len(code), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
         -1, 0)
    mem.write(start, code)
    call("mprotect", start, len(code), PROT_READ | PROT_EXEC)
