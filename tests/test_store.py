"""The snapshot store with real engine images: ingest, dedup across snapshots and kernels,
zero pages, checkout that `restore` accepts, delete and gc, a put racing a delete, a put
killed half-way, corruption, and unsafe ids. Every test that works through the store's
interface runs on both backends: a local directory and a bucket of a real SeaweedFS."""
from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Program, new_bucket, run_cli, wait_until

from jupyter_ckpt.store import (AlreadyExists, BadImage, CorruptData, InvalidName,
                                LockTimeout, NotFound, SnapshotStore, open_backend, open_store)

HERE = Path(__file__).parent
PY = sys.executable
MIB = 1 << 20
SIZE_MIB = 8  # noise and text buffers; the zero buffer is 4x

# A Python program holding three kinds of memory: pseudo-random bytes that are the same in
# every run (incompressible, but shared between two runs = two kernels), compressible text,
# and a large buffer whose pages were all written, with zeros. That buffer is a private
# mapping of a file of ones: the engine leaves zero pages of anonymous memory out of the
# image, but must keep these, so the store gets zero pages to skip. SIGUSR2 changes 64 KiB
# of the text; SIGUSR1 (after a restore) makes it check everything against digests it took.
PROGRAM = r'''
import hashlib, mmap, os, random, signal, sys, time
sys.path.insert(0, sys.argv[1])
import ckpt_test
t = ckpt_test.Protocol()
mib = int(sys.argv[2])
noise = bytearray(random.Random(1).randbytes(mib << 20))
text = bytearray(b"".join(b"line %08d of a compressible buffer\n" % i
                          for i in range((mib << 20) // 37)))
with open(os.path.join(os.path.dirname(t.path), f"ones-{os.getpid()}"), "w+b") as ones:
    ones.write(b"\1" * (4 * mib << 20))
    ones.flush()
    zeros = mmap.mmap(ones.fileno(), 4 * mib << 20, flags=mmap.MAP_PRIVATE)
zeros[:] = bytes(len(zeros))


def digest():
    h = hashlib.sha256()
    h.update(noise)
    h.update(text)
    return h.hexdigest()


expected = digest()
mutations = 0
mutate = False


def on_usr2(signum, frame):
    global mutate
    mutate = True


signal.signal(signal.SIGUSR2, on_usr2)
t.ready()
while not t.verify_requested:
    if mutate:
        mutate = False
        mutations += 1
        text[1 << 20:(1 << 20) + 65536] = bytes([mutations]) * 65536
        expected = digest()
        t._status(f"mutated {mutations}")
    time.sleep(0.005)
t.check(digest() == expected, "noise or text changed")
t.check(zeros[:] == bytes(len(zeros)), "the zero buffer changed")
t.check(os.getpid() == int(open(sys.argv[-1] + ".pid").read()), "pid changed")
t.passed()
'''


def start_program(workdir: Path, mib: int = SIZE_MIB) -> Program:
    script = workdir / "store_prog.py"
    if not script.exists():
        script.write_text(PROGRAM)
    prog = Program([PY, str(script), str(HERE), str(mib)], workdir)
    prog.start()
    Path(str(prog.status) + ".pid").write_text(str(prog.pid))
    return prog


def mutate(prog: Program, n: int) -> None:
    os.kill(prog.pid, signal.SIGUSR2)
    wait_until(lambda: f"mutated {n}" in prog.lines(), what="the program to change its text")


def restore_from_store(store: SnapshotStore, snapshot_id: str, **options):
    """engine.restore straight from the store's chunks (no checkout); the image is closed
    once the restore returned."""
    from jupyter_ckpt import engine

    opened = store.open_image(snapshot_id)
    try:
        return engine.restore(opened, **options)
    finally:
        opened.close()


