"""The S3 store against a real SeaweedFS: two store objects on one bucket as two hosts
(dedup between them, a gc that waits for the other's put, leases that expire and are
taken over), abandoned uploads, and the `snapshots` command line end to end, with a real
checkpointed program restored from the bucket."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import new_bucket, run_cli
from test_store import images, same_image, start_program  # noqa: F401  (images: a fixture)

from jupyter_ckpt.store import LockTimeout, S3Backend, open_store

PY = sys.executable


@pytest.fixture
def bucket(seaweedfs) -> str:
    return new_bucket(seaweedfs)


def test_two_hosts_dedup_against_each_other(images, bucket):
    url = f"s3://{bucket}/team"
    host_a, host_b = open_store(url), open_store(url)
    a1 = host_a.put_image(images["a1"], {"host": "A"})
    again = host_b.put_image(images["a1"], {"host": "B"})
    assert again.new_bytes == 0 and again.new_chunks == 0 < a1.new_chunks
    b = host_b.put_image(images["b"], {"host": "B"})
    assert b.new_bytes < a1.new_bytes / 2  # the shared pseudo-random buffer is there
    assert [i.id for i in host_a.list()] == [b.id, again.id, a1.id]
    assert host_a.usage().chunk_bytes == a1.new_bytes + b.new_bytes


def test_gc_on_one_host_waits_for_a_put_on_another(images, bucket, tmp_path):
    """Host B is half-way through a put (chunks written, no record yet: to gc they look
    like garbage). A gc on host A must wait for it, and then free nothing of it."""
    url = f"s3://{bucket}/team"
    host_a = open_store(url)
    host_a.put_image(images["b"])
    go = tmp_path / "go"
    code = ("import os, sys, time; from jupyter_ckpt.store import open_store\n"
            "def progress(done, total):\n"
            f"    if done and not os.path.exists({str(go)!r}):\n"
            "        print('writing', flush=True)\n"
            f"        while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            f"info = open_store({url!r}, lease_ttl=3).put_image({str(images['a2'])!r}, "
            "progress=progress)\n"
            "print(info.id, flush=True)\n")
    host_b = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert host_b.stdout.readline() == "writing\n"
        assert host_a.usage().chunks > 0
        with pytest.raises(LockTimeout):  # B's lease is renewed (ttl 3 s) while it writes
            host_a.gc(timeout=5)
        freed: list[int] = []
        gc = threading.Thread(target=lambda: freed.append(host_a.gc()))
        gc.start()
        go.touch()
        new_id = host_b.stdout.readline().strip()
        assert host_b.wait(timeout=120) == 0
        gc.join(timeout=120)
    finally:
        host_b.kill()
        host_b.wait()
    assert freed == [0]
    host_a.verify(new_id)
    host_a.checkout(new_id, tmp_path / "a2")
    assert same_image(images["a2"], tmp_path / "a2")


def test_a_dead_holders_lease_expires_and_a_stalled_holder_knows_it_lost(bucket):
    url = f"s3://{bucket}/team"
    code = ("import sys; from jupyter_ckpt.store import open_backend\n"
            f"lock = open_backend({url!r}, lease_ttl=2).lock('store', shared=True)\n"
            "print('locked', flush=True); sys.stdin.readline()\n"
            "print('held' if lock.held() else 'lost', flush=True)\n")
    holder = subprocess.Popen([PY, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    other = S3Backend(bucket, "team", lease_ttl=2)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(LockTimeout):  # renewed: never expires while its holder runs
            other.lock("store", timeout=4)
        os.kill(holder.pid, signal.SIGSTOP)  # stalled: its lease is no longer renewed
        with other.lock("store", timeout=30):
            os.kill(holder.pid, signal.SIGCONT)
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline() == "lost\n"
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait()
    # a holder killed while holding the exclusive lease: it expires, the next taker has it
    code = ("import os, signal; from jupyter_ckpt.store import open_backend\n"
            f"open_backend({url!r}, lease_ttl=2).lock('store')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([PY, "-c", code]).returncode == -signal.SIGKILL
    with pytest.raises(LockTimeout):
        other.lock("store", shared=True, timeout=0.5)
    with other.lock("store", shared=True, timeout=30) as lock:
        assert lock.held()


def test_a_put_that_lost_its_lease_stores_nothing(images, bucket):
    """Another host removed this put's shared lease (it judged it expired: the put had
    stalled) and ran a gc that freed the chunks written so far. The put must notice and
    refuse to write a record naming them."""
    url = f"s3://{bucket}/team"
    store, other = open_store(url), open_store(url)
    client = store.backend.client
    freed: list[int] = []

    def progress(done: int, total: int) -> None:
        if freed or not done:
            return
        leases = client.list_objects_v2(Bucket=bucket, Prefix="team/.locks/store/s-")
        for obj in leases["Contents"]:
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        freed.append(other.gc(timeout=30))

    with pytest.raises(LockTimeout, match="lock was lost"):
        store.put_image(images["a1"], progress=progress)
    assert freed and freed[0] > 0  # the gc did free chunks of this put
    assert other.list() == []
    other.gc()
    assert other.usage().chunks == 0


def test_multipart_puts_and_cleanup_of_abandoned_uploads(bucket):
    backend = S3Backend(bucket, "team", multipart_threshold=5 << 20, part_size=5 << 20)
    data = os.urandom((12 << 20) + 3)
    backend.put("big/object", data, exclusive=True)
    assert backend.get("big/object") == data and backend.size("big/object") == len(data)
    client = backend.client
    # leftovers of writers that died: an upload under the store's prefix, a temporary
    # object, and an upload of something else in the same bucket that is none of ours
    mine = client.create_multipart_upload(Bucket=bucket, Key="team/chunks/ab/x")["UploadId"]
    client.upload_part(Bucket=bucket, Key="team/chunks/ab/x", UploadId=mine, PartNumber=1,
                       Body=b"x" * (5 << 20))
    client.put_object(Bucket=bucket, Key="team/.tmp/probe-dead", Body=b"1")
    theirs = client.create_multipart_upload(Bucket=bucket, Key="other/y")["UploadId"]

    def uploads() -> set[str]:
        return {u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket)
                .get("Uploads") or []}

    backend.cleanup_incomplete()  # fresh ones may be a live writer's: kept
    assert uploads() == {mine, theirs}
    backend.cleanup_incomplete(max_age=0)
    assert uploads() == {theirs}
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="team/.tmp/")
    assert backend.get("big/object") == data


def _one_line_error(*args: str) -> str:
    result = run_cli(*args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jupyter-ckpt: ")
    return lines[0]


@pytest.mark.parametrize("lazy", [(), ("--lazy",)], ids=["eager", "lazy"])
def test_cli_put_ls_restore_from_s3(bucket, tmp_path, lazy):
    """Restored straight from the bucket's chunks (no scratch image), eagerly or lazily."""
    url = f"s3://{bucket}/team"
    prog = start_program(tmp_path, mib=2)
    try:
        image = tmp_path / "image"
        prog.dump(image, kill=True)
        sid = run_cli("snapshots", "put", image, "--label", "from a laptop",
                      "--store", url).stdout.strip()
        for p in image.iterdir():  # the restore must come from the bucket alone
            p.unlink()
        image.rmdir()
        listed = json.loads(run_cli("snapshots", "ls", "--json", "--store", url).stdout)
        assert [(i["id"], i["label"]) for i in listed] == [(sid, "from a laptop")]
        assert sid in run_cli("snapshots", "ls", "--store", url).stdout
        assert "intact" in run_cli("snapshots", "verify", sid, "--store", url).stdout
        out = run_cli("snapshots", "restore", sid, "--detach", *lazy, "--store", url)
        assert int(out.stdout.strip().splitlines()[-1]) == prog.pid
        prog.verify()
    finally:
        prog.kill()
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(
        "jupyter-ckpt-restore-*")], "scratch checkout left behind"


