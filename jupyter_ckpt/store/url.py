"""Store URLs: a directory path (or file://PATH) or s3://BUCKET/PREFIX, and the default one.

The default is the store the Jupyter server extension uses, found without importing
Jupyter's server: $JUPYTER_CKPT_STORE, else <$JUPYTER_CKPT_DIR or JUPYTER_DATA_DIR/ckpt>/store.
"""
from __future__ import annotations

import os
import re
from typing import Any

from .backend import Backend, LocalBackend
from .errors import InvalidName
from .snapshots import SnapshotStore

ENV_STORE = "JUPYTER_CKPT_STORE"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def default_store_url() -> str:
    url = os.environ.get(ENV_STORE)
    if url:
        return url
    root = os.environ.get("JUPYTER_CKPT_DIR")
    if not root:
        from jupyter_core.paths import jupyter_data_dir  # small: no server, no zmq

        root = os.path.join(jupyter_data_dir(), "ckpt")
    return os.path.join(root, "store")


def open_backend(url: str, **s3_options: Any) -> Backend:
    """The backend a store URL names. `s3_options` go to S3Backend (lease_ttl, ...)."""
    if not isinstance(url, str) or not url:
        raise InvalidName(f"invalid store URL {url!r}")
    if url.startswith("s3://"):
        from .s3 import S3Backend, parse_s3_url

        bucket, prefix = parse_s3_url(url)
        return S3Backend(bucket, prefix, **s3_options)
    if url.startswith("file://"):
        url = url[len("file://"):]
    elif _SCHEME.match(url):
        raise InvalidName(f"unsupported store URL {url!r} (a directory or s3://BUCKET/PREFIX)")
    return LocalBackend(url)


def open_store(url: str | None = None, *, workers: int | None = None,
               **options: Any) -> SnapshotStore:
    """The SnapshotStore at `url` (None: the default store). `options`: compression and
    level for SnapshotStore; lease_ttl and multipart sizes for an S3 store."""
    url = url or default_store_url()
    store_opts = {k: options.pop(k) for k in ("compression", "level", "chunking")
                  if k in options}
    if url.startswith("s3://"):
        workers = workers or 16  # network-bound: more requests in flight than CPUs
        options.setdefault("workers", workers)  # sizes the client's connection pool
    return SnapshotStore(open_backend(url, **options), workers=workers, **store_opts)
