"""The Jupyter layer: kernel provisioner, server extension (REST API), magics, notebook links.

It drives the engine only through jupyter_ckpt.engine's public functions, never ptrace.
"""
from __future__ import annotations

from typing import Any

_PURGE_EVERY_S = 60.0  # how often the trash is looked at (see CheckpointConfig.trash_seconds)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_ckpt.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_client.provisioning import KernelProvisionerFactory
    from tornado.ioloop import PeriodicCallback

    from . import autosnap
    from .catalog import SnapshotCatalog
    from .config import CheckpointConfig
    from .handlers import handlers
    from .service import CheckpointService
    from .worker import EngineWorker

    config = CheckpointConfig(parent=serverapp)
    catalog = SnapshotCatalog(config.snapshot_dir, config.store_url)
    service = CheckpointService(serverapp.kernel_manager, serverapp.session_manager, catalog,
                                EngineWorker(), lazy_restore=config.lazy_restore,
                                trash_seconds=config.trash_seconds)
    serverapp.web_app.settings["jupyter_ckpt_service"] = service
    serverapp.web_app.settings["jupyter_ckpt_auto"] = autosnap.AutoSnapshots(
        service, config.auto_snapshot, config.auto_keep, config.auto_quota)
    if not autosnap.install(serverapp.web_app.settings):
        serverapp.log.warning("jupyter-ckpt: no automatic snapshots: the server's kernel "
                              "websockets are not its own ZMQ ones (kernels on a gateway?)")
    purge = PeriodicCallback(service.purge_trash,
                             1000 * max(1.0, min(_PURGE_EVERY_S, config.trash_seconds)))
    purge.start()
    serverapp.web_app.settings["jupyter_ckpt_purge"] = purge
    serverapp.web_app.add_handlers(".*$", handlers(serverapp.web_app.settings["base_url"]))
    # A kernelspec naming another provisioner keeps it; the factory is a singleton that may
    # predate our config.
    if config.every_kernel:
        KernelProvisionerFactory.instance().default_provisioner_name = "ckpt-provisioner"
        serverapp.log.info("jupyter-ckpt: every kernel is checkpointable "
                           "(CheckpointConfig.every_kernel)")
    else:
        serverapp.log.info("jupyter-ckpt: only kernelspecs selecting ckpt-provisioner are "
                           "checkpointable (CheckpointConfig.every_kernel is off)")
    serverapp.log.info("jupyter-ckpt: kernel snapshots in %s", config.store_url or catalog.root)


def _unload_jupyter_server_extension(serverapp: Any) -> None:
    """Stop the engine's worker thread when the server shuts down."""
    purge = serverapp.web_app.settings.get("jupyter_ckpt_purge")
    if purge is not None:
        purge.stop()
    service = serverapp.web_app.settings.get("jupyter_ckpt_service")
    if service is not None:
        service.worker.shutdown()
