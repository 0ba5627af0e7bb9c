"""The server extension's settings, as Jupyter configuration (traitlets).

    c.CheckpointConfig.store_url = "s3://team-bucket/snapshots"   # shared by every host
    c.CheckpointConfig.snapshot_dir = "/var/lib/jupyter-ckpt"       # this host's scratch
    c.CheckpointConfig.every_kernel = False   # only kernelspecs that ask for ckpt-provisioner

or on the command line: `jupyter server --CheckpointConfig.store_url=s3://...`. The
environment (JUPYTER_CKPT_STORE, JUPYTER_CKPT_DIR) gives the defaults, so the CLI and the
server agree on one store without a config file. `jupyter-ckpt config` lists every setting
(`describe`): `jupyter server --help-all` cannot, as it prints the server's own classes
before any extension is found.
"""
from __future__ import annotations

import os

from traitlets import Bool, Float, Integer, Unicode, default
from traitlets.config import Configurable

from ..snapshots_api import TRASH_SECONDS
from .catalog import default_root


class CheckpointConfig(Configurable):
    """Where kernel snapshots are kept."""

    store_url = Unicode(
        help="The snapshot store: a directory or s3://BUCKET/PREFIX on an S3-compatible "
             "service (endpoint and credentials the standard AWS way: AWS_ENDPOINT_URL, "
             "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE). Several servers on "
             "several hosts may share one. Empty: <snapshot_dir>/store. Default: "
             "$JUPYTER_CKPT_STORE.").tag(config=True)

    snapshot_dir = Unicode(
        help="This server's own directory: scratch space for images on their way in and out "
             "of the store, and the store itself unless store_url names another. Default: "
             "$JUPYTER_CKPT_DIR, else ckpt/ in the Jupyter data directory.").tag(config=True)

    every_kernel = Bool(
        True,
        help="Make every kernel this server starts checkpointable: ckpt-provisioner becomes "
             "the default for kernelspecs that name no provisioner of their own. False: only "
             "kernelspecs whose kernel.json selects it (metadata.kernel_provisioner."
             "provisioner_name = \"ckpt-provisioner\"; `jupyter-ckpt kernelspec install` "
             "writes one) are checkpointable; other kernels run as without this extension."
    ).tag(config=True)

    lazy_restore = Bool(
        True, help="Restore kernels lazily: the kernel runs (and answers its first cell) while "
                   "its memory streams in from the store, on demand and in the background. Only "
                   "where the server may (CAP_SYS_PTRACE); elsewhere, and when off, a restore "
                   "reads all memory first, still straight from the store.").tag(config=True)

    trash_seconds = Float(
        TRASH_SECONDS, min=0,
        help="How long a deleted snapshot stays in the trash, where POST "
             "/api/ckpt/snapshots/ID/undelete (the Lab panel's Undo) or `jupyter-ckpt "
             "snapshots undelete` takes it back, before it is deleted for good (checked "
             "every minute, or every trash_seconds when shorter).").tag(config=True)

    auto_snapshot = Bool(
        False,
        help="Snapshot a kernel automatically before each cell it runs (an execute_request "
             "that is not silent and stores history), so that the Lab command \"Undo last "
             "cell\" can take the kernel back. Only kernels run by ckpt-provisioner. Each user "
             "may turn it on or off in the Lab's settings (PUT /api/ckpt/auto).").tag(config=True)

    auto_keep = Integer(
        20, min=1,
        help="How many automatic snapshots to keep per notebook (per kernel when it serves "
             "none); older ones are deleted. Manual snapshots are never deleted.").tag(config=True)

    auto_quota = Integer(
        2 * 1024**3, min=0,
        help="The bytes the automatic snapshots of one notebook (or kernel) may add to the "
             "store; beyond it the oldest are deleted (the newest is always kept). 0: no "
             "limit but auto_keep.").tag(config=True)

    @default("store_url")
    def _default_store_url(self) -> str:
        return os.environ.get("JUPYTER_CKPT_STORE", "")

    @default("snapshot_dir")
    def _default_snapshot_dir(self) -> str:
        return default_root()


def describe() -> str:
    """Every setting with its help and the value a Jupyter server started here would use:
    its config files (jupyter_server_config.*) and the environment, not its command line."""
    from jupyter_server.serverapp import ServerApp

    server = ServerApp()
    server.load_config_file()
    return CheckpointConfig.class_get_help(CheckpointConfig(config=server.config))
