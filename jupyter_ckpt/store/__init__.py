"""Where snapshots live: engine images kept deduplicated in a content-addressed chunk store.

    store = SnapshotStore("~/.local/share/jupyter-ckpt/store")   # or SnapshotStore(backend)
    info = store.put_image(image_dir, {"kernel_id": kid, "notebook_path": nb})
    with store.streaming() as sink:      # or straight from the dump, no image written:
        engine.dump(pid, image_dir, sink=sink)
        info = store.put_image(image_dir, meta, sink=sink)
    store.list(kernel_id=kid)            -> [SnapshotInfo, ...] newest first
    store.get(id) / store.manifest(id)   -> SnapshotInfo / the engine image manifest
    store.checkout(id, new_dir)          -> an engine image directory for restore
    store.open_image(id)                 -> the snapshot for engine.restore, read straight
                                            from its chunks (lazily too; reading.py)
    store.verify(id)                     -> reads and checks every chunk
    store.delete(id)                     -> bytes freed (chunks no other snapshot uses)
    store.gc()                           -> bytes freed (leftovers of interrupted work)
    store.usage()                        -> Usage

Usable on its own: imports neither the engine's ptrace code nor anything of Jupyter; images
are read with the engine's image reader and schema (engine/image.py, engine/schema.py), the
one place the image format is validated.
Backends: `LocalBackend` (a directory), `S3Backend` (an S3-compatible bucket, s3.py), or
anything implementing `Backend`. `open_store(url)` opens either from a store URL (a path or
s3://BUCKET/PREFIX; url.py). See snapshots.py for the layout and the locking, chunking.py
for chunks.
"""
from .backend import Backend, LocalBackend, Lock
from .chunking import ChunkParams
from .errors import (AlreadyExists, BadImage, CorruptData, InvalidName, LockTimeout, NotFound,
                     StoreError)
from .s3 import S3Backend, S3Error
from .snapshots import SnapshotInfo, SnapshotStore, Usage, check_id
from .url import default_store_url, open_backend, open_store

__all__ = ["SnapshotStore", "SnapshotInfo", "Usage", "ChunkParams", "Backend", "LocalBackend",
           "Lock", "check_id", "S3Backend", "S3Error", "open_store", "open_backend",
           "default_store_url", "StoreError", "InvalidName", "NotFound", "AlreadyExists",
           "CorruptData", "BadImage", "LockTimeout"]
