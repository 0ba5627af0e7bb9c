"""Where a user's kernel snapshots live, with what a notebook needs to know about them.

A snapshot is an engine image plus a metadata record (id, label, kernel, notebook path,
times, sizes, execution count, and the kernel's connection info, kept private because it
holds the kernel's signing key). The catalog lives under the Jupyter data directory.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

from jupyter_core.paths import jupyter_data_dir

_ID = re.compile(r"^[0-9a-f]{32}$")
PUBLIC_FIELDS = ("id", "label", "kernel_id", "kernel_name", "notebook_path", "created",
                 "size_bytes", "execution_count", "freeze_ms", "bytes_logical", "host")


class UnknownSnapshot(KeyError):
    pass


def default_root() -> str:
    return os.environ.get("JUPYTER_CKPT_DIR") or os.path.join(jupyter_data_dir(), "ckpt")


@dataclass
class SnapshotCatalog:
    root: str

    def __post_init__(self) -> None:
        os.makedirs(self._dir("snapshots"), mode=0o700, exist_ok=True)

    def _dir(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @staticmethod
    def valid_id(snapshot_id: str) -> bool:
        return bool(_ID.match(snapshot_id or ""))

    def new_image_path(self, snapshot_id: str | None = None) -> tuple[str, str]:
        """(id, path) for the engine to dump a new snapshot's image into."""
        snapshot_id = snapshot_id or uuid.uuid4().hex
        os.makedirs(self._dir("snapshots", snapshot_id), mode=0o700)
        return snapshot_id, self._dir("snapshots", snapshot_id, "image")

    def save(self, meta: dict[str, Any]) -> None:
        path = self._dir("snapshots", meta["id"], "meta.json")
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(tmp, path)

    def discard(self, snapshot_id: str) -> None:
        if self.valid_id(snapshot_id):
            shutil.rmtree(self._dir("snapshots", snapshot_id), ignore_errors=True)

    def get(self, snapshot_id: str) -> dict[str, Any]:
        if not self.valid_id(snapshot_id):
            raise UnknownSnapshot(snapshot_id)
        try:
            with open(self._dir("snapshots", snapshot_id, "meta.json")) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            raise UnknownSnapshot(snapshot_id) from None

    def image_path(self, snapshot_id: str) -> str:
        self.get(snapshot_id)
        return self._dir("snapshots", snapshot_id, "image")

    def list(self, notebook_path: str | None = None) -> list[dict[str, Any]]:
        models = []
        for name in os.listdir(self._dir("snapshots")):
            try:
                meta = self.get(name)
            except UnknownSnapshot:
                continue
            if notebook_path is None or meta.get("notebook_path") == notebook_path:
                models.append(meta)
        return sorted(models, key=lambda m: m["created"], reverse=True)

    def delete(self, snapshot_id: str) -> None:
        self.get(snapshot_id)
        shutil.rmtree(self._dir("snapshots", snapshot_id))


def public(meta: dict[str, Any]) -> dict[str, Any]:
    """The snapshot model the REST API shows (no connection secrets)."""
    return {key: meta.get(key) for key in PUBLIC_FIELDS}
