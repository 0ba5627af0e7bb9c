"""Another kernel build: the vdso proxy (engine/resources/vdso.py).

The real case is tested with the vdso of another kernel build, fetched from the package
registry (foreign_vdso.py). A process cannot be started under another kernel here, so the
test program takes that vdso on itself: it copies the foreign vdso over its own [vdso] area
and resolves its time functions from it, as the C library does at start. Its image then
records a vdso that is not this kernel's, with that build's symbol offsets, and the
program's function pointers are offsets into it: exactly an image made under that kernel.
The restore must put this kernel's vdso block elsewhere and a proxy where the foreign vdso
was, or the program's calls land in the wrong code.
"""
from __future__ import annotations

import ctypes
import os
import struct

import pytest

from conftest import manifest, pid_alive, run_cli
from foreign_vdso import foreign_vdso
from jupyter_ckpt.engine import arch, elfsyms, hostcheck, procfs, schema
from jupyter_ckpt.engine.resources import vdso

PROXIED = "vdso proxied"


def own_vdso() -> bytes:
    vma = next(v for v in procfs.read_vmas(os.getpid()) if v.path == "[vdso]")
    return ctypes.string_at(vma.start, vma.end - vma.start)


def hide_symbols(image: bytes, names: set[str]) -> bytes:
    """`image` with the dynamic symbols `names` made local (no longer exported); code untouched."""
    out = bytearray(image)
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)]
    dynsym = next(s for s in sections if s[1] == 11)
    strtab = sections[dynsym[6]][4]
    for at in range(dynsym[4], dynsym[4] + dynsym[5], 24):
        name_off, info = struct.unpack_from("<IB", image, at)
        name = image[strtab + name_off:image.index(b"\0", strtab + name_off)].decode()
        if name in names:
            out[at + 4] = info & 0xF  # binding STB_LOCAL
    return bytes(out)


@pytest.fixture(scope="module")
def foreign() -> bytes:
    return foreign_vdso().read_bytes()


# ------------------------------------------------------------------ the ELF reader

def test_reads_this_kernels_vdso():
    symbols = elfsyms.exported_functions(own_vdso())
    for name in ("clock_gettime", "gettimeofday", "time", "getcpu", "clock_getres"):
        assert symbols[f"__vdso_{name}"] == symbols[name]


def test_reads_another_builds_vdso(foreign):
    symbols = elfsyms.exported_functions(foreign)
    assert symbols["__vdso_clock_gettime"] != elfsyms.exported_functions(own_vdso())["__vdso_clock_gettime"]
    assert all(0 < offset < len(foreign) for offset in symbols.values())


@pytest.mark.parametrize("cut", [0, 10, 63, 200])
def test_refuses_a_truncated_image(foreign, cut):
    with pytest.raises(elfsyms.ElfError):
        elfsyms.exported_functions(foreign[:cut])


def test_refuses_what_is_not_elf():
    with pytest.raises(elfsyms.ElfError, match="not a 64-bit"):
        elfsyms.exported_functions(b"\0" * 4096)


# ------------------------------------------------------------------ what can be proxied

def test_missing_symbol_refused_by_name():
    here = {"__vdso_time": 0x100, "time": 0x100}
    found = vdso.refusals({"__vdso_time": 0x200, "__vdso_sgx_enter_enclave": 0x300}, 0x1000, here)
    assert found == ["vdso symbol __vdso_sgx_enter_enclave missing: the image's vdso exports it, "
                     "this kernel's does not"]


def test_getrandom_state_of_another_size_refused_by_name():
    here = {"__vdso_getrandom": 0x100}
    other = {"state_size": 1, "prot": 0, "flags": 0}
    assert other != vdso.getrandom_state()
    found = vdso.refusals({"__vdso_getrandom": 0x100}, 0x1000, here, other)
    assert len(found) == 1 and found[0].startswith("vdso symbol __vdso_getrandom: this kernel's getrandom state")
    assert "__vdso_getrandom" in vdso.refusals({"__vdso_getrandom": 0x100}, 0x1000, here)[0]
    assert vdso.refusals({"__vdso_getrandom": 0x100}, 0x1000, here, vdso.getrandom_state()) == []


def test_entry_too_close_to_the_next_refused():
    here = {"a": 0x100, "b": 0x200}
    found = vdso.refusals({"a": 0x100, "b": 0x100 + arch.JUMP_LEN - 1}, 0x1000, here)
    assert found == ["vdso symbol a: too short for a jump to this kernel's vdso"]
    assert vdso.refusals({"a": 0x100, "b": 0x100 + arch.JUMP_LEN}, 0x1000, here) == []


def test_proxy_jumps_to_this_kernels_functions():
    code = vdso.proxy_code({"time": 0x40, "__vdso_time": 0x40}, 0x1000, {"time": 0x700, "__vdso_time": 0x700},
                           0x7F0000000000)
    assert len(code) == 0x1000
    assert code[0x40:0x40 + arch.JUMP_LEN] == arch.jump_to(0x7F0000000700)
    assert set(code[:0x40] + code[0x40 + arch.JUMP_LEN:]) == set(arch.FILL_INSN)


