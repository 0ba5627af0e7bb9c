"""Run on a terminal, as a user runs `jupyter lab`: launches an unmodified ipykernel, which
inherits the terminal and keeps copies of it at other fds before it captures fds 1 and 2;
checkpoints it in-process, kills it, restores it, and checks that it works and that its
copies lead to the terminal again. Prints RESULT lines for the test reading the terminal."""
import os
import sys
import time

import jupyter_client

from jupyter_ckpt import engine

workdir = sys.argv[1]
terminal = os.ttyname(1)


def run(kc, code: str, timeout: float = 60) -> str:
    out: list[str] = []
    kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: out.append(
        m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    return "".join(out)


def alive(kc) -> bool:
    """Whether the restored kernel's output reaches us; until our IOPub subscription has
    reconnected, output (and the idle status that ends an execution) is lost."""
    try:
        return "alive" in run(kc, "print('alive')", timeout=5)
    except TimeoutError:
        return False


def copies_of_the_terminal(pid: int) -> list[int]:
    copies = []
    for fd in sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")):
        try:
            if fd > 2 and os.readlink(f"/proc/{pid}/fd/{fd}") == terminal:
                copies.append(fd)
        except FileNotFoundError:
            pass  # the running kernel closed it meanwhile
    return copies


km = jupyter_client.KernelManager(kernel_name="python3")
km.start_kernel(cwd=workdir)
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=60)
run(kc, "x = 42")
pid = km.provisioner.process.pid
copies = copies_of_the_terminal(pid)
print(f"RESULT copies {copies}", flush=True)
blockers = engine.check(pid, tcp_close=True)
print(f"RESULT blockers {len(blockers)} {blockers}", flush=True)
engine.dump(pid, os.path.join(workdir, "image"), kill=True, tcp_close=True)
km.provisioner.process.wait(timeout=30)
engine.restore(os.path.join(workdir, "image"))
deadline = time.monotonic() + 60
while not alive(kc) and time.monotonic() < deadline:
    time.sleep(0.2)
print(f"RESULT x {run(kc, 'print(x)').strip()}", flush=True)
print(f"RESULT copies after {copies_of_the_terminal(pid)}", flush=True)
kc.stop_channels()
os.kill(pid, 9)
os.waitpid(pid, 0)
km.cleanup_resources()
print("RESULT done", flush=True)
