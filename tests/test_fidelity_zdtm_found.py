"""States found broken by running CRIU's zdtm static tests against the engine: each must come
back faithfully or be refused by name at dump. Our own programs reproduce each one."""
from __future__ import annotations

import os
import signal
import sys

import pytest

from conftest import PROGRAMS, checkpoint_cycle, manifest, run_cli, wait_until


def test_file_locks_come_back_owned_by_their_process(programs, workdir):
    """POSIX locks of a process whose files a child shares, a flock() and an OFD lock: each
    is taken back by the process that held it, and survives the restore's own fd shuffling."""
    prog = programs(sys.executable, PROGRAMS / "py_file_locks.py")
    checkpoint_cycle(prog, workdir / "image")
    locks = [lock["kind"] for f in manifest(workdir / "image")["files"] for lock in f.get("locks", [])]
    assert sorted(locks) == ["flock", "ofd", "posix", "posix"]


def test_a_private_device_node_is_refused_by_name(programs, workdir):
    """Restore reopens /dev/null by its standard path: a node of the same device made
    elsewhere would come back with /dev/null's mode and inode, so dump refuses it."""
    prog = programs(sys.executable, PROGRAMS / "py_device_node.py")
    refused = run_cli("dump", prog.pid, workdir / "image", check=False)
    assert refused.returncode != 0
    assert "character device" in refused.stdout + refused.stderr
    assert "a device node other than /dev/null is not supported" in refused.stdout + refused.stderr
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on, unharmed


def test_a_pty_node_keeps_its_owner_and_mode(programs, workdir):
    """fchown/fchmod on a pty's slave change its /dev/pts node: the new node gets them back."""
    prog = programs(sys.executable, PROGRAMS / "py_pty_owner.py")
    checkpoint_cycle(prog, workdir / "image")
    pty = next(iter(manifest(workdir / "image")["ptys"].values()))
    assert (pty["slave_owner"], pty["slave_mode"]) == ([13333, 44444], 0o640)


def test_an_unlinked_write_only_file_keeps_its_content(programs, workdir):
    """The content of an unlinked file is read for the image; a write-only fd cannot be read
    through, which made dump fail with a bare 'Bad file descriptor'."""
    prog = programs(sys.executable, PROGRAMS / "py_unlinked_write_only.py")
    checkpoint_cycle(prog, workdir / "image")


@pytest.mark.parametrize("how", ["linked", "replaced"])
def test_a_file_its_path_no_longer_reaches_is_refused_by_name(programs, workdir, how):
    """Restore reopens a linked file by path: when that path leads elsewhere (or nowhere) the
    restore would fail after a successful dump, or silently open another file."""
    prog = programs(sys.executable, PROGRAMS / "py_moved_file.py", how)
    refused = run_cli("dump", prog.pid, workdir / "image", check=False)
    why = "unlinked from this name but still linked under another; it cannot be reopened by path"
    assert refused.returncode != 0 and why in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on, unharmed


def test_a_socket_pair_shut_down_after_queueing_data(programs, workdir):
    """Messages queued by an end that then shut down writing: the restore queued them after
    shutting that end down, and failed with a bare 'Broken pipe'."""
    prog = programs(sys.executable, PROGRAMS / "py_shut_pairs.py")
    checkpoint_cycle(prog, workdir / "image")


def test_a_process_whose_main_thread_exited_is_refused_by_name(cc, programs, workdir):
    """pthread_exit in main leaves the leader a zombie while other threads run: dump said the
    process had exited."""
    prog = programs(cc("leader_exited"))
    refused = run_cli("dump", prog.pid, workdir / "image", check=False)
    assert refused.returncode != 0
    assert "its main thread has exited while 1 other thread(s) run on" in refused.stdout + refused.stderr, \
        refused.stdout + refused.stderr
    assert not (workdir / "image").exists()
    # the original runs on, unharmed (verify() would take the zombie leader for an exit)
    os.kill(prog.pid, signal.SIGUSR1)
    wait_until(lambda: "PASS" in prog.lines(), what="the original's verdict")


def test_a_droppable_mapping_is_refused_by_name(cc, programs, workdir):
    """MAP_DROPPABLE memory was refused as a bare 'VmFlag dp'."""
    prog = programs(cc("droppable_map"))
    refused = run_cli("dump", prog.pid, workdir / "image", check=False)
    assert refused.returncode != 0
    assert "anonymous: droppable (MAP_DROPPABLE) is not supported" in refused.stdout + refused.stderr, \
        refused.stdout + refused.stderr
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on, unharmed