def test_cli_copy_between_local_and_s3_get_rm_gc(images, bucket, tmp_path, monkeypatch):
    local, s3, back = str(tmp_path / "local"), f"s3://{bucket}/team", str(tmp_path / "back")
    monkeypatch.setenv("JUPYTER_CKPT_STORE", local)  # the default store of every verb
    sid = run_cli("snapshots", "put", images["a1"], "--label", "L").stdout.strip()
    run_cli("snapshots", "copy", sid, "--to", s3)
    run_cli("snapshots", "copy", sid, "--store", s3, "--to", back)
    infos = [open_store(u).get(sid) for u in (local, s3, back)]
    assert {(i.label, i.logical_bytes) for i in infos} == {("L", infos[0].logical_bytes)}
    run_cli("snapshots", "get", sid, tmp_path / "out", "--store", back)
    assert same_image(images["a1"], tmp_path / "out")
    assert _one_line_error("snapshots", "copy", sid, "--to", s3).endswith("already exists")
    assert "freed" in run_cli("snapshots", "rm", "--now", sid, "--store", s3).stdout
    assert run_cli("snapshots", "gc", "--store", s3).stdout.strip() == "gc: 0 B freed"
    assert open_store(s3).usage().chunks == 0
    assert json.loads(run_cli("snapshots", "ls", "--json", "--store", s3).stdout) == []


