"""Files on a tmpfs (POSIX shared memory, named semaphores) are one object per inode however
each process reaches them, and the image holds them: they come back after a reboot emptied
/dev/shm, and a name that holds other content by then is refused before anything is made."""
import os
import sys
from pathlib import Path

import psutil
import pytest

from conftest import PROGRAMS, pid_alive, run_cli


def _dev_shm_files(root: int) -> set[str]:
    """The /dev/shm files the tree of `root` maps or holds open under a name."""
    paths = set()
    for proc in [psutil.Process(root)] + psutil.Process(root).children(recursive=True):
        with open(f"/proc/{proc.pid}/maps") as maps:
            paths.update(line.split(None, 5)[5].strip() for line in maps if " /dev/shm/" in line)
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            try:
                paths.add(os.readlink(f"/proc/{proc.pid}/fd/{fd}"))
            except FileNotFoundError:
                pass
    return {p for p in paths if p.startswith("/dev/shm/") and not p.endswith(" (deleted)")}


@pytest.fixture
def dev_shm_names():
    """The tree's /dev/shm files: whatever of them is left is removed at the end, with the
    (empty) joblib folder its killed original left and loky semaphores made after the dump
    that the restored tree, killed at the end, had no time to remove."""
    seen: list[str] = []
    roots: list[int] = []

    def of(root: int) -> list[str]:
        names = sorted(_dev_shm_files(root))
        seen.extend(names)
        roots.append(root)
        return names
    yield of
    for path in seen:
        if os.path.exists(path):
            os.unlink(path)
    for root in roots:
        for folder in Path("/dev/shm").glob(f"joblib_memmapping_folder_{root}_*"):
            folder.rmdir()
        for semaphore in Path("/dev/shm").glob(f"sem.loky-{root}-*"):
            semaphore.unlink()


def _as_after_a_reboot(prog, image: Path, names) -> list[str]:
    """dump --kill, then remove the tree's files from /dev/shm, as a reboot would."""
    paths = names(prog.pid)
    assert paths, "the tree holds named objects in /dev/shm"
    prog.dump(image, kill=True)
    for path in paths:
        os.unlink(path)
    return paths


def test_a_loky_pool_after_its_dev_shm_files_are_gone(programs, workdir, dev_shm_names):
    prog = programs(sys.executable, PROGRAMS / "py_loky.py", timeout=60)
    paths = _as_after_a_reboot(prog, workdir / "image", dev_shm_names)
    assert any(os.path.basename(p).startswith("sem.") for p in paths), "loky's semaphores"
    prog.restore(workdir / "image")
    assert all(os.path.exists(p) for p in paths), "the semaphores are back at their names"
    prog.verify(timeout=60)


def test_a_loky_pool_with_its_dev_shm_files_in_place(programs, workdir, dev_shm_names):
    prog = programs(sys.executable, PROGRAMS / "py_loky.py", timeout=60)
    inodes = {p: os.stat(p).st_ino for p in dev_shm_names(prog.pid)}
    prog.dump(workdir / "image", kill=True)
    prog.restore(workdir / "image")
    assert {p: os.stat(p).st_ino for p in inodes} == inodes, "the files in place were reused"
    prog.verify(timeout=60)


def test_scikit_learn_cross_val_score_after_a_reboot(programs, workdir, dev_shm_names):
    prog = programs(sys.executable, PROGRAMS / "py_loky.py", "--sklearn", timeout=120)
    _as_after_a_reboot(prog, workdir / "image", dev_shm_names)
    prog.restore(workdir / "image")
    prog.verify(timeout=120)


def test_shared_memory_with_a_child_after_its_dev_shm_file_is_gone(programs, workdir, dev_shm_names):
    prog = programs(sys.executable, PROGRAMS / "py_shared_memory.py")
    paths = _as_after_a_reboot(prog, workdir / "image", dev_shm_names)
    assert any(os.path.basename(p).startswith("psm_") for p in paths), "the SharedMemory's file"
    prog.restore(workdir / "image")
    prog.verify()


def test_a_dev_shm_name_with_other_content_is_refused_before_anything_is_made(
        programs, workdir, dev_shm_names):
    prog = programs(sys.executable, PROGRAMS / "py_loky.py", timeout=60)
    paths = _as_after_a_reboot(prog, workdir / "image", dev_shm_names)
    Path(paths[0]).write_bytes(b"another program's semaphore")
    result = run_cli("restore", workdir / "image", "--detach", check=False)
    assert result.returncode != 0
    assert f"{paths[0]} exists with other content" in result.stderr
    assert not pid_alive(prog.pid), "nothing was restored"
    assert not any(os.path.exists(p) for p in paths[1:]), "no file was made"


def test_an_image_cannot_place_files_outside_a_tmpfs(programs, workdir, dev_shm_names):
    """A crafted image whose tmpfs object names a directory on another file system (here
    the test's own, not a tmpfs) is refused before anything is made: saved tmpfs files are
    re-made only on a tmpfs."""
    import json

    from image_mutations import reseal

    prog = programs(sys.executable, PROGRAMS / "py_shared_memory.py")
    image = workdir / "image"
    _as_after_a_reboot(prog, image, dev_shm_names)
    manifest = json.loads((image / "manifest.json").read_text())
    target = workdir / "planted"
    named = [obj for obj in manifest["shmem"].values() if obj["paths"]]
    assert named, "the SharedMemory object has a name"
    named[0]["paths"] = [str(target)]
    reseal(image, manifest)
    result = run_cli("restore", image, "--detach", check=False)
    assert result.returncode == 1 and "is not on a tmpfs here" in result.stderr, result.stderr
    assert not target.exists() and not pid_alive(prog.pid)