def test_a_sysv_attach_with_a_read_only_first_page(cc, programs, workdir):
    """The attach took its protection from its first page: read-only there, the whole
    segment was attached read-only and the restore failed ('mprotect: Permission denied')."""
    prog = programs(cc("sysv_mprotect"))
    checkpoint_cycle(prog, workdir / "image")


def test_a_child_subreaper_keeps_its_orphans(cc, programs, workdir):
    """PR_SET_CHILD_SUBREAPER was not restored: the flag read back 0, and an orphan of the
    restored tree went to init instead of the subreaper."""
    prog = programs(cc("child_subreaper"))
    checkpoint_cycle(prog, workdir / "image")
    assert manifest(workdir / "image")["processes"][0]["process"]["child_subreaper"] is True


def test_filesystem_ids_come_back(cc, programs, workdir):
    """setfsuid/setfsgid ids were recorded but not set: the restore left them the
    effective ones."""
    prog = programs(cc("fs_ids"))
    checkpoint_cycle(prog, workdir / "image")


def test_thp_disable_and_membarrier_registrations_come_back(cc, programs, workdir):
    """PR_SET_THP_DISABLE and membarrier() registrations belong to the address space the
    restore builds anew: both were lost."""
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) < (6, 3):
        pytest.skip("MEMBARRIER_CMD_GET_REGISTRATIONS needs Linux 6.3")
    prog = programs(cc("thp_membarrier"))
    checkpoint_cycle(prog, workdir / "image")


def test_a_memfd_still_executes(cc, programs, workdir):
    """execveat() of a memfd failed with ETXTBSY after restore: the restored fd was the
    memfd opened again read-write, which counts as a writer (memfd_create's own does not)."""
    prog = programs(cc("memfd_exec"))
    checkpoint_cycle(prog, workdir / "image")


def test_o_path_fds_come_back(cc, programs, workdir):
    """An O_PATH fd made dump fail with a bare 'Bad file descriptor' (fcntl refuses most
    commands on one): each is reopened by its path with O_PATH."""
    prog = programs(cc("opath_fds"))
    checkpoint_cycle(prog, workdir / "image")
    kinds = [f["type"] for f in manifest(workdir / "image")["files"] if f["kind"] == "path-only"]
    assert sorted(kinds) == ["directory", "fifo", "file", "symlink"]


def test_an_o_path_fd_on_a_removed_file_is_refused_by_name(programs, workdir):
    """An O_PATH fd keeps no content to save: one whose file was removed cannot come back."""
    prog = programs(sys.executable, PROGRAMS / "py_opath_removed.py")
    refused = run_cli("dump", prog.pid, workdir / "image", check=False)
    assert refused.returncode != 0
    assert "O_PATH file" in refused.stdout + refused.stderr
    assert "it has no path to reach it by" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on, unharmed


def test_an_unlinked_file_keeps_its_holes(cc, programs, workdir):
    """An unlinked file came back with its holes written as zeros (zdtm ghost_holes: 'mh
    not found'); only its data ranges are saved now, and written back at their offsets."""
    prog = programs(cc("unlinked_holes"))
    checkpoint_cycle(prog, workdir / "image")


def test_a_zombie_orphaned_to_a_subreaper_comes_back(cc, programs, workdir):
    """zdtm's helper_zombie_child, with the subreaper in the tree: the orphan's zombie comes
    back as the subreaper's child, for it to reap."""
    prog = programs(cc("subreaper_zombie"))
    checkpoint_cycle(prog, workdir / "image")


def test_a_zombie_orphaned_to_a_subreaper_from_another_session_is_refused_by_name(cc, programs, workdir):
    """The same zombie in a session its helper made: its session cannot be re-created (its
    leader is gone), so dump refuses it by name rather than bring it back in ours."""
    prog = programs(cc("subreaper_zombie"), "setsid")
    refused = run_cli("dump", prog.pid, workdir / "image", check=False)
    assert refused.returncode != 0
    assert "zombie: its process group" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert not (workdir / "image").exists()
    prog.verify()  # the original runs on, unharmed
