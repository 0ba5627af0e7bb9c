"""The `jupyter_ckpt` entry of a notebook's metadata: the snapshots it can return to.

    metadata.jupyter_ckpt = {"snapshots": [{"id", "label", "created", "execution_count"}, ...]}

Optional and additive: notebooks without it load and save as usual, and the entry survives
nbformat's own save/load round trips.
"""
from __future__ import annotations

from typing import Any

import nbformat

KEY = "jupyter_ckpt"
_FIELDS = ("id", "label", "created", "execution_count")


def snapshots(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return list(nb.metadata.get(KEY, {}).get("snapshots", []))


def record(nb: nbformat.NotebookNode, snapshot: dict[str, Any]) -> None:
    entry = nb.metadata.setdefault(KEY, {}).setdefault("snapshots", [])
    entry[:] = [s for s in entry if s.get("id") != snapshot["id"]]
    entry.append({k: snapshot.get(k) for k in _FIELDS})


def forget(nb: nbformat.NotebookNode, snapshot_id: str) -> None:
    entry = nb.metadata.get(KEY, {}).get("snapshots")
    if entry is not None:
        entry[:] = [s for s in entry if s.get("id") != snapshot_id]
