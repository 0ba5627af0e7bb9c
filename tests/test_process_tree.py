"""Process trees: children with their PIDs and parent links, shared memory and shared pipes,
copy-on-write private memory, zombies."""
import sys

import psutil

from conftest import PROGRAMS, checkpoint_cycle, manifest


def test_forked_children_share_memory_and_pipes(cc, programs, workdir):
    prog = programs(cc("forked_tree"))
    parent = psutil.Process(prog.pid)
    children = sorted(c.pid for c in parent.children())
    assert len(children) == 4  # three workers and one zombie

    checkpoint_cycle(prog, workdir / "image")

    image = manifest(workdir / "image")
    assert sorted(p["pid"] for p in image["processes"])[1:] == sorted(
        c for c in children if c not in {z["pid"] for z in image["zombies"]})
    assert len(image["zombies"]) == 1 and image["zombies"][0]["exit_code"] >> 8 == 5
    pipes = [f for f in image["files"] if f["kind"] == "pipe"]
    assert len(pipes) == 4, "each pipe end is one open file description shared by the tree"
    assert len(image["shmem"]) == 1, "the MAP_SHARED region is one object for all processes"


def test_posix_memfd_and_sysv_shared_memory(cc, programs, workdir):
    prog = programs(cc("shared_memory"))
    checkpoint_cycle(prog, workdir / "image")
    image = manifest(workdir / "image")
    assert len(image["sysv"]) == 2


def test_multiprocessing_pool_and_shared_value(programs, workdir):
    prog = programs(sys.executable, PROGRAMS / "py_pool.py")
    assert len(psutil.Process(prog.pid).children()) == 3
    checkpoint_cycle(prog, workdir / "image")
    unlinked = [obj for obj in manifest(workdir / "image")["shmem"].values()
                if obj["name"].startswith(("sem.", "pym-"))]
    assert unlinked, "the semaphores and the Value's arena are files unlinked from /dev/shm"
