"""An image is untrusted input. Mutations of a real image (tests/image_mutations.py), with
checksums recomputed so that they reach the reader, must each end in a clean one-line
refusal or a correct restore: never a traceback, a hang, a process left behind, or a
restore that reports success for an image that is not well-formed.

JUPYTER_CKPT_FUZZ_EXAMPLES sets how many examples each property runs (scripts/fuzz-images
runs thousands)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Program, pid_alive, run_cli
from image_mutations import (FILE_MUTATIONS, MANIFEST_MUTATIONS, Mutation, mutate_files,
                             mutate_manifest, nodes, reseal)
from jupyter_ckpt.engine.errors import ImageError
from jupyter_ckpt.engine.image import ImageReader

EXAMPLES = int(os.environ.get("JUPYTER_CKPT_FUZZ_EXAMPLES", "0"))
RESTORE_DEADLINE = 60.0


@pytest.fixture(scope="module")
def template(tmp_path_factory, request):
    """A real image of tests/programs/files.c (regular, unlinked and device files, pipes, a
    FIFO, dup'ed fds), dumped with --kill; the program's files stay where they were."""
    import subprocess
    from conftest import PROGRAMS
    workdir = tmp_path_factory.mktemp("fuzz")
    binary = workdir / "files"
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-I", str(PROGRAMS),
                    str(PROGRAMS / "files.c"), "-o", str(binary)], check=True)
    prog = Program([str(binary)], workdir).start()
    image = workdir / "image"
    prog.dump(image)
    yield prog, image
    prog.kill()


def _fresh_copy(image: Path, into: Path) -> Path:
    """A copy of `image` whose blobs are hard links (manifest mutations leave them alone)."""
    copy = into / f"m{time.monotonic_ns()}"
    copy.mkdir(mode=0o700)
    for entry in image.iterdir():
        if entry.name == "manifest.json":
            shutil.copy(entry, copy / entry.name)
        else:
            os.link(entry, copy / entry.name)
    return copy


@st.composite
def manifest_mutation(draw, manifest: dict):
    path = draw(st.sampled_from(nodes(manifest)))
    return path, draw(st.sampled_from(MANIFEST_MUTATIONS))


def _mutated(template_image: Path, into: Path, data) -> tuple[Path, Mutation]:
    if data.draw(st.integers(0, 9), label="file or manifest") == 0:
        copy = into / f"f{time.monotonic_ns()}"
        shutil.copytree(template_image, copy)
        how = data.draw(st.sampled_from(FILE_MUTATIONS), label="file mutation")
        return copy, mutate_files(copy, how, data.draw(st.integers(0, 1000), label="blob"))
    copy = _fresh_copy(template_image, into)
    manifest = json.loads((copy / "manifest.json").read_text())
    path, how = data.draw(manifest_mutation(manifest), label="manifest mutation")
    mutation = mutate_manifest(manifest, path, how)
    reseal(copy, manifest)
    return copy, mutation


@settings(max_examples=EXAMPLES or 300, deadline=None, derandomize=not EXAMPLES,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_reader_accepts_or_refuses_by_name(template, tmp_path_factory, data):
    """Reading a mutated image either succeeds or raises ImageError, quickly; a mutation
    that makes it ill-formed is refused."""
    _, image = template
    copy, mutation = _mutated(image, tmp_path_factory.mktemp("reader"), data)
    started = time.monotonic()
    try:
        ImageReader(str(copy)).close()
        accepted = True
    except ImageError as err:
        accepted = False
        assert "\n" not in str(err), f"{mutation.what}: a message of several lines: {err}"
    assert time.monotonic() - started < 10, f"{mutation.what}: reading took too long"
    assert not (accepted and mutation.must_refuse), f"{mutation.what}: accepted"
    shutil.rmtree(copy, ignore_errors=True)


def _kill_restored(pid: int) -> None:
    """Kill a restored program and reap it (we are its subreaper), so its PID is free for
    the next example."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not psutil.pid_exists(pid):
                return
        time.sleep(0.01)
    pytest.fail(f"restored pid {pid} could not be reaped")


def _new_processes(before: set[int], grace: float = 10.0) -> list[str]:
    """Our descendants that were not there `before` and are still alive after `grace`
    seconds (a killed tree's namespace init leaves a moment after its members)."""
    deadline = time.monotonic() + grace
    while True:
        left = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if proc.pid not in before and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@settings(max_examples=EXAMPLES or 40, deadline=None, derandomize=not EXAMPLES,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_restore_of_a_mutated_image_is_clean(template, tmp_path_factory, data):
    """`restore` of a mutated image: exit 1 with one line and no process left, or (only when
    the image is still well-formed) a restore that the program confirms."""
    prog, image = template
    copy, mutation = _mutated(image, tmp_path_factory.mktemp("restore"), data)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = run_cli("restore", copy, "--detach", "--stdio", "null", check=False,
                  timeout=RESTORE_DEADLINE)
    if out.returncode == 0:
        pid = int(out.stdout.strip().splitlines()[-1])
        try:
            assert not mutation.must_refuse, f"{mutation.what}: restored (pid {pid})"
            assert pid == prog.pid, f"{mutation.what}: restored as {pid}, not {prog.pid}"
            if mutation.informational:
                prog.verify()
        finally:
            _kill_restored(pid)
            prog.status.write_text("ready\n")
    else:
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("jupyter-ckpt: "), \
            f"{mutation.what}: exit {out.returncode}: {out.stderr[-3000:]}"
        assert not pid_alive(prog.pid), f"{mutation.what}: a failed restore left pid {prog.pid}"
    left = _new_processes(before)
    assert not left, f"{mutation.what}: processes left behind: {left}"
    shutil.rmtree(copy, ignore_errors=True)


def test_a_crafted_image_never_writes_into_a_mapped_file(cc, programs, workdir):
    """A private file mapping with copy-on-write pages, marked shared in a resealed manifest:
    restoring it would write the saved pages into the file itself (as root, into any
    library). It is refused by name, and the file is untouched."""
    binary = cc("counter")
    prog = programs(binary)
    image = workdir / "image"
    prog.dump(image)
    before = binary.read_bytes()
    manifest = json.loads((image / "manifest.json").read_text())
    vma = next(v for v in manifest["processes"][0]["memory"]["vmas"]
               if v["path"] == str(binary) and v["pages"])
    vma["shared"] = True
    reseal(image, manifest)
    out = run_cli("restore", image, "--detach", check=False)
    assert out.returncode == 1 and "cannot hold saved pages" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert binary.read_bytes() == before
    assert not pid_alive(prog.pid)
