"""jupyter-ckpt: process-level snapshots of Jupyter kernels."""
from __future__ import annotations

from typing import Any

from .engine.version import VERSION as __version__  # noqa: F401 (the package's version)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_ckpt.jupyter"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """For `jupyter labextension develop`: the prebuilt front end inside the package."""
    return [{"src": "labextension", "dest": "jupyter-ckpt"}]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext jupyter_ckpt`: the %checkpoint, %checkpoints and %restore magics, and a
    history session of its own for a kernel restored from a snapshot."""
    from .jupyter.magics import CheckpointMagics

    magics = CheckpointMagics(ipython)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.own_history.claim)
