"""Put a snapshot "made elsewhere" into the Lab's snapshot store, for browser tests: on
another host (host-verdict.test.mjs), as another host sharing the store makes one when run
in a UTS namespace with another host name, or at another time (undo-delete.test.mjs: the
CREATED time recorded). It snapshots a real Python process that has mapped a copy of libm,
recorded as a kernel snapshot of the given notebook.

usage: made_elsewhere.py CKPT_DIR NOTEBOOK_PATH LIBRARY_COPY LABEL [CREATED]  (prints the id)
"""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

from jupyter_ckpt import engine
from jupyter_ckpt.jupyter.catalog import SnapshotCatalog

PROGRAM = """
import ctypes, shutil, sys, time
libm = next(line.split()[-1] for line in open('/proc/self/maps') if '/libm.so' in line)
shutil.copy(libm, sys.argv[1])
lib = ctypes.CDLL(sys.argv[1])
print('ready', flush=True)
while True:
    time.sleep(1)
"""


def main(ckpt_dir: str, notebook_path: str, library_copy: str, label: str,
         created: str = "") -> None:
    child = subprocess.Popen([sys.executable, "-c", PROGRAM, library_copy],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        catalog = SnapshotCatalog(ckpt_dir)
        snapshot_id = SnapshotCatalog.new_id()

        def dump(image: str, sink) -> dict:  # (sink: the store's stream for the blobs)
            stats = engine.dump(child.pid, image, durable=False, sink=sink)
            return {"created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "freeze_ms": stats.get("freeze_ms"),
                    "bytes_logical": stats.get("bytes_logical"),
                    "host": engine.summarize(image)["host"]}

        meta = {"label": label, "kernel_id": str(uuid.uuid4()), "kernel_name": "python3",
                "notebook_path": notebook_path, "execution_count": None, "running_cell": None,
                "parent": None, "server_pid": 0,
                "connection": {"ip": "127.0.0.1", "transport": "tcp", "key": uuid.uuid4().hex,
                               "signature_scheme": "hmac-sha256", "shell_port": 0,
                               "iopub_port": 0, "stdin_port": 0, "hb_port": 0,
                               "control_port": 0}}
        catalog.add(snapshot_id, meta, dump)
        print(snapshot_id)
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
