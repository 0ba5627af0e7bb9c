"""Executables and mapped files are known by content (build-id or checksum), not by time."""
import os
import subprocess

from conftest import PROGRAMS
from jupyter_ckpt.engine import fileid
from jupyter_ckpt.engine.fileid import FileIdentities


def _build(tmp_path, name, build_id):
    out = tmp_path / name
    subprocess.run(["gcc", "-O2", "-I", str(PROGRAMS), str(PROGRAMS / "counter.c"), "-o", str(out),
                    f"-Wl,--build-id={build_id}"], check=True)
    return out


def _mismatch(path, facts):
    fd = os.open(path, os.O_RDONLY)
    try:
        return fileid.mismatch(fd, facts)
    finally:
        os.close(fd)


def test_an_elf_file_is_known_by_its_build_id_whatever_its_time(tmp_path):
    binary = _build(tmp_path, "with-id", "0x0123456789abcdef0123456789abcdef01234567")
    facts = FileIdentities().facts(str(binary))
    assert facts["build_id"] == "0123456789abcdef0123456789abcdef01234567"
    os.utime(binary, ns=(0, 10**18))  # reinstalled: another time
    assert _mismatch(binary, facts) is None
    other = _build(tmp_path, "other", "0x" + "ab" * 20)
    data = bytearray(other.read_bytes())
    data.extend(b"\0" * (facts["size"] - len(data)))  # the same size, another build
    binary.write_bytes(bytes(data[:facts["size"]]))
    assert _mismatch(binary, facts) == "its build-id differs"


def test_a_file_without_build_id_is_known_by_its_content(tmp_path):
    data = tmp_path / "table.bin"
    data.write_bytes(b"\1" * 10000)
    facts = FileIdentities().facts(str(data))
    assert "xxh3_128" in facts and "build_id" not in facts
    os.utime(data, ns=(0, 10**18))
    assert _mismatch(data, facts) is None
    stamp = os.stat(data).st_mtime_ns
    data.write_bytes(b"\2" * 10000)  # same size and (restored) time, other content
    os.utime(data, ns=(0, stamp))
    assert _mismatch(data, facts) == "its content differs"
    data.write_bytes(b"\2" * 10)
    assert _mismatch(data, facts) == "its size is 10 bytes, it was 10000"


def test_a_large_file_without_build_id_falls_back_to_its_time(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(fileid.HASH_LIMIT + 4096)
    facts = FileIdentities().facts(str(big))
    assert set(facts) == {"size", "mtime_ns"}
    assert _mismatch(big, facts) is None
    os.utime(big, ns=(0, facts["mtime_ns"] + 1))
    assert "modification time differs" in _mismatch(big, facts)