def same_image(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def chunk_keys(store: SnapshotStore) -> list[tuple[str, int]]:
    return sorted(store.backend.list("chunks/"))


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path) -> str:
    """Where a test's store lives: a directory, or a fresh bucket on the session's SeaweedFS.
    Open it as often as needed (each open is another store object, as another process or
    host would have)."""
    if request.param == "local":
        return str(tmp_path / "store")
    return f"s3://{new_bucket(request.getfixturevalue('seaweedfs'))}/store"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Real images, made once: a1 and a2 of one process (a2 after a small change), b of a
    second process running the same program (a second kernel)."""
    workdir = tmp_path_factory.mktemp("store-images")
    out: dict[str, Path] = {}
    a = start_program(workdir)
    b = start_program(workdir)
    try:
        out["a1"] = workdir / "a1"
        run_cli("dump", a.pid, out["a1"])
        mutate(a, 1)
        out["a2"] = workdir / "a2"
        run_cli("dump", a.pid, out["a2"])
        out["b"] = workdir / "b"
        run_cli("dump", b.pid, out["b"])
    finally:
        a.kill()
        b.kill()
    return out


def test_round_trip_restores_a_running_process(url, tmp_path):
    prog = start_program(tmp_path, mib=4)
    try:
        image = tmp_path / "image"
        prog.dump(image, kill=True)
        store = open_store(url)
        meta = {"kernel_id": "k-1", "kernel_name": "python3", "notebook_path": "a/b.ipynb",
                "execution_count": 7}
        info = store.put_image(image, meta, label="before lunch")
        manifest = json.loads((image / "manifest.json").read_text())
        blob_bytes = sum(b["size"] for b in manifest["blobs"].values())
        assert info.logical_bytes == blob_bytes
        assert info.metadata == meta and info.label == "before lunch"
        assert info.image["root_pid"] == prog.pid and info.image["processes"] == 1
        assert info.new_bytes == info.stored_bytes > 0
        assert info.stored_bytes < blob_bytes - info.zero_bytes  # compressed
        assert store.get(info.id) == info
        assert store.manifest(info.id) == manifest

        out = tmp_path / "checkout"
        store.checkout(info.id, out)
        assert same_image(image, out), "checkout differs from the image that was put"
        assert (out.stat().st_mode & 0o777) == 0o700
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "partial dir left"
        from jupyter_ckpt.engine.image import ImageReader
        ImageReader(str(out))  # the engine's own checks: manifest and every blob

        for p in image.iterdir():  # the restore must run from the checkout alone
            p.unlink()
        image.rmdir()
        prog.restore(out)
        prog.verify()
    finally:
        prog.kill()


def test_dedup_across_snapshots_and_kernels(images, url, tmp_path):
    store = open_store(url)
    a1 = store.put_image(images["a1"], {"kernel_id": "A"})
    a2 = store.put_image(images["a2"], {"kernel_id": "A"})
    b = store.put_image(images["b"], {"kernel_id": "B"})
    # the same process a moment later: only what changed is new
    assert a2.new_bytes < a1.new_bytes / 10, (a1, a2)
    assert a2.new_chunks < a1.chunks / 4
    # another process of the same program: its pseudo-random buffer is already there
    assert b.new_bytes < a1.new_bytes / 2, (a1, b)
    # the same image twice adds nothing but its lists
    again = store.put_image(images["a1"], {"kernel_id": "A"})
    assert again.new_bytes == 0 and again.new_chunks == 0
    usage = store.usage()
    assert usage.snapshots == 4
    assert usage.chunk_bytes == a1.new_bytes + a2.new_bytes + b.new_bytes
    assert usage.logical_bytes == a1.logical_bytes * 2 + a2.logical_bytes + b.logical_bytes
    assert usage.stored_bytes < usage.logical_bytes / 4
    for info, name in ((a1, "a1"), (a2, "a2"), (b, "b"), (again, "a1")):
        out = tmp_path / f"out-{info.id}"
        store.checkout(info.id, out)
        assert same_image(images[name], out), name


def test_zero_pages_are_not_stored(images, url, tmp_path):
    store = open_store(url, compression="none")
    info = store.put_image(images["a1"])
    zero_buffer = 4 * SIZE_MIB * MIB
    manifest = json.loads((images["a1"] / "manifest.json").read_text())
    pages_blob = manifest["processes"][0]["memory"]["pages_blob"]
    assert manifest["blobs"][pages_blob]["size"] > zero_buffer  # the engine saved them
    assert info.zero_bytes >= zero_buffer
    stored = store.usage().chunk_bytes
    # uncompressed: what is stored is the non-zero data plus a 4-byte header per chunk
    assert stored <= info.logical_bytes - info.zero_bytes + 4 * info.chunks
    assert stored >= (2 * SIZE_MIB - 1) * MIB  # noise and text are there, uncompressed
    out = tmp_path / "out"
    store.checkout(info.id, out)
    assert same_image(images["a1"], out)
    pages = os.stat(out / pages_blob)
    assert pages.st_blocks * 512 < pages.st_size - zero_buffer + MIB, "zero ranges not holes"


def test_delete_frees_only_unshared_chunks(images, url, tmp_path):
    store = open_store(url)
    a1 = store.put_image(images["a1"], {"kernel_id": "A"})
    a2 = store.put_image(images["a2"], {"kernel_id": "A"})
    b = store.put_image(images["b"], {"kernel_id": "B"})
    before = store.usage()

    freed = store.delete(a1.id)
    after = store.usage()
    assert freed == before.stored_bytes - after.stored_bytes
    assert 0 < freed < a1.stored_bytes / 4  # a2 still uses almost all of it
    with pytest.raises(NotFound):
        store.get(a1.id)
    with pytest.raises(NotFound):
        store.delete(a1.id)
    assert [i.id for i in store.list()] == [b.id, a2.id]
    store.verify(a2.id)
    store.verify(b.id)
    # every chunk left is used by a2 or b: nothing for gc to do
    assert store.gc() == 0

    store.delete(a2.id)
    store.checkout(b.id, tmp_path / "b")
    assert same_image(images["b"], tmp_path / "b")
    assert store.usage().chunks == b.chunks  # exactly b's chunks remain
    store.delete(b.id)
    empty = store.usage()
    assert (empty.snapshots, empty.chunks, empty.chunk_bytes, empty.manifest_bytes) == (0, 0, 0, 0)
    assert chunk_keys(store) == []


def test_delete_waits_for_a_put_in_progress(images, url, tmp_path):
    """A delete of a snapshot whose chunks a put in progress has just found (so it did not
    write them again) must not free them under it."""
    store = open_store(url)
    a1 = store.put_image(images["a1"])
    deleter: list[subprocess.Popen] = []
    seen: dict[str, object] = {}

    def progress(done: int, total: int) -> None:
        if deleter:
            return
        # a delete from another process, while this put holds chunks of a1
        code = ("from jupyter_ckpt.store import open_store; "
                f"s = open_store({url!r}); print('deleting', flush=True); "
                f"print(s.delete({a1.id!r}))")
        deleter.append(subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True))
        assert deleter[0].stdout.readline() == "deleting\n"
        time.sleep(1.0)  # ample time to free a1's chunks, if it could
        seen["finished_during_put"] = deleter[0].poll() is not None

    a2 = store.put_image(images["a2"], progress=progress)
    out, _ = deleter[0].communicate(timeout=60)
    assert deleter[0].returncode == 0
    assert seen["finished_during_put"] is False, "delete did not wait for the put"
    assert int(out) > 0
    assert [i.id for i in store.list()] == [a2.id]
    store.checkout(a2.id, tmp_path / "a2")
    assert same_image(images["a2"], tmp_path / "a2")


def test_concurrent_puts_and_deletes_lose_nothing(images, url):
    """Puts of shared content and deletes of older snapshots from several threads, each with
    its own store object (so its own lock descriptor): every snapshot that was not deleted
    checks out intact."""
    open_store(url).put_image(images["a1"], {"n": -1})
    errors: list[BaseException] = []
    made: list[str] = []
    lock = threading.Lock()

    def putter(k: int) -> None:
        try:
            s = open_store(url, workers=2)
            for i in range(3):
                info = s.put_image(images[("a1", "a2", "b")[(i + k) % 3]], {"n": k * 10 + i})
                with lock:
                    made.append(info.id)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    def deleter() -> None:
        try:
            s = open_store(url, workers=2)
            for _ in range(6):
                snaps = s.list()
                if len(snaps) > 1:
                    s.delete(snaps[-1].id)  # the oldest
                time.sleep(0.05)
        except BaseException as err:  # pragma: no cover
            errors.append(err)

    threads = [threading.Thread(target=putter, args=(k,)) for k in range(2)]
    threads.append(threading.Thread(target=deleter))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    store = open_store(url)
    left = store.list()
    assert left and len(made) == 6
    for info in left:
        store.verify(info.id)
    assert store.gc() == 0, "chunks were left that no snapshot uses"


def test_killed_put_leaves_only_garbage_that_gc_removes(images, url, tmp_path):
    store = open_store(url)
    b = store.put_image(images["b"])
    before = store.usage()
    # a put that dies half-way: its progress callback reports, then waits to be killed
    code = ("import sys, time; from jupyter_ckpt.store import open_store\n"
            "def progress(done, total):\n"
            "    print('progress', flush=True); time.sleep(600)\n"
            f"open_store({url!r}).put_image({str(images['a2'])!r}, progress=progress)\n")
    child = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "progress"
        time.sleep(0.5)  # let its writer threads finish the chunks in flight
    finally:
        child.kill()
        child.wait()
    assert [i.id for i in store.list()] == [b.id]
    orphans = store.usage()
    assert orphans.chunks > before.chunks  # it wrote chunks b did not have
    freed = store.gc()
    assert freed == orphans.stored_bytes - before.stored_bytes > 0
    assert store.usage() == before
    if not url.startswith("s3://"):
        assert not os.listdir(Path(url) / ".tmp")
    store.verify(b.id)
    # the store works on as before
    a2 = store.put_image(images["a2"])
    store.checkout(a2.id, tmp_path / "a2")
    assert same_image(images["a2"], tmp_path / "a2")


def test_corruption_is_detected(images, url, tmp_path):
    store = open_store(url)
    info = store.put_image(images["a1"])
    key = max(chunk_keys(store), key=lambda k: k[1])[0]
    name = key.rsplit("/", 1)[-1]
    data = bytearray(store.backend.get(key))
    data[len(data) // 2] ^= 0xFF
    store.backend.put(key, bytes(data))
    with pytest.raises(CorruptData, match=name):
        store.checkout(info.id, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert {p.name for p in tmp_path.iterdir()} <= {"store"}, "partial checkout left behind"
    with pytest.raises(CorruptData, match=name):
        store.verify(info.id)

    store.backend.delete(key)
    with pytest.raises(CorruptData, match=f"{name} is missing"):
        store.checkout(info.id, tmp_path / "out")
    store.backend.put(key, b"")  # an empty file (a rename whose data a crash lost) is no chunk
    with pytest.raises(CorruptData, match="missing"):
        store.verify(info.id)
    # a later put of the same image repairs the store: the bad chunk counts as absent
    store.put_image(images["a1"])
    store.verify(info.id)

    # a damaged image is refused when it is put, and leaves no snapshot
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in images["a1"].iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    pages = next(p for p in bad.iterdir() if p.name.startswith("pages-"))
    with open(pages, "r+b") as f:
        f.seek(pages.stat().st_size // 3)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    count = len(store.list())
    with pytest.raises(BadImage, match="checksum mismatch"):
        store.put_image(bad)
    assert len(store.list()) == count
    (bad / "manifest.json").write_text("{")
    with pytest.raises(BadImage, match="corrupt"):
        store.put_image(bad)
    with pytest.raises(BadImage, match="no such"):
        store.put_image(tmp_path / "nowhere")


def test_put_consuming_a_scratch_image(images, tmp_path):
    """A scratch image's blobs are removed as soon as they are stored (before the store's
    flush could write them to disk); the snapshot is whole."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for p in images["a1"].iterdir():
        (scratch / p.name).write_bytes(p.read_bytes())
    store = open_store(str(tmp_path / "store"))
    info = store.put_image(scratch, consume=True)
    assert [p.name for p in scratch.iterdir()] == ["manifest.json"]
    store.checkout(info.id, tmp_path / "out")
    assert same_image(images["a1"], tmp_path / "out")


