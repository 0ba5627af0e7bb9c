"""After a reboot: the server and its kernel are gone, and so are the kernel's files in
/dev/shm (a tmpfs) and the server's runtime files. A new server restores the snapshot into
the notebook, and a scikit-learn `n_jobs=2` fit and a multiprocessing pool work again."""
from __future__ import annotations

import os
import shutil

import psutil

from jupyter_server_harness import KernelSocket, Server
from test_jupyter_server import checkpoint, restore

NOTEBOOK = """
import numpy as np
from multiprocessing import Pool
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_score
X, y = make_classification(n_samples=300, n_features=8, random_state=0)
before = cross_val_score(RandomForestClassifier(n_estimators=10, random_state=0), X, y, cv=3, n_jobs=2)
pool = Pool(2)
squares = pool.map(abs, [-1, -2, -3])
print("ready", squares)
"""

AFTER = """
after = cross_val_score(RandomForestClassifier(n_estimators=10, random_state=0), X, y, cv=3, n_jobs=2)
print((after == before).all(), pool.map(abs, [-4, -5]))
"""


def _dev_shm_files(pid: int) -> set[str]:
    """The files in /dev/shm that a process tree maps or holds open."""
    found = set()
    for proc in [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True):
        try:
            found.update(m.path for m in proc.memory_maps(grouped=False))
            found.update(f.path for f in proc.open_files())
        except psutil.Error:
            continue
    return {p for p in found if p.startswith("/dev/shm/")}


def test_restore_after_a_simulated_reboot(tmp_path):
    present = set(os.listdir("/dev/shm"))
    first = Server(tmp_path, tmp_path / "ckpt").start()
    try:
        kernel_id = first.start_notebook_kernel()
        ks = KernelSocket(first, kernel_id)
        status, out, _ = ks.execute(NOTEBOOK, timeout=300)
        assert status == "ok" and "ready [1, 2, 3]" in out, out
        pid = int(ks.execute("import os; print(os.getpid())")[1])
        shm = _dev_shm_files(pid)
        assert any(os.path.basename(p).startswith("sem.") for p in shm), shm
        model = checkpoint(first, kernel_id)
        ks.close()
    finally:
        first.stop()
    # the reboot: everything on tmpfs and the runtime files are gone
    for path in shm:
        if os.path.exists(path):
            os.unlink(path)
    shutil.rmtree(first.runtime_dir, ignore_errors=True)

    second = Server(tmp_path, tmp_path / "ckpt").start()
    try:
        restore(second, model["id"])
        ks = KernelSocket(second, kernel_id)
        ks.wait_for_output()
        status, out, _ = ks.execute(AFTER, timeout=300)
        assert status == "ok" and out.split() == ["True", "[4,", "5]"], out
        ks.close()
    finally:
        second.stop()
        # what the restored kernel's pools made and had no time to remove
        for name in set(os.listdir("/dev/shm")) - present:
            path = os.path.join("/dev/shm", name)
            if os.path.isfile(path):
                os.unlink(path)
