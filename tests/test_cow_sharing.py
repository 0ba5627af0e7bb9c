"""Private memory a child still shares copy-on-write with its parent (written before the
fork, by neither since) comes back shared, saved once; the processes check it themselves
(same page frames in /proc/self/pagemap) and their content (programs/cow_shared.c)."""
import sys

import pytest

from conftest import PROGRAMS, checkpoint_cycle, manifest, run_cli
from image_mutations import reseal

MIB = 1 << 20


def _shared_bytes(image) -> dict[int, int]:
    return {p["pid"]: sum(n for v in p["memory"]["vmas"] for _, n in v.get("cow", []))
            for p in manifest(image)["processes"]}


def _page_blob_bytes(image) -> int:
    return sum(b["size"] for name, b in manifest(image)["blobs"].items() if name.startswith("pages-"))


@pytest.mark.parametrize("dump_args,restore_args", [([], []), (["--no-precopy"], ["--pid-ns"])],
                         ids=["precopy", "frozen-copy-pid-ns"])
def test_pages_shared_after_fork_come_back_shared(cc, programs, workdir, dump_args, restore_args):
    prog = programs(cc("cow_shared"))
    image = workdir / "image"
    prog.dump(image, True, *dump_args)
    shared = sorted(_shared_bytes(image).values())
    # the child shares 15.6 MiB with the parent, the grandchild that plus 128 KiB with the child
    assert shared[0] == 0 and shared[1] >= 15 * MIB and shared[2] > shared[1], shared
    if dump_args:  # (pre-copy copied every page before the freeze showed which are shared)
        assert _page_blob_bytes(image) < 17 * MIB, "the shared pages are saved once"
    out = run_cli("restore", image, "--detach", *restore_args)
    prog.pid = int(out.stdout.split()[-1])  # (in a new PID namespace, another PID for us)
    prog.verify()


def test_incremental_image_keeps_the_sharing(cc, programs, workdir):
    prog = programs(cc("cow_shared"))
    run_cli("dump", prog.pid, workdir / "base")
    checkpoint_cycle(prog, workdir / "image", "--parent", str(workdir / "base"))


def test_lazy_restore_brings_shared_pages_back_as_copies(cc, programs, workdir):
    """Documented: a lazy restore fills each process on its own, so the pages come back as
    private copies of the parent's; their content must be right."""
    prog = programs(cc("cow_shared"), "copies")
    image = workdir / "image"
    prog.dump(image, True)
    prog.restore(image, "--lazy")
    prog.verify()


def test_a_dump_leaves_the_running_tree_sharing_its_pages(cc, programs, workdir):
    """Memory is read without unsharing it (process_vm_readv would give each process its
    own copy of every page it reads): the original, still running, checks itself."""
    prog = programs(cc("cow_shared"))
    prog.dump(workdir / "image", False)
    prog.verify()


@pytest.mark.parametrize("change,refusal", [
    ("root", "whose parent is in the image"),
    ("overlap", "overlaps pages the process saved itself"),
    ("outside", "is not inside the same private memory of the parent"),
], ids=["in-the-root", "over-own-pages", "outside-the-parent"])
def test_a_crafted_shared_run_is_refused_by_name(cc, programs, workdir, change, refusal):
    """Shared runs are content by reference: one that names no parent, doubles a saved page
    or points where the parent has no private memory is refused before anything runs."""
    prog = programs(cc("cow_shared"))
    image = workdir / "image"
    prog.dump(image, True, "--no-precopy")
    m = manifest(image)
    root = next(p for p in m["processes"] if p["pid"] == m["root_pid"])
    child = next(p for p in m["processes"] if p["process"]["ppid"] == root["pid"])
    vma = next(v for v in child["memory"]["vmas"] if v.get("cow") and v["pages"])
    if change == "root":
        area = next(v for v in root["memory"]["vmas"] if v["start"] == vma["start"])
        area["cow"] = [vma["cow"][0]]
        area["pages"] = [run for run in area["pages"] if run[0] + run[1] <= vma["cow"][0][0]
                         or run[0] >= sum(vma["cow"][0])]
    elif change == "overlap":
        vma["cow"][0] = [vma["pages"][0][0], vma["cow"][0][1]]
        vma["cow"] = sorted(vma["cow"])[:1]
    else:
        for area in root["memory"]["vmas"]:
            if area["start"] == vma["start"]:
                area["shared"], area["pages"] = True, []  # shared memory, with no object
    reseal(image, m)
    out = run_cli("restore", image, "--detach", check=False)
    assert out.returncode == 1 and refusal in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_forked_pool_shares_its_parents_data_again(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_cow_pool.py")
    checkpoint_cycle(prog, workdir / "image")