@pytest.mark.parametrize("lazy", [False, True], ids=["direct", "lazy"])
def test_restore_straight_from_the_store(url, tmp_path, lazy):
    """No image directory on the way back: restore reads the chunks (lazily: on demand and
    in the background, while the process runs), and the program finds all its memory."""
    prog = start_program(tmp_path, mib=16)
    try:
        image = tmp_path / "image"
        prog.dump(image, kill=True)
        store = open_store(url)
        info = store.put_image(image)
        for p in image.iterdir():
            p.unlink()
        image.rmdir()
        restored = restore_from_store(store, info.id, lazy=lazy)
        assert restored.pid == prog.pid
        prog.verify()  # (lazily: faults bring in what it reads, the rest comes meanwhile)
        stats = restored.wait_pages(timeout=120)
        assert (stats is not None and stats.bytes_background + stats.pages_on_demand > 0) == lazy
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "scratch left"
        store.delete(info.id, timeout=10)  # the store's lock is no longer held
    finally:
        prog.kill()


@pytest.mark.parametrize("lazy", [False, True], ids=["direct", "lazy"])
def test_corrupt_chunk_refused_by_name_when_restoring_from_the_store(url, tmp_path, lazy,
                                                                     monkeypatch):
    """A chunk whose content does not match its name: a direct restore is refused before the
    process runs; a lazy one kills the process before it can read a wrong page."""
    from jupyter_ckpt import engine
    from jupyter_ckpt.engine import lazy as lazy_pages

    monkeypatch.setenv(lazy_pages.PAUSE_ENV, "600")  # lazily, only what the program reads
    prog = start_program(tmp_path, mib=16)
    try:
        image = tmp_path / "image"
        prog.dump(image, kill=True)
        store = open_store(url)
        info = store.put_image(image)
        key, _ = max(chunk_keys(store), key=lambda k: k[1])  # noise: in the lazy areas
        name = key.rsplit("/", 1)[-1]
        data = bytearray(store.backend.get(key))
        data[len(data) // 2] ^= 0xFF
        store.backend.put(key, bytes(data))
        opened = store.open_image(info.id)
        try:
            if not lazy:
                with pytest.raises(engine.ImageError, match=f"chunk {name} is corrupt"):
                    engine.restore(opened)
                assert not os.path.exists(f"/proc/{prog.pid}"), "a refused restore left a process"
                return
            restored = engine.restore(opened, lazy=True)
        finally:
            opened.close()
        os.kill(prog.pid, signal.SIGUSR1)  # it reads everything: the bad chunk's pages too
        with pytest.raises(engine.CkptError, match=f"killed pid\\(s\\) {prog.pid}.*chunk {name} is corrupt"):
            restored.wait_pages(timeout=120)
        assert os.waitpid(restored.pid, 0)[1] & 0x7F == signal.SIGKILL
        assert not any(l.startswith(("PASS", "FAIL")) for l in prog.lines()), prog.lines()
    finally:
        prog.kill()


BAD_IDS = ["", ".", "..", "../x", "a/b", "/etc/passwd", ".hidden", "a.b", "-x", "a b",
           "a\x00b", "x" * 101, "é", "a\n", None, 5, b"abc"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_ids_are_rejected(bad, images, url, tmp_path):
    store = open_store(url)
    calls = [lambda: store.get(bad), lambda: store.delete(bad), lambda: store.exists(bad),
             lambda: store.checkout(bad, tmp_path / "out"), lambda: store.verify(bad),
             lambda: store.manifest(bad)]
    if bad is not None:  # snapshot_id=None asks for a new id
        calls.append(lambda: store.put_image(images["a1"], snapshot_id=bad))
    for call in calls:
        with pytest.raises(InvalidName):
            call()
    assert store.list() == [] and store.usage().chunks == 0
    assert set(os.listdir(tmp_path)) <= {"store"}


def test_ids_labels_metadata_and_listing(images, url, tmp_path):
    store = open_store(url)
    x = store.put_image(images["a1"], {"kernel_id": "A", "execution_count": 1},
                        snapshot_id="cell-1")
    y = store.put_image(images["a2"], {"kernel_id": "A", "execution_count": 2}, label="two")
    z = store.put_image(images["b"], {"kernel_id": "B", "notebook_path": "n.ipynb"})
    assert x.id == "cell-1"
    with pytest.raises(AlreadyExists):
        store.put_image(images["b"], snapshot_id="cell-1")
    assert [i.id for i in store.list()] == [z.id, y.id, x.id]
    assert [i.id for i in store.list(kernel_id="A")] == [y.id, x.id]
    assert [i.id for i in store.list({"kernel_id": "A", "execution_count": 1})] == [x.id]
    assert [i.id for i in store.list(notebook_path="n.ipynb")] == [z.id]
    assert store.list(kernel_id="C") == []
    with pytest.raises(TypeError):
        store.put_image(images["a1"], {"not json": object()})
    with pytest.raises(AlreadyExists):
        store.checkout(x.id, tmp_path)  # an existing target
    # a second store object on the same directory or bucket sees the same snapshots
    assert open_store(url).get(y.id) == y


def test_object_keys_and_locks(url):
    backend = open_backend(url)
    for bad in ("", "../x", "a//b", "/a", "a/../b", ".tmp/x", "a/.b", "a\x00"):
        with pytest.raises(InvalidName):
            backend.put(bad, b"data")
    backend.put("a/b", b"one")
    backend.put("a/b", b"two")
    assert backend.get("a/b") == b"two" and backend.size("a/b") == 3
    with pytest.raises(AlreadyExists):
        backend.put("a/b", b"three", exclusive=True)
    assert sorted(backend.list("a/")) == [("a/b", 3)] and list(backend.list("b/")) == []
    assert backend.delete("a/b") and not backend.delete("a/b")
    with pytest.raises(NotFound):
        backend.get("a/b")
    shared = backend.lock("l", shared=True)
    also_shared = backend.lock("l", shared=True, timeout=1)
    with pytest.raises(LockTimeout):
        backend.lock("l", timeout=0.2)
    shared.release()
    also_shared.release()
    with backend.lock("l", timeout=1):
        with pytest.raises(LockTimeout):
            backend.lock("l", shared=True, timeout=0.1)


def test_store_imports_no_ptrace_or_jupyter():
    """The store is usable on its own: of the engine it uses only the image format (the
    reader and its schema), never the ptrace machinery; nothing of Jupyter."""
    image_format = ("jupyter_ckpt.engine", "jupyter_ckpt.engine.image",
                    "jupyter_ckpt.engine.schema", "jupyter_ckpt.engine.errors",
                    "jupyter_ckpt.engine.libc",  # the C library handle (writeback of blobs)
                    "jupyter_ckpt.engine.version")  # the package's version
    code = ("import sys, jupyter_ckpt.store; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('ptrace', 'jupyter_client', 'ipykernel', 'zmq', 'psutil') "
            f"or (m.startswith('jupyter_ckpt.engine') and m not in {image_format!r}) "
            "or m.startswith('jupyter_ckpt.jupyter')]; "
            "print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("precopy", [True, False], ids=["precopy", "no-precopy"])
def test_dump_streamed_into_the_store_equals_a_copied_one(url, tmp_path, precopy):
    """A dump that gives its blobs to the store as it writes them (no image written and
    read back) makes the snapshot an image directory put into a store would: the same
    manifest, the same chunk records. It restores, and the program finds all its memory."""
    from jupyter_ckpt import engine

    prog = start_program(tmp_path, mib=16)
    try:
        store = open_store(url)
        image = tmp_path / "image"
        with store.streaming() as sink:
            engine.dump(prog.pid, str(image), kill=True, sink=sink, durable=False,
                        precopy=precopy)
            assert [p.name for p in image.iterdir()] == ["manifest.json"]  # no blob written
            info = store.put_image(image, {"kernel_id": "k"}, sink=sink, consume=True)
        prog.reap()
        store.verify(info.id)
        assert info.new_bytes == info.stored_bytes > 0 and info.zero_bytes > 0
        assert info.logical_bytes == sum(b["size"] for b in store.manifest(info.id)["blobs"].values())

        store.checkout(info.id, tmp_path / "checkout")
        copied = SnapshotStore(tmp_path / "copied")
        again = copied.put_image(tmp_path / "checkout")
        streamed_doc, copied_doc = store._load_chunks(info), copied._load_chunks(again)
        assert streamed_doc["image_manifest"] == copied_doc["image_manifest"]
        assert streamed_doc["blobs"] == copied_doc["blobs"]

        restore_from_store(store, info.id)
        prog.verify()
    finally:
        prog.kill()


def test_failed_streamed_dump_leaves_no_snapshot_and_gc_removes_its_chunks(tmp_path,
                                                                          monkeypatch):
    """A dump that fails after its first pre-copy round has streamed chunks into the store
    (64 MiB of memory: more windows than the chunkers queue, so some were stored): no
    snapshot, its chunks are garbage for gc, the process runs on, the store works on."""
    from jupyter_ckpt import engine
    from jupyter_ckpt.engine import faults
    from jupyter_ckpt.engine.errors import CkptError

    prog = start_program(tmp_path, mib=32)
    try:
        store = SnapshotStore(tmp_path / "store")
        image = tmp_path / "image"
        monkeypatch.setenv(faults.ENV, "dump.during-precopy")
        with pytest.raises(CkptError, match="dump.during-precopy"):
            with store.streaming() as sink:
                engine.dump(prog.pid, str(image), sink=sink, durable=False)
        monkeypatch.delenv(faults.ENV)
        assert not image.exists() and store.list() == []
        orphans = store.usage()
        assert orphans.snapshots == 0 and orphans.chunks > 0
        assert store.gc() == orphans.chunk_bytes
        assert store.usage().chunks == 0

        mutate(prog, 1)  # it runs on, unharmed
        with store.streaming() as sink:
            engine.dump(prog.pid, str(image), kill=True, sink=sink, durable=False)
            info = store.put_image(image, sink=sink)
        prog.reap()
        store.verify(info.id)
        restore_from_store(store, info.id)
        prog.verify()
    finally:
        prog.kill()
