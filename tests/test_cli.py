"""The command line contract with real processes: refusals, bad input, images that must not
restore, ownership, a full disk, `inspect`, exit statuses and --stdio."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from conftest import CLI, PROGRAMS, manifest, pid_alive, run_cli, wait_until
from jupyter_ckpt.engine.image import manifest_checksum
from reaping import reap

PY = sys.executable
TICKER = PROGRAMS / "py_ticker.py"


def ticker(programs, *opts: str, **kwargs):
    return programs(PY, TICKER, *opts, **kwargs)


def tick(prog) -> int:
    text = (prog.status.parent / (prog.status.name + ".tick")).read_text().strip()
    return int(text) if text else 0


def still_running(prog) -> None:
    """The original is alive, not left traced or stopped, and still making progress."""
    assert pid_alive(prog.pid), "the original died"
    with open(f"/proc/{prog.pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert status["TracerPid"] == "0", "the original was left traced"
    assert status["State"][0] in "RS", f"the original is in state {status['State']}"
    count = tick(prog)
    wait_until(lambda: tick(prog) > count + 3, what="the original to keep counting")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, f"expected failure, got exit 0: {result.stdout}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jupyter-ckpt: "), \
        f"expected one error line, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    return lines[0]


def free_pid() -> int:
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    for pid in range(pid_max - 1, 300, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


def pid_free(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def our_children() -> set[int]:
    """Our live children (as subreaper, a restore's leftovers would end up here)."""
    alive = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


# --- refusal of unsupported state ------------------------------------------------------

def test_check_passes_for_a_plain_process(programs):
    prog = ticker(programs)
    result = run_cli("check", prog.pid)
    assert "can be checkpointed" in result.stdout
    still_running(prog)
    prog.verify()


def test_netlink_socket_is_refused_by_name(programs, workdir):
    prog = ticker(programs, "--netlink")
    fd = int(next(l for l in prog.lines() if l.startswith("netlink-fd ")).split()[1])

    result = run_cli("check", prog.pid, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"expected one blocker line: {result.stdout!r}"
    assert f"pid {prog.pid}" in lines[0] and f"fd {fd}" in lines[0] and "netlink" in lines[0]
    still_running(prog)

    before = listing(workdir)
    image = workdir / "image"
    error = one_line_error(run_cli("dump", prog.pid, image, "--kill", check=False))
    assert f"pid {prog.pid}" in error and f"fd {fd}" in error and "netlink" in error
    assert not image.exists()
    assert listing(workdir) == before, "dump left something behind"
    still_running(prog)
    prog.verify()


def test_every_blocker_is_listed(programs, workdir):
    prog = ticker(programs, "--netlink", "--netlink")
    fds = [int(l.split()[1]) for l in prog.lines() if l.startswith("netlink-fd ")]
    result = run_cli("check", prog.pid, check=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(f"fd {fd}" in line for fd, line in zip(fds, lines)), lines
    error = one_line_error(run_cli("dump", prog.pid, workdir / "image", check=False))
    assert f"fd {fds[0]}" in error and "1 more" in error and "check" in error, error
    assert not (workdir / "image").exists()
    still_running(prog)
    prog.verify()


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["dump", "check"])
def test_wrong_pid(command, workdir):
    image = workdir / "image"
    pids = [str(free_pid()), "0", "-1", str(os.getpid())]  # ours: the CLI is in its tree
    pids += [str(pid) for pid in _a_kernel_thread()]  # (a container's /proc shows none)
    for pid in pids:
        args = [command, pid] + ([image] if command == "dump" else [])
        error = one_line_error(run_cli(*args, check=False))
        assert pid in error, error
        assert not image.exists()
    assert listing(workdir) == []
    result = run_cli(command, "not-a-pid", *([image] if command == "dump" else []), check=False)
    assert result.returncode != 0 and len(result.stderr.splitlines()) == 1, result.stderr


def _a_kernel_thread() -> list[int]:
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                flags = int(f.read().rsplit(")", 1)[1].split()[6])
        except FileNotFoundError:
            continue
        if flags & 0x00200000:  # PF_KTHREAD
            return [pid]
    return []


def test_thread_id_is_not_a_process(programs, workdir):
    prog = programs(PY, PROGRAMS / "py_state.py")
    tid = next(t for t in prog.tids() if t != prog.pid)
    error = one_line_error(run_cli("dump", tid, workdir / "image", check=False))
    assert str(tid) in error and str(prog.pid) in error, error
    assert not (workdir / "image").exists()
    prog.verify()


def test_zombie_pid(workdir):
    child = subprocess.Popen(["true"])
    try:
        wait_until(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
                   what="the child to become a zombie")
        for command in ("dump", "check"):
            args = [command, child.pid] + ([workdir / "image"] if command == "dump" else [])
            error = one_line_error(run_cli(*args, check=False))
            assert str(child.pid) in error and "exited" in error, error
        assert listing(workdir) == []
    finally:
        child.wait()


def test_dump_into_existing_dir(programs, workdir):
    prog = ticker(programs)
    image = workdir / "image"
    image.mkdir()
    (image / "keep.txt").write_text("mine")
    error = one_line_error(run_cli("dump", prog.pid, image, "--kill", check=False))
    assert "exists" in error and str(image) in error
    assert listing(image) == ["keep.txt"] and (image / "keep.txt").read_text() == "mine"
    error = one_line_error(run_cli("dump", prog.pid, workdir / "no" / "such" / "dir", check=False))
    assert "not a directory" in error or "No such" in error
    still_running(prog)
    prog.verify()


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _largest_blob(image: Path) -> Path:
    name = max(manifest(image)["blobs"].items(), key=lambda kv: kv[1]["size"])[0]
    return image / name


def _edit_manifest(image: Path, edit) -> None:
    m = manifest(image)
    edit(m)
    (image / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))


def _corruptions():
    def flip(image):
        blob = _largest_blob(image)
        _flip_byte(blob, blob.stat().st_size // 2)

    def truncate(image):
        blob = _largest_blob(image)
        os.truncate(blob, blob.stat().st_size - 1)

    def missing_blob(image):
        _largest_blob(image).unlink()

    def edited(image):
        _edit_manifest(image, lambda m: m["processes"][0]["process"].update(cwd="/"))

    def other_version(image):
        _edit_manifest(image, lambda m: m.update(version=m["version"] + 1))

    def other_format(image):
        _edit_manifest(image, lambda m: m.update(format="criu"))

    def no_manifest(image):
        (image / "manifest.json").unlink()

    def truncated_manifest(image):
        text = (image / "manifest.json").read_bytes()
        (image / "manifest.json").write_bytes(text[:len(text) // 2])

    def not_json(image):
        (image / "manifest.json").write_bytes(b"\xff\xfe garbage")

    def a_file(image):
        shutil.rmtree(image)
        image.write_text("not a directory")

    def gone(image):
        shutil.rmtree(image)

    return [("flipped byte", flip, "checksum"), ("truncated blob", truncate, "truncated"),
            ("missing blob", missing_blob, "missing"), ("edited manifest", edited, "checksum"),
            ("other version", other_version, "version"), ("other format", other_format, "not a jupyter-ckpt image"),
            ("no manifest", no_manifest, "manifest.json"),
            ("truncated manifest", truncated_manifest, "corrupt"),
            ("manifest not json", not_json, "corrupt"),
            ("a file", a_file, "not an image directory"), ("nonexistent", gone, "no such image")]


# --- migration ----------------------------------------------------------------------------

def _as_if_from_another_host(image: Path, edit) -> None:
    """Rewrite the image as a host that differs in `edit` would have written it: a valid,
    sealed manifest (unlike an edited one, which restore refuses as corrupt)."""
    m = manifest(image)
    edit(m)
    m["manifest_xxh3_128"] = manifest_checksum(m)
    (image / "manifest.json").write_text(json.dumps(m))


def _libc_changed(m: dict) -> None:
    """Another build of libc at the same path and of the same size."""
    for vma in m["processes"][0]["memory"]["vmas"]:
        if vma["kind"] == "file" and "/libc" in vma["path"]:
            assert "build_id" in vma["file"], vma["file"]
            vma["file"]["build_id"] = "0" * 40


def _files_reinstalled(m: dict) -> None:
    """The same builds installed anew on another host: other times, same contents."""
    m["host"].update(hostname="elsewhere", boot_id="00000000-0000-4000-8000-000000000000")
    m["processes"][0]["process"]["exe"]["mtime_ns"] += 10**9
    for vma in m["processes"][0]["memory"]["vmas"]:
        if vma["kind"] == "file":
            vma["file"]["mtime_ns"] += 10**9


def test_migration_goes_ahead_where_it_can_and_is_refused_by_name_where_not(programs, workdir):
    """Another host of the same kind (another name, another boot) restores the image; one
    with another architecture, page size or fewer CPU features, or with a different
    executable or library, is refused in one line before any process exists."""
    prog = ticker(programs)
    image = workdir / "image"
    prog.dump(image)
    refusals = [
        ("architecture", lambda m: m["host"].update(machine="aarch64"), "image is for aarch64"),
        ("page size", lambda m: m["host"].update(page_size=65536), "page size 65536"),
        ("CPU features", lambda m: m["host"]["cpu_flags"].append("amx_fp8"), "lacks features"),
        ("executable", lambda m: m["processes"][0]["process"]["exe"].update(size=1),
         "changed since the checkpoint"),
        ("library", _libc_changed, "changed since the checkpoint (its build-id differs)"),
    ]
    children = our_children()
    for what, edit, expected in refusals:
        foreign = workdir / f"from-{what.replace(' ', '-')}"
        shutil.copytree(image, foreign)
        _as_if_from_another_host(foreign, edit)
        error = one_line_error(run_cli("restore", foreign, "--detach", check=False))
        assert expected in error, f"{what}: {error}"
        assert pid_free(prog.pid) and our_children() == children, f"{what}: a process was left"

    # executables and libraries are known by build-id, not by their modification time
    _as_if_from_another_host(image, _files_reinstalled)
    prog.restore(image)
    prog.verify()


def test_restore_refuses_broken_images(programs, workdir):
    prog = ticker(programs, "--alloc", "1")
    image = workdir / "image"
    prog.dump(image)
    pristine = dict(manifest(image))
    children = our_children()
    for what, corrupt, expected in _corruptions():
        broken = workdir / f"broken-{what.replace(' ', '-')}"
        shutil.copytree(image, broken)
        corrupt(broken)
        for command in ("restore", "inspect"):
            if command == "inspect" and what in ("flipped byte", "truncated blob", "missing blob"):
                continue  # inspect reads the manifest only
            result = run_cli(command, broken, *(["--detach"] if command == "restore" else []),
                             check=False)
            error = one_line_error(result)
            assert expected in error, f"{what}: {error}"
            assert result.stdout == "", f"{what}: {command} printed {result.stdout!r}"
            assert pid_free(prog.pid), f"{what}: a process was created"
            assert our_children() == children, f"{what}: restore left processes behind"
    assert manifest(image) == pristine
    prog.restore(image)  # the intact image still restores
    prog.verify()


def test_restore_while_the_original_runs(programs, workdir):
    """The PIDs are taken: the CLI brings the copy back in a new PID namespace (saying so in
    one line) and leaves the original alone; the engine, told not to, refuses by name."""
    from jupyter_ckpt.engine import RestoreConflict, restore

    prog = ticker(programs)
    image = workdir / "image"
    prog.dump(image, kill=False)
    started = prog.start_time()
    with pytest.raises(RestoreConflict, match=f"pid/tid {prog.pid} is in use"):
        restore(str(image), pid_ns=False)
    assert prog.start_time() == started

    result = run_cli("restore", image, "--detach", "--stdio", "null")
    copy = int(result.stdout.splitlines()[-1])
    try:
        assert copy != prog.pid
        assert len(result.stderr.splitlines()) == 1 and "new PID namespace" in result.stderr
        assert prog.start_time() == started
        still_running(prog)
    finally:
        os.kill(copy, signal.SIGKILL)
        reap(copy)
    still_running(prog)
    prog.verify()


def test_foreign_owner(programs, workdir):
    prog = ticker(programs)
    image = workdir / "image"
    prog.dump(image)
    for path in [image, *image.iterdir()]:
        os.chown(path, 12345, 12345)
    children = our_children()
    error = one_line_error(run_cli("restore", image, "--detach", check=False))
    assert our_children() == children
    assert "uid 12345" in error, error
    assert "--allow-foreign-owner" in error
    assert pid_free(prog.pid)
    prog.restore(image, "--allow-foreign-owner")
    prog.verify()


@pytest.fixture
def small_fs(workdir):
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount = workdir / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"kernel feature missing: cannot mount tmpfs ({result.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_full_disk(programs, small_fs):
    prog = ticker(programs, "--alloc", "8")
    image = small_fs / "image"
    error = one_line_error(run_cli("dump", prog.pid, image, "--kill", check=False))
    assert "no space" in error.lower(), error
    assert listing(small_fs) == [], "dump left a partial image"
    still_running(prog)
    prog.verify()


def test_bad_stdio_target(programs, workdir):
    prog = ticker(programs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pipe = prog.popen.stdout
    prog.dump(workdir / "image")
    pipe.close()
    children = our_children()
    error = one_line_error(run_cli("restore", workdir / "image", "--detach",
                                   "--stdio", workdir / "no" / "such" / "out.txt", check=False))
    assert "out.txt" in error, error
    assert pid_free(prog.pid) and our_children() == children


def test_restore_fails_whole_when_a_file_is_gone(programs, workdir):
    """The failure comes after the restore has begun (PID created, memory mapped): it must
    still end with one line and no process; once the file is back, the image restores."""
    prog = ticker(programs, "--alloc", "1")
    image = workdir / "image"
    prog.dump(image)
    tick_file = prog.status.parent / (prog.status.name + ".tick")
    saved = tick_file.read_bytes()
    tick_file.unlink()
    children = our_children()
    error = one_line_error(run_cli("restore", image, "--detach", check=False))
    assert tick_file.name in error, error
    assert pid_free(prog.pid) and our_children() == children
    assert not tick_file.exists()
    tick_file.write_bytes(saved)
    prog.restore(image)
    prog.verify()


# --- inspect ------------------------------------------------------------------------------

def test_inspect(programs, workdir):
    prog = ticker(programs, "--alloc", "4")
    image = workdir / "image"
    prog.dump(image, kill=False)
    tids = prog.tids()
    m = manifest(image)

    text = run_cli("inspect", image).stdout
    assert str(image) in text and f"pid {prog.pid}" in text
    assert f"threads: {len(tids)}" in text and "fds:" in text and "regular-file" in text
    assert m["created"] in text and m["host"]["hostname"] in text

    summary = json.loads(run_cli("inspect", image, "--json").stdout)
    for key in ("processes", "threads", "memory", "fds_by_kind", "created", "host", "freeze_ms",
                "bytes_written", "bytes_logical", "dirty_tracking", "image_bytes"):
        assert key in summary, f"inspect --json lacks {key}"
    datetime.fromisoformat(summary["created"])
    assert summary["created"] == m["created"]
    assert {"hostname", "machine", "kernel", "page_size"} <= set(summary["host"])
    assert summary["threads"] == len(tids)
    assert isinstance(summary["freeze_ms"], (int, float)) and summary["freeze_ms"] >= 0
    assert isinstance(summary["dirty_tracking"], str)
    on_disk = sum(p.stat().st_size for p in image.iterdir() if p.name != "manifest.json")
    assert summary["bytes_written"] == summary["image_bytes"] == on_disk
    assert summary["bytes_logical"] >= 4 << 20
    assert summary["memory"]["saved_bytes"] >= 4 << 20
    assert summary["memory"]["mapped_bytes"] >= summary["memory"]["saved_bytes"]

    (proc,) = summary["processes"]
    assert proc["pid"] == prog.pid and proc["threads"] == tids
    assert "py_ticker.py" in proc["cmdline"]
    assert proc["memory_saved_bytes"]["anon"] >= 4 << 20
    kind_of = {f["id"]: f["kind"] for f in m["files"]}
    kinds = dict(Counter(kind_of[fd["file"]] for fd in m["processes"][0]["fds"]))
    assert proc["fds_by_kind"] == kinds == summary["fds_by_kind"]
    assert kinds["regular-file"] >= 2  # the tick file and the stdout log
    still_running(prog)
    prog.verify()


# --- restore: exit status and stdio -------------------------------------------------------

def _restored_and_released(pid: int, cmdline: bytes) -> bool:
    """The process at `pid` is the restored program, no longer held by the restorer."""
    try:
        if open(f"/proc/{pid}/cmdline", "rb").read() != cmdline:
            return False
        with open(f"/proc/{pid}/status") as f:
            return any(line.split() == ["TracerPid:", "0"] for line in f)
    except (FileNotFoundError, ProcessLookupError):
        return False


def _restore_and_wait(image: Path, pid: int, cmdline: bytes, *extra: str) -> subprocess.Popen:
    cli = subprocess.Popen(CLI + ["restore", str(image), *extra], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _restored_and_released(pid, cmdline) or cli.poll() is not None,
               what="the restore")
    assert cli.poll() is None, f"restore ended early ({cli.returncode}): {cli.stderr.read()}"
    return cli


def test_restore_returns_the_exit_status(programs, workdir):
    prog = ticker(programs, "--exit", "7")
    cmdline = open(f"/proc/{prog.pid}/cmdline", "rb").read()
    image = workdir / "image"
    prog.dump(image)

    cli = _restore_and_wait(image, prog.pid, cmdline)
    os.kill(prog.pid, signal.SIGUSR1)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 7, f"restore returned {cli.returncode}: {out}{err}"
    assert err == ""
    assert [l for l in prog.lines() if l.startswith(("PASS", "FAIL"))] == ["PASS"]

    cli = _restore_and_wait(image, prog.pid, cmdline)  # again, this time it gets killed
    os.kill(prog.pid, signal.SIGKILL)
    cli.communicate(timeout=60)
    assert cli.returncode == 128 + signal.SIGKILL


def test_stdio_to_path_and_null(programs, workdir):
    prog = ticker(programs, "--say", "after restore", stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT)
    pipe = prog.popen.stdout
    image = workdir / "image"
    prog.dump(image)
    pipe.close()  # the parent's end of the stdout pipe is gone for good
    m = manifest(image)
    kind_of = {f["id"]: f["kind"] for f in m["files"]}
    assert {fd["fd"] for fd in m["processes"][0]["fds"]
            if kind_of[fd["file"]] == "external-stdio"} == {1, 2}

    out = workdir / "out.txt"
    prog.restore(image, "--stdio", out)
    prog.verify()
    wait_until(lambda: not pid_alive(prog.pid), what="the program to exit")
    reap(prog.pid)
    text = out.read_text()
    assert "after restore (stdout)\n" in text and "after restore (stderr)\n" in text, text

    prog.status.unlink()
    prog.restore(image, "--stdio", "null")
    prog.verify()
    assert out.read_text() == text


def test_console_script(programs):
    prog = ticker(programs)
    script = Path(PY).parent / "jupyter-ckpt"
    result = subprocess.run([script, "check", str(prog.pid)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "can be checkpointed" in result.stdout
    prog.verify()


def test_a_dump_removes_what_killed_dumps_left_behind(cc, programs, workdir):
    """A dump that was killed leaves `.NAME.*.partial` (process memory) next to its DIR; the
    next dump into that directory removes it, but never one whose writer is still at work."""
    import fcntl
    stale = workdir / ".old.abc123.partial"
    stale.mkdir()
    (stale / "pages-1.bin").write_bytes(b"secret" * 1000)
    busy = workdir / ".busy.def456.partial"
    busy.mkdir()
    (busy / "pages-2.bin").write_bytes(b"in progress")
    held = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        prog = programs(cc("counter"))
        prog.dump(workdir / "image")
        assert not stale.exists()
        assert (busy / "pages-2.bin").exists()
    finally:
        os.close(held)


def test_host_verdict_lists_every_difference_before_anything_runs(programs, workdir):
    """`inspect --host` and `snapshots check` say whether an image can be restored here, one
    line per difference, each marked as stopping the restore or not."""
    prog = ticker(programs)
    image = workdir / "image"
    prog.dump(image)
    here = run_cli("inspect", image, "--host")
    assert here.stdout.strip().splitlines()[-1] == "can be restored on this host", here.stdout

    store = workdir / "store"
    sid = run_cli("snapshots", "put", image, "--store", store).stdout.strip()
    checked = run_cli("snapshots", "check", sid, "--store", store)
    assert checked.stdout == here.stdout

    moved = workdir / "moved"
    shutil.copytree(image, moved)

    def elsewhere(m):
        m["host"].update(hostname="elsewhere", cpu_flags=m["host"]["cpu_flags"] + ["amx_fp8"])
        _libc_changed(m)

    _as_if_from_another_host(moved, elsewhere)
    verdict = run_cli("inspect", moved, "--host", check=False)
    lines = verdict.stdout.strip().splitlines()
    assert verdict.returncode == 1, verdict.stdout
    assert any(l.startswith("refused: this CPU lacks features") for l in lines), lines
    assert any(l.startswith("refused: mapped file") and "libc" in l and "build-id differs" in l
               for l in lines), lines
    assert "differs: made on host elsewhere" in " ".join(lines), lines
    assert lines[-1] == "cannot be restored on this host"
    # restore refuses with all of them at once, before creating anything
    error = one_line_error(run_cli("restore", moved, "--detach", check=False))
    assert "lacks features" in error and "build-id differs" in error, error
    assert pid_free(prog.pid)


def test_a_portable_image_brings_its_own_libraries(programs, workdir, monkeypatch):
    """A library replaced by another build after the dump: a plain image is refused by
    name, a portable one restores with its own copy of the library."""
    libdir = workdir / "lib"
    libdir.mkdir()

    def build_lib(answer_factor: int) -> Path:
        source = workdir / f"lib{answer_factor}.c"
        source.write_text((PROGRAMS / "portable_lib.c").read_text().replace(
            "x * 6", f"x * {answer_factor}"))
        out = workdir / f"libportable-{answer_factor}.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(source), "-o", str(out)], check=True)
        return out

    os.replace(build_lib(6), libdir / "libportable.so")
    binary = workdir / "portable_main"
    subprocess.run(["gcc", "-O2", "-I", str(PROGRAMS), str(PROGRAMS / "portable_main.c"),
                    "-o", str(binary), f"-L{libdir}", "-lportable", f"-Wl,-rpath,{libdir}"],
                   check=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    prog = programs(binary)
    plain, portable = workdir / "plain", workdir / "portable"
    run_cli("dump", prog.pid, plain)
    run_cli("dump", prog.pid, portable, "--portable", "--kill")
    prog.reap()
    copies = [v["file"]["blob"] for v in manifest(portable)["processes"][0]["memory"]["vmas"]
              if v["path"] == str(libdir / "libportable.so")]
    assert copies and (portable / copies[0]).read_bytes() == (libdir / "libportable.so").read_bytes()

    os.replace(build_lib(7), libdir / "libportable.so")  # another build, same path
    error = one_line_error(run_cli("restore", plain, "--detach", check=False))
    assert "libportable.so changed since the checkpoint (its build-id differs)" in error, error
    assert pid_free(prog.pid)
    verdict = run_cli("inspect", portable, "--host").stdout
    assert "libportable.so changed since the checkpoint" in verdict and "copy in the image" in verdict

    prog.restore(portable)
    maps = Path(f"/proc/{prog.pid}/maps").read_text()
    assert str(workdir / "cache" / "jupyter-ckpt" / "files") in maps, maps
    prog.verify()


def test_small_tree_is_dumped_without_precopy(programs, workdir, monkeypatch):
    """Below precopy.PRECOPY_MIN of private memory pre-copy is skipped (copying it all while
    frozen is quick); the image is as complete, and restores."""
    monkeypatch.delenv("JUPYTER_CKPT_PRECOPY_MIN")
    prog = ticker(programs, "--alloc", "4")
    image = workdir / "image"
    prog.dump(image, kill=True)
    stats = manifest(image)["stats"]
    assert stats["dirty_tracking"] == "none" and "precopy_rounds" not in stats, stats
    prog.restore(image)
    prog.verify()


def _imported(result: subprocess.CompletedProcess) -> set[str]:
    """The modules a command loaded, from its stderr under PYTHONPROFILEIMPORTTIME."""
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_dump_and_restore_load_only_what_they_use(programs, workdir, monkeypatch):
    """On a small process the command's start-up is most of its cost: a dump does not build
    the manifest schema (only image readers validate), a restore loads neither the dumper
    nor pre-copy, and neither loads the snapshot store or the Jupyter layer."""
    prog = ticker(programs)
    image = workdir / "image"
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    dumped = _imported(run_cli("dump", prog.pid, image, "--kill"))
    prog.reap()
    restored = _imported(run_cli("restore", image, "--detach"))
    monkeypatch.delenv("PYTHONPROFILEIMPORTTIME")
    prog.verify()
    engine = "jupyter_ckpt.engine."
    # (engine/__init__ loads dumper and restorer through importlib, which this list omits:
    # what only each of them imports stands for it)
    assert engine + "precopy" in dumped and engine + "pidns" in restored
    assert engine + "schema" not in dumped
    assert engine + "schema" in restored
    assert not {engine + "precopy", engine + "freeze"} & restored
    above = {m for m in dumped | restored if m.startswith(
        ("jupyter_ckpt.store", "jupyter_ckpt.snapshots_api", "jupyter_ckpt.jupyter"))}
    assert not above, above
