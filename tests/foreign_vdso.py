"""The vdso of another kernel build, for the vdso proxy tests: taken from the kernel image of
Debian's current cloud kernel package (fetched with apt-get from the package registry), where
the kernel keeps its 64-bit vdso as an ELF image inside the decompressed vmlinux: the very
bytes that kernel maps as [vdso]. Cached under the user's cache directory; a fetch that
fails fails the test (the registry is reachable wherever the tests run).
"""
from __future__ import annotations

import glob
import gzip
import lzma
import os
import struct
import subprocess
import tempfile
from pathlib import Path

import lz4.block

META_PACKAGE = "linux-image-cloud-amd64"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jupyter-ckpt-tests" / "vdso"
_LZ4_LEGACY = b"\x02\x21\x4c\x18"
_SONAME = b"linux-vdso.so.1"


def _run(*cmd: str, cwd: str | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def _kernel_package() -> str:
    """The versioned kernel package the meta-package depends on."""
    try:
        out = _run("apt-cache", "depends", META_PACKAGE)
    except RuntimeError:
        out = ""
    names = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.strip().startswith("Depends:") and "linux-image-" in line]
    if not names:
        raise RuntimeError(f"apt knows no {META_PACKAGE}")
    return names[0]


def _decompress(vmlinuz: bytes) -> bytes:
    """vmlinux out of a bzImage: its payload, compressed as the build chose."""
    setup_sects = vmlinuz[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", vmlinuz, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = vmlinuz[start:start + payload_length]
    if payload.startswith(_LZ4_LEGACY):  # blocks of up to 8 MiB, each after its size
        out, pos = [], len(_LZ4_LEGACY)
        while pos + 4 <= len(payload):
            size, = struct.unpack_from("<I", payload, pos)
            if size == struct.unpack("<I", _LZ4_LEGACY)[0]:
                pos += 4
                continue
            if pos + 4 + size > len(payload):
                break  # the trailing uncompressed-size word
            out.append(lz4.block.decompress(payload[pos + 4:pos + 4 + size], uncompressed_size=8 << 20))
            pos += 4 + size
        return b"".join(out)
    if payload.startswith(b"\xfd7zXZ"):
        return lzma.decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return gzip.decompress(payload)
    raise RuntimeError(f"kernel payload compressed in an unknown way ({payload[:4].hex()})")


def _vdso64(vmlinux: bytes) -> bytes:
    """The 64-bit x86 vdso image inside vmlinux: an ELF shared object named linux-vdso.so.1,
    whose section headers end it."""
    at = 0
    while (at := vmlinux.find(b"\x7fELF\x02\x01\x01", at + 1)) > 0:
        (_ident, e_type, machine, _v, _e, _phoff, shoff, _f, _eh, _phs, _phn, shentsize, shnum,
         _shstr) = struct.unpack_from("<16sHHIQQQIHHHHHH", vmlinux, at)
        if e_type == 3 and machine == 62 and _SONAME in vmlinux[at:at + shoff]:
            return vmlinux[at:at + shoff + shentsize * shnum]
    raise RuntimeError("no 64-bit vdso in the kernel image")


def foreign_vdso() -> Path:
    """Path of another kernel build's vdso64.so (fetched and extracted once)."""
    try:
        return _fetch()
    except RuntimeError:  # apt's lists never fetched on this machine, or older than the archive
        _run("apt-get", "update")
        return _fetch()


def _fetch() -> Path:
    package = _kernel_package()
    cached = CACHE / f"{package}.vdso64.so"
    if cached.exists():
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        _run("apt-get", "download", package, cwd=tmp)
        deb, = glob.glob(os.path.join(tmp, "*.deb"))
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
        Path(tmp, "data.tar").write_bytes(tar)
        _run("tar", "-xf", "data.tar", "--wildcards", "./boot/vmlinuz-*", cwd=tmp)
        vmlinuz, = glob.glob(os.path.join(tmp, "boot", "vmlinuz-*"))
        image = _vdso64(_decompress(Path(vmlinuz).read_bytes()))
        part = cached.with_suffix(".part")
        part.write_bytes(image)
        part.rename(cached)
    return cached