# ------------------------------------------------------------------ real processes

def _program_with_vdso(cc, programs, workdir, code: bytes):
    """vdso_foreign.c running with `code` as its vdso."""
    path = workdir / "vdso64.so"
    path.write_bytes(code)
    return programs(cc("vdso_foreign"), path)


def test_restore_under_another_build_through_the_proxy(cc, programs, workdir, foreign):
    here = elfsyms.exported_functions(own_vdso())
    lacking = set(elfsyms.exported_functions(foreign)) - set(here)
    # Symbols this kernel lacks would be refused (next test); hidden so the rest can be tried.
    prog = _program_with_vdso(cc, programs, workdir, hide_symbols(foreign, lacking))
    image = workdir / "image"
    prog.dump(image)
    memory = manifest(image)["processes"][0]["memory"]
    assert memory["vdso_symbols"] == elfsyms.exported_functions(hide_symbols(foreign, lacking))
    lines = [str(d) for d in hostcheck.verdict(manifest(image))]
    assert any(PROXIED in line and not line.startswith("refused") for line in lines), lines
    out = run_cli("inspect", image, "--host", check=False)
    assert out.returncode == 0 and PROXIED in out.stdout, out.stdout + out.stderr
    prog.restore(image)
    vmas = procfs.read_vmas(prog.pid)
    image_vdso = next(v for v in memory["vmas"] if v["kind"] == "vdso")
    proxy = next(v for v in vmas if v.start == image_vdso["start"])
    assert proxy.path == "" and proxy.end == image_vdso["end"], proxy
    assert not any(v.path in ("[vdso]", "[vvar]") and v.start < image_vdso["end"] and image_vdso["start"] < v.end
                   for v in vmas)
    prog.verify()


def test_restore_refuses_a_symbol_this_kernel_lacks(cc, programs, workdir, foreign):
    here = elfsyms.exported_functions(own_vdso())
    lacking = sorted(set(elfsyms.exported_functions(foreign)) - set(here))
    if not lacking:
        pytest.skip("this kernel's vdso exports every function of the foreign build's")
    prog = _program_with_vdso(cc, programs, workdir, foreign)
    image = workdir / "image"
    prog.dump(image)
    fatal = hostcheck.fatal(hostcheck.verdict(manifest(image)))
    assert fatal == [f"vdso symbol {name} missing: the image's vdso exports it, this kernel's does not"
                     for name in lacking]
    out = run_cli("inspect", image, "--host", check=False)
    assert out.returncode == 1 and f"refused: vdso symbol {lacking[0]} missing" in out.stdout, out.stdout
    out = run_cli("restore", image, "--detach", check=False)
    assert out.returncode != 0 and f"vdso symbol {lacking[0]} missing" in out.stderr, out.stderr
    assert not pid_alive(prog.pid), "the refused restore created the process"


def test_same_build_moves_the_vdso_back(cc, programs, workdir):
    """Under the same build no proxy: the real vdso is where the image had it."""
    prog = _program_with_vdso(cc, programs, workdir, own_vdso())
    image = workdir / "image"
    prog.dump(image)
    assert not [d for d in hostcheck.verdict(manifest(image)) if PROXIED in d.what]
    prog.restore(image)
    memory = manifest(image)["processes"][0]["memory"]
    image_vdso = next(v for v in memory["vmas"] if v["kind"] == "vdso")
    assert any(v.path == "[vdso]" and v.start == image_vdso["start"] for v in procfs.read_vmas(prog.pid))
    prog.verify()


def test_schema_refuses_a_symbol_outside_the_vdso(cc, programs, workdir):
    prog = _program_with_vdso(cc, programs, workdir, own_vdso())
    image = workdir / "image"
    prog.dump(image, False)
    doc = manifest(image)
    schema.validate(doc)
    memory = doc["processes"][0]["memory"]
    image_vdso = next(v for v in memory["vmas"] if v["kind"] == "vdso")
    memory["vdso_symbols"]["__vdso_time"] = image_vdso["end"] - image_vdso["start"]
    with pytest.raises(schema.Invalid, match="vdso_symbols.*outside the vdso"):
        schema.validate(doc)


def test_getrandom_forwarded_with_its_state_parameters(cc, programs, workdir):
    """getrandom through the proxy (this kernel's vdso with one unused ELF header byte
    changed, so that it is not this build's: the proxy's jumps are the only new part)."""
    if vdso.getrandom_state() is None:
        pytest.skip("this kernel's vdso has no getrandom (Linux before 6.11)")
    code = bytearray(own_vdso())
    code[15] ^= 0x5A  # e_ident padding: read by nothing
    prog = _program_with_vdso(cc, programs, workdir, bytes(code))
    assert "info getrandom 1" in prog.lines()
    image = workdir / "image"
    prog.dump(image)
    memory = manifest(image)["processes"][0]["memory"]
    assert memory["vdso_getrandom"] == vdso.getrandom_state()
    assert [d for d in hostcheck.verdict(manifest(image)) if PROXIED in d.what and not d.fatal]
    prog.restore(image)
    prog.verify()
