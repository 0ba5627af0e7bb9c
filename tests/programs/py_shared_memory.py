"""multiprocessing.shared_memory between a parent and a child attached by name (one /dev/shm
file, which the parent holds open and both map), plus the modes and owners of nameless files:
a memfd of mode 0642, and files unlinked while open, on disk and on a tmpfs, of another owner
(run as root). After restore parent and child still share the memory, a new process opening
it by name shares it too, and the modes and owners are the recorded ones."""
import os
import subprocess
import sys
import time
from multiprocessing import get_context, shared_memory

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ckpt_test  # noqa: E402

t = ckpt_test.Protocol()
fork = get_context("fork")
OWNER = (1234, 5678)


def serve(name: str, conn) -> None:
    """The child: attaches by name, then reads and writes the memory when asked."""
    shm = shared_memory.SharedMemory(name)
    while True:
        command, data = conn.recv()
        if command == "read":
            conn.send(bytes(shm.buf[:8]))
        elif command == "write":
            shm.buf[8:16] = data
            conn.send("done")
        else:
            return


def ask(conn, command: str, data: bytes = b"") -> object:
    conn.send((command, data))
    return conn.recv()


def unlinked(path: str, mode: int, content: bytes) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, content)
    os.fchmod(fd, mode)
    os.fchown(fd, *OWNER)
    os.unlink(path)
    return fd


def check_file(fd: int, what: str, mode: int, owner: tuple[int, int], content: bytes) -> None:
    st = os.fstat(fd)
    t.check(st.st_mode & 0o7777 == mode, f"{what}: mode {st.st_mode & 0o7777:o}, not {mode:o}")
    t.check((st.st_uid, st.st_gid) == owner, f"{what}: owner {st.st_uid}:{st.st_gid}, not {owner}")
    t.check(os.pread(fd, 100, 0) == content, f"{what}: content {os.pread(fd, 100, 0)!r}")
    t.check(os.fstat(fd).st_nlink == 0, f"{what}: linked somewhere")


shm = shared_memory.SharedMemory(create=True, size=1 << 16)
shm.buf[:8] = b"parent01"
parent_end, child_end = fork.Pipe()
child = fork.Process(target=serve, args=(shm.name, child_end))
child.start()
t.check(ask(parent_end, "read") == b"parent01", "the child does not see the parent's write")
ask(parent_end, "write", b"child001")
t.check(bytes(shm.buf[8:16]) == b"child001", "the parent does not see the child's write")

memfd = os.memfd_create("ckpt-mode")
os.write(memfd, b"memfd content")
os.fchmod(memfd, 0o642)
on_disk = unlinked("owned-file", 0o640, b"on disk")
on_tmpfs = unlinked(f"/dev/shm/ckpt-owned-{os.getpid()}", 0o604, b"on tmpfs")
t.ready()
while not t.verify_requested:
    time.sleep(0.01)

check_file(memfd, "memfd", 0o642, (os.getuid(), os.getgid()), b"memfd content")
check_file(on_disk, "unlinked file", 0o640, OWNER, b"on disk")
check_file(on_tmpfs, "unlinked tmpfs file", 0o604, OWNER, b"on tmpfs")
t.check(ask(parent_end, "read") == b"parent01", "the child lost the memory's content")
shm.buf[:8] = b"parent02"
t.check(ask(parent_end, "read") == b"parent02", "the child does not share the memory any more")
ask(parent_end, "write", b"child002")
t.check(bytes(shm.buf[8:16]) == b"child002", "the parent does not share the memory any more")
path = f"/dev/shm/{shm.name.lstrip('/')}"
t.check(os.path.exists(path), f"{path} is missing after restore")
newcomer = ("import mmap, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "m = mmap.mmap(fd, 0)\n"
            "sys.stdout.write(m[:16].decode())\n"
            "m[16:24] = b'newproc1'\n")
seen = subprocess.run([sys.executable, "-c", newcomer, path], capture_output=True, text=True)
t.check(seen.stdout == "parent02child002", f"a process opening it by name sees {seen!r}")
t.check(bytes(shm.buf[16:24]) == b"newproc1", "a process opening it by name does not share it")
parent_end.send(("stop", b""))
child.join()
shm.close()
shm.unlink()
t.passed()
