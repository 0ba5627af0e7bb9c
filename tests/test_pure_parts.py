"""Unit tests of the engine's pure parts: the /proc parsers (on the /proc files of real
processes where the kernel writes them), and the interval arithmetic of pre-copy, incremental
images, the restore's address-space layout and lazy restore, each against a page-by-page
model with hypothesis."""
from __future__ import annotations

import os
import select
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_ckpt.engine import incremental, procfs
from jupyter_ckpt.engine.arch import TASK_SIZE
from jupyter_ckpt.engine.errors import CkptError
from jupyter_ckpt.engine.lazy import _Pending
from jupyter_ckpt.engine.pagemap import PAGE_SIZE
from jupyter_ckpt.engine.precopy import ZERO, PreCopy
from jupyter_ckpt.engine.resources.memory import MMAP_MIN, find_hole

P = PAGE_SIZE


# --- procfs ---------------------------------------------------------------------------

@pytest.fixture
def sleeper(tmp_path):
    """A real process whose name has a space and parentheses, as comm shows them: cat,
    once it has echoed a line (its start-up is over and its mappings stay as they are)."""
    exe = tmp_path / "a) b (c"
    shutil.copy(shutil.which("cat"), exe)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(b"ready\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"ready\n"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


def test_maps_and_smaps_of_a_real_process_agree(sleeper):
    with open(f"/proc/{sleeper.pid}/maps") as f:
        maps = procfs.parse_maps(f.read())
    smaps = procfs.read_vmas(sleeper.pid)
    assert [(v.start, v.end, v.perms, v.path) for v in maps] == \
        [(v.start, v.end, v.perms, v.path) for v in smaps]
    paths = {v.path for v in maps}
    assert {"[stack]", "[vdso]"} <= paths
    assert any(v.path.endswith("a) b (c") and "x" in v.perms for v in maps)
    assert all(v.vmflags and "rd" in v.vmflags for v in smaps if "r" in v.perms)
    stack = next(v for v in smaps if v.path == "[stack]")
    assert stack.prot == 3 and not stack.shared and stack.size % P == 0


def test_maps_lines_with_spaces_deleted_and_no_path():
    text = ("7f0000000000-7f0000002000 rw-s 00001000 00:05 42   /dev/shm/a b (deleted)\n"
            "7f0000003000-7f0000004000 r-xp 00000000 00:00 0 \n")
    shared, anon = procfs.parse_maps(text)
    assert (shared.start, shared.size, shared.offset, shared.inode) == (0x7F0000000000, 2 * P, P, 42)
    assert shared.path == "/dev/shm/a b (deleted)" and shared.deleted and shared.shared
    assert shared.prot == 3 and anon.prot == 5 and anon.path == "" and not anon.deleted
    with pytest.raises(ValueError, match="unparsable"):
        procfs.parse_maps("not a maps line")


def test_stat_of_a_process_whose_name_has_parentheses(sleeper):
    stat = procfs.read_stat(sleeper.pid)
    assert stat[1] == str(sleeper.pid) and stat[2] == "a) b (c"
    assert stat[4] == str(os.getpid())  # ppid
    assert procfs.read_status(sleeper.pid)["Name"] == "a) b (c"


def test_fdinfo_repeated_keys_of_a_real_epoll_keep_every_value():
    ep = select.epoll()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        ep.register(r1, select.EPOLLIN)
        ep.register(r2, select.EPOLLOUT)
        with open(f"/proc/self/fdinfo/{ep.fileno()}") as f:
            info = procfs.parse_fdinfo(f.read())
        assert sorted(int(line.split()[0]) for line in info["tfd"]) == sorted([r1, r2])
        assert int(info["flags"], 8) & os.O_CLOEXEC
    finally:
        ep.close()
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_mountinfo_helpers():
    text = ("22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
            "23 1 0:30 /sub /mnt/first rw shared:1 - tmpfs tmpfs rw\n"
            "24 1 0:30 / /mnt/with\\040space rw - tmpfs tmpfs rw,size=1k\n"
            "25 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    assert procfs.mount_point_of(text, 0, 30) == "/mnt/with space"  # the root mount first
    assert procfs.mount_point_of(text, 8, 1) == "/"
    assert procfs.mount_point_of(text, 9, 9) is None
    assert procfs.parse_tmpfs_devices(text) == {(0, 30)}
    table = procfs.mount_table(text)
    assert sum(table.values()) == 3 and not any(key[2] == "/proc" for key in table)
    with open("/proc/self/mountinfo") as f:
        real = f.read()
    root = os.stat("/").st_dev
    assert procfs.mount_point_of(real, os.major(root), os.minor(root)) == "/"


# --- interval arithmetic against page-by-page models -----------------------------------

def _runs(draw, pages: list[int]) -> list[list[int]]:
    """Pages (sorted, distinct page numbers) as [address, length] runs, cut at random."""
    out: list[list[int]] = []
    for page in pages:
        if out and out[-1][0] + out[-1][1] == page * P and draw(st.booleans()):
            out[-1][1] += P
        else:
            out.append([page * P, P])
    return out


@st.composite
def precopy_state(draw):
    """A pre-copy's first round (intervals with blob offsets or ZERO), newer copies of pages,
    and the runs of a VMA record; pages the first round missed have a newer copy."""
    first, pos, offset = [], 0, 0
    for _ in range(draw(st.integers(0, 5))):
        pos += draw(st.integers(0, 3))
        n = draw(st.integers(1, 4))
        zero = draw(st.booleans())
        first.append([pos * P, (pos + n) * P, ZERO if zero else offset])
        offset += 0 if zero else n * P
        pos += n
    universe = range(pos + 3)
    in_first = {p for s, e, _ in first for p in range(s // P, e // P)}
    wanted = sorted(draw(st.sets(st.sampled_from(universe))) if universe else [])
    newer = {}
    for page in wanted:
        if page not in in_first or draw(st.booleans()):
            newer[page * P] = ZERO if draw(st.integers(0, 3)) == 0 else (10_000 + page) * P
    return first, newer, _runs(draw, wanted)


@given(precopy_state())
@settings(max_examples=300, deadline=None)
def test_precopy_layout_points_every_page_at_its_newest_copy(state):
    first, newer, runs = state
    pre = PreCopy.__new__(PreCopy)
    pre.first, pre.newer = first, newer
    layout = pre._layout(runs, sorted(newer))

    def newest(addr: int) -> int:
        if addr in newer:
            return newer[addr]
        s, _, off = next(iv for iv in first if iv[0] <= addr < iv[1])
        return off if off == ZERO else off + addr - s

    want = {a: newest(a) for start, length in runs for a in range(start, start + length, P)}
    got = {addr + k: offset + k for addr, length, offset in layout for k in range(0, length, P)}
    assert got == {a: off for a, off in want.items() if off != ZERO}
    assert layout == sorted(layout)
    for (a, n, o), (b, _, q) in zip(layout, layout[1:]):
        assert a + n <= b and not (a + n == b and o + n == q), "runs left uncoalesced"


@st.composite
def parent_runs(draw):
    held, pos = [], 0
    for base in range(draw(st.integers(0, 6))):
        pos += draw(st.integers(0, 3)) * P
        n = draw(st.integers(1, 4)) * P
        held.append((pos, pos + n, draw(st.integers(0, 2)), draw(st.integers(0, 50)) * P))
        pos += n
    lo = draw(st.integers(0, pos // P + 2)) * P
    hi = lo + draw(st.integers(1, 12)) * P
    return held, lo, hi


@given(parent_runs())
@settings(max_examples=300, deadline=None)
def test_incremental_segments_cut_a_range_where_the_parent_runs_begin_and_end(case):
    held, lo, hi = case
    segments = incremental._segments(held, [h[0] for h in held], lo, hi)
    assert segments[0][0] == lo and segments[-1][1] == hi
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
    for start, end, hit in segments:
        assert start < end
        for page in range(start, end, P):
            owner = next((h for h in held if h[0] <= page < h[1]), None)
            if owner is None:
                assert hit is None
            else:
                base, offset = hit
                assert (base, offset + page - start) == (owner[2], owner[3] + page - owner[0])


_TOP = TASK_SIZE // P
_page_numbers = st.one_of(st.integers(_TOP - 64, _TOP - 1), st.integers(MMAP_MIN // P, _TOP - 1))


def _expected_hole(occupied: list[tuple[int, int]], size: int) -> int | None:
    """find_hole's rule over the union of the spans: top-down, the first gap that holds
    `size` and a guard page below the mapping above it; else the lowest gap, down to
    MMAP_MIN, without the guard."""
    merged: list[list[int]] = []
    for s, e in sorted(occupied):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    ceiling = TASK_SIZE
    for s, e in reversed(merged):
        if ceiling - e >= size + P:
            return ceiling - size - P
        ceiling = min(ceiling, s)
    return ceiling - size if ceiling - MMAP_MIN >= size else None


@given(st.lists(st.tuples(_page_numbers, st.integers(1, 64)), max_size=8),
       st.one_of(st.integers(1, 64), st.integers(1, 1 << 30)))
@settings(max_examples=500, deadline=None)
def test_find_hole_is_the_highest_free_gap_of_the_union_of_spans(spans, pages):
    occupied = [(s * P, min(s + n, _TOP) * P) for s, n in spans]
    size = pages * P
    want = _expected_hole(occupied, size)
    if want is None:
        with pytest.raises(CkptError, match="no free address range"):
            find_hole(occupied, size)
        return
    at = find_hole(occupied, size)
    assert at % P == 0 and MMAP_MIN <= at and at + size <= TASK_SIZE
    assert not any(s < at + size and at < e for s, e in occupied), "the hole is not free"
    assert at == want


def test_find_hole_refuses_a_full_address_space():
    with pytest.raises(CkptError, match="no free address range"):
        find_hole([(MMAP_MIN, TASK_SIZE)], P)
    assert find_hole([], P) == TASK_SIZE - P
    assert find_hole([(TASK_SIZE - 4 * P, TASK_SIZE)], P) == TASK_SIZE - 5 * P  # lowest gap: no guard


@st.composite
def pending_and_ops(draw):
    intervals, pos = [], 0
    for _ in range(draw(st.integers(0, 6))):
        pos += draw(st.integers(0, 3))
        n = draw(st.integers(1, 5))
        intervals.append([pos * P, (pos + n) * P, draw(st.integers(0, 100)) * P])
        pos += n
    ops = draw(st.lists(st.tuples(st.integers(0, pos + 2), st.integers(1, 6)), max_size=6))
    return intervals, [(lo * P, (lo + n) * P) for lo, n in ops]


@given(pending_and_ops())
@settings(max_examples=300, deadline=None)
def test_lazy_pending_removes_exactly_the_pages_asked_and_keeps_their_sources(case):
    intervals, ops = case
    pending = _Pending([list(iv) for iv in intervals])
    model = {s + k: src + k for s, e, src in intervals for k in range(0, e - s, P)}
    snapshot = pending.copy()
    for lo, hi in ops:
        gone = pending.remove(lo, hi)
        gone_pages = {s + k: src + k for s, e, src in gone for k in range(0, e - s, P)}
        assert gone_pages == {a: src for a, src in model.items() if lo <= a < hi}
        model = {a: src for a, src in model.items() if not lo <= a < hi}
        assert {s + k: src + k for s, e, src in pending.iv for k in range(0, e - s, P)} == model
        assert pending.iv == sorted(pending.iv)
        assert all(a[1] <= b[0] for a, b in zip(pending.iv, pending.iv[1:]))
        for addr in range(0, (max(model, default=0) + 2 * P), P):
            hit = pending.find(addr)
            assert (hit is not None) == (addr in model)
            if hit is not None:
                assert hit[2] + addr - hit[0] == model[addr]
        pending.add(gone)  # put back, as a fault that must be served again does
        model.update(gone_pages)
        pending.remove(lo, hi)
        model = {a: src for a, src in model.items() if not lo <= a < hi}
    assert bool(pending) == bool(model)
    assert {s + k: src + k for s, e, src in snapshot.iv for k in range(0, e - s, P)} == \
        {s + k: src + k for s, e, src in intervals for k in range(0, e - s, P)}


# --- the resource table ------------------------------------------------------------------

def test_every_manifest_part_belongs_to_exactly_one_kind_that_the_schema_knows():
    """A kind owns its part of each process's record and its tree-wide section: each is a
    field the schema checks (an unknown one would be refused at restore), no two kinds
    write the same one, and every fd kind has a record in the schema."""
    from jupyter_ckpt.engine import schema
    from jupyter_ckpt.engine.resources import FILE_KINDS, RESOURCES, SECTIONS

    names = [kind.name for kind in RESOURCES]
    assert len(set(names)) == len(names), names
    records = [kind.record for kind in RESOURCES if kind.record]
    assert len(set(records)) == len(records), records
    engine_fields = {"pid", "fds"}  # the process's own id and its fd table, written by the engine
    assert set(records) == set(schema.PROCESS_ENTRY.required) - engine_fields
    assert len(set(SECTIONS)) == len(SECTIONS), SECTIONS
    assert set(SECTIONS) <= set(schema.MANIFEST.required), SECTIONS
    for kind in RESOURCES:
        assert (kind.section is None) == (kind.dump_section is None), kind.name
        assert kind.record or (kind.dump_process is None and kind.dump_memory is None), kind.name
    assert [kind.name for kind in FILE_KINDS] == [name for name in names if name in schema.FILE_KINDS]
    assert set(schema.FILE_KINDS) == {kind.name for kind in FILE_KINDS}
