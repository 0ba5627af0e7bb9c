"""Resident all-zero pages of private anonymous memory are left out of the image (they come
back as untouched memory, which reads as zeros), with and without pre-copy and in an
incremental image; zeroed copy-on-write pages of a private file mapping are still stored."""
from __future__ import annotations

import mmap
import os
import random
import signal

import pytest

from conftest import manifest, run_cli, wait_until

from jupyter_ckpt.engine import zeropages

PAGE = os.sysconf("SC_PAGE_SIZE")
REGION = 64 << 20
REGION_DATA_PAGES = (REGION // PAGE // 2) * 3 // 8  # see region_kind() in zero_pages.c


def info(prog, key: str) -> int:
    for line in prog.lines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["info", key]:
            return int(parts[2], 16)
    raise AssertionError(f"program did not publish {key}: {prog.lines()}")


def saved_bytes_in(image, start: int, end: int) -> int:
    """Bytes of page data the image (with its bases) holds for addresses in [start, end)."""
    total = 0
    for proc in manifest(image)["processes"]:
        for vma in proc["memory"]["vmas"]:
            for addr, length, *_ in vma["pages"]:
                total += max(0, min(addr + length, end) - max(addr, start))
    return total


def pages_blob_size(image) -> int:
    m = manifest(image)
    return sum(m["blobs"][p["memory"]["pages_blob"]]["size"] for p in m["processes"])


def own_run_bytes(image) -> int:
    """Bytes of the runs stored in this image's own blobs (not in a base)."""
    return sum(run[1] for proc in manifest(image)["processes"] for vma in proc["memory"]["vmas"]
               for run in vma["pages"] if len(run) == 3)


def dump_kill_restore(prog, image, *dump_args: str) -> None:
    tids = prog.tids()
    run_cli("dump", prog.pid, image, "--kill", *dump_args)
    prog.reap()
    prog.restore(image)
    assert prog.tids() == tids


@pytest.mark.parametrize("precopy", [True, False], ids=["precopy", "no-precopy"])
def test_zero_pages_left_out(cc, programs, workdir, precopy):
    prog = programs(cc("zero_pages"))
    image = workdir / "image"
    dump_kill_restore(prog, image, *([] if precopy else ["--no-precopy"]))
    prog.verify()
    stats = manifest(image)["stats"]
    assert ("uffd-wp" in stats["dirty_tracking"]) == precopy, stats

    region = info(prog, "region")
    assert saved_bytes_in(image, region, region + REGION) == REGION_DATA_PAGES * PAGE
    # the file mapping's zeroed copy-on-write page is stored, or it would show the file
    private = info(prog, "private")
    assert saved_bytes_in(image, private, private + 8 * PAGE) == 2 * PAGE
    # the blob holds about the data pages only; logical bytes still count the zero pages
    zero_in_region = REGION - REGION_DATA_PAGES * PAGE
    assert stats["bytes_zero"] >= zero_in_region
    assert stats["bytes_logical"] >= stats["bytes_zero"] + REGION_DATA_PAGES * PAGE
    runs = own_run_bytes(image)
    blob = pages_blob_size(image)
    if precopy:  # it may also hold superseded copies of pages written during pre-copy
        assert runs <= blob <= runs + (4 << 20), (runs, blob)
    else:
        assert blob == runs
    assert stats["bytes_written"] == sum(p.stat().st_size for p in image.iterdir()
                                         if p.name != "manifest.json")
    assert stats["bytes_written"] < REGION_DATA_PAGES * PAGE + (8 << 20), stats


def test_zero_pages_in_incremental_image(cc, programs, workdir):
    prog = programs(cc("zero_pages"))
    first, second = workdir / "first", workdir / "second"
    run_cli("dump", prog.pid, first)
    os.kill(prog.pid, signal.SIGUSR2)  # data pages become zero, zero pages get data
    wait_until(lambda: "changed" in prog.lines(), what="the program's change")
    dump_kill_restore(prog, second, "--parent", first)
    prog.verify()

    region = info(prog, "region")
    assert saved_bytes_in(first, region, region + REGION) == REGION_DATA_PAGES * PAGE
    assert saved_bytes_in(second, region, region + REGION) == REGION_DATA_PAGES * PAGE
    stats = manifest(second)["stats"]
    assert "page-compare" in stats["dirty_tracking"]
    assert stats["bytes_zero"] >= REGION - REGION_DATA_PAGES * PAGE
    assert pages_blob_size(second) == own_run_bytes(second) < 4 << 20


def test_split_finds_exactly_the_zero_pages():
    """Against a page-by-page comparison, on stretches (up to beyond the 1 MiB blocks zero
    runs are confirmed in) of pages that are zero, data, zero but for one byte, or start with
    zeros straddling two words (the fast path screens the first word of every page)."""
    rng = random.Random(6)
    pages = 1200
    buf = mmap.mmap(-1, pages * PAGE)
    for trial in range(60):
        buf[:] = bytes(len(buf))
        page = 0
        while page < pages:
            kind = rng.choice(["zero", "data", "one byte", "last byte", "mixed"])
            stretch = range(page, min(pages, page + rng.choice([1, 3, 20, 300])))
            for at in (p * PAGE for p in stretch):
                how = rng.choice(["zero", "data", "one byte", "last byte"]) if kind == "mixed" else kind
                if how == "data":
                    buf[at:at + PAGE] = rng.randbytes(PAGE)
                elif how == "one byte":
                    buf[at + rng.randrange(8, PAGE)] = rng.randrange(1, 256)
                elif how == "last byte":
                    buf[at + PAGE - 1] = 1
                if how != "zero" and rng.random() < 0.2:
                    buf[at + 4:at + 12] = bytes(8)
            page = stretch.stop
        start = rng.randrange(pages // 2) * PAGE
        end = start + rng.randrange(1, pages // 2 + 1) * PAGE
        expected: list[tuple[int, int, bool]] = []
        for at in range(start, end, PAGE):
            zero = buf[at:at + PAGE] == bytes(PAGE)
            if expected and expected[-1][2] == zero:
                expected[-1] = (expected[-1][0], at + PAGE, zero)
            else:
                expected.append((at, at + PAGE, zero))
        assert zeropages.split(buf, start, end) == expected, trial