def test_cli_errors_are_one_line(seaweedfs, bucket, monkeypatch, tmp_path):
    url = f"s3://{bucket}/team"
    assert "no snapshot nope" in _one_line_error("snapshots", "verify", "nope", "--store", url)
    assert "unsupported store URL" in _one_line_error("snapshots", "ls", "--store", "ftp://x/y")
    assert "names no bucket" in _one_line_error("snapshots", "ls", "--store", "s3:///x")
    assert "no such bucket" in _one_line_error("snapshots", "ls", "--store",
                                               "s3://ckpt-absent/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert "access denied" in _one_line_error("snapshots", "ls", "--store", url)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.env["AWS_SECRET_ACCESS_KEY"])
    with socket_closed() as port:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        assert "cannot reach the endpoint" in _one_line_error("snapshots", "ls", "--store", url)
    monkeypatch.setenv("AWS_PROFILE", "nobody-has-this-profile")
    assert "could not be found" in _one_line_error("snapshots", "ls", "--store", url)
    monkeypatch.delenv("AWS_PROFILE")
    # without the client library: a one-line hint to install it
    code = ("import sys; sys.modules['boto3'] = None; from jupyter_ckpt.cli import main; "
            f"sys.exit(main(['snapshots', 'ls', '--store', {url!r}]))")
    result = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "jupyter-ckpt: s3:// stores need boto3: pip install 'jupyter-ckpt[s3]'"]


class socket_closed:
    """A local port nobody listens on (bound, not listening, for the test's duration)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_default_store_is_the_jupyter_servers(images, tmp_path, monkeypatch):
    """Without --store or JUPYTER_CKPT_STORE the CLI works on the store the server extension
    keeps under $JUPYTER_CKPT_DIR (else ckpt/ in the Jupyter data directory)."""
    from jupyter_ckpt.jupyter.catalog import SnapshotCatalog, default_root
    from jupyter_ckpt.store import default_store_url

    monkeypatch.delenv("JUPYTER_CKPT_STORE", raising=False)
    monkeypatch.delenv("JUPYTER_CKPT_DIR", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert default_store_url() == SnapshotCatalog(default_root()).store.backend.root
    monkeypatch.setenv("JUPYTER_CKPT_DIR", str(tmp_path / "ckpt"))
    catalog = SnapshotCatalog(default_root())
    info = catalog.store.put_image(images["b"], label="from the server")
    listed = json.loads(run_cli("snapshots", "ls", "--json").stdout)
    assert [(i["id"], i["label"]) for i in listed] == [(info.id, "from the server")]
