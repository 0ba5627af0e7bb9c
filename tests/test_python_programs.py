"""Real CPython programs through dump -> kill -> restore: busy threads with locks,
interpreter state (generators, closures, open files), process attributes, and a dump
without --kill that must leave the original running unchanged."""
from __future__ import annotations

import os
import sys

from conftest import PROGRAMS, checkpoint_cycle, manifest, pid_alive, wait_until
from reaping import reap

PY = sys.executable


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def task_comms(pid: int) -> dict[int, str]:
    return {int(tid): open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            for tid in os.listdir(f"/proc/{pid}/task")}


def tick(prog) -> int:
    text = (prog.status.parent / (prog.status.name + ".tick")).read_text().strip()
    return int(text) if text else 0


def checkpoint_cycle_keep_going(prog, image) -> None:
    """checkpoint_cycle without the final verify, so a test can look at the restored
    process from outside first."""
    tids, started = prog.tids(), prog.start_time()
    prog.dump(image, kill=True)
    assert not pid_alive(prog.pid)
    prog.restore(image)
    assert prog.tids() == tids, "restored TIDs differ from the originals"
    assert prog.start_time() != started, "the 'restored' process is the original"


def test_eight_busy_threads_with_locks(programs, workdir):
    prog = programs(PY, PROGRAMS / "py_threads.py")
    native = sorted(int(x) for x in next(l for l in prog.lines() if l.startswith("tids ")).split()[1:])
    assert len(native) == 8 and len(prog.tids()) == 9
    assert set(native) == set(prog.tids()) - {prog.pid}
    comms = task_comms(prog.pid)
    assert sorted(comms[tid] for tid in native) == [f"busy-{i}" for i in range(8)]
    image = workdir / "image"
    checkpoint_cycle_keep_going(prog, image)
    assert task_comms(prog.pid) == comms, "thread names changed"
    assert manifest(image)["stats"]["threads"] == 9
    prog.verify()


def test_interpreter_state(programs, workdir):
    prog = programs(PY, PROGRAMS / "py_state.py")
    checkpoint_cycle(prog, workdir / "image")


def _outside_view(pid: int) -> dict:
    status = proc_status(pid)
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return {
        "cwd": os.readlink(f"/proc/{pid}/cwd"),
        "umask": status["Umask"],
        "limits": open(f"/proc/{pid}/limits").read(),
        "comm": open(f"/proc/{pid}/comm").read(),
        "environ": open(f"/proc/{pid}/environ", "rb").read(),
        "cmdline": open(f"/proc/{pid}/cmdline", "rb").read(),
        "pgid_sid": (int(stat[2]), int(stat[3])),
        "uid_gid": (status["Uid"], status["Gid"], status["Groups"]),
        "oom_score_adj": open(f"/proc/{pid}/oom_score_adj").read(),
        "sig": (status["SigBlk"], status["SigIgn"], status["SigCgt"]),
    }


def test_process_attributes(programs, workdir):
    env = {**os.environ, "CKPT_FROM_PARENT": "inherited value"}
    prog = programs(PY, PROGRAMS / "py_attrs.py", env=env, start_new_session=True)
    before = _outside_view(prog.pid)
    assert before["comm"] == "ckpt-attrs\n" and before["umask"] == "0027"
    assert before["pgid_sid"] == (prog.pid, prog.pid)
    checkpoint_cycle_keep_going(prog, workdir / "image")
    after = _outside_view(prog.pid)
    assert after == before
    prog.verify()


def test_dump_without_kill_leaves_the_original_running(programs, workdir):
    prog = programs(PY, PROGRAMS / "py_ticker.py", "--alloc", "2")
    image = workdir / "image"
    started, tids = prog.start_time(), prog.tids()
    signals = proc_status(prog.pid)["SigBlk"], proc_status(prog.pid)["SigCgt"]
    prog.dump(image, kill=False)

    assert (image / "manifest.json").is_file()
    assert pid_alive(prog.pid) and prog.popen.poll() is None
    assert prog.start_time() == started, "dump without --kill replaced the process"
    assert prog.tids() == tids
    status = proc_status(prog.pid)
    assert status["TracerPid"] == "0", "dump left the process traced"
    assert (status["SigBlk"], status["SigCgt"]) == signals, "dump changed the signal mask"
    count = tick(prog)
    wait_until(lambda: tick(prog) > count + 5, what="the original to keep counting after dump")
    prog.verify()  # the original checks itself (and exits)
    prog.reap()

    prog.status.unlink()  # the image's incarnation reports afresh
    prog.restore(image)
    assert prog.start_time() != started
    assert prog.tids() == tids
    count = tick(prog)
    wait_until(lambda: tick(prog) > count + 5, what="the restored process to count")
    prog.verify()


def test_restored_process_can_be_checkpointed_again(programs, workdir):
    prog = programs(PY, PROGRAMS / "py_state.py")
    checkpoint_cycle_keep_going(prog, workdir / "first")
    tids = prog.tids()
    prog.dump(workdir / "second", kill=True)
    reap(prog.pid)  # the restored process is our child now (we are its subreaper)
    prog.restore(workdir / "second")
    assert prog.tids() == tids
    prog.verify()


def test_restored_process_can_fork_and_exec(programs, workdir):
    """A restored process can still fork and exec normally (its cwd and environment are
    what a child inherits)."""
    script = workdir / "forker.py"
    script.write_text(
        "import os, subprocess, sys, time\n"
        f"sys.path.insert(0, {str(PROGRAMS.parent)!r})\n"
        "import ckpt_test\n"
        "t = ckpt_test.Protocol()\n"
        "os.chdir('/tmp')\n"
        "os.environ['FORKER'] = 'yes'\n"
        "t.ready()\n"
        "while not t.verify_requested:\n"
        "    time.sleep(0.002)\n"
        "out = subprocess.run(['/bin/sh', '-c', 'pwd; echo $FORKER'], capture_output=True,\n"
        "                     text=True).stdout\n"
        "t.check(out == '/tmp\\nyes\\n', repr(out))\n"
        "t.passed()\n")
    prog = programs(PY, script)
    checkpoint_cycle(prog, workdir / "image")
