// What the commands and the snapshots panel do: checkpoint a notebook's kernel, restore a
// snapshot into a notebook, delete a snapshot. Progress and outcome are reported with
// JupyterLab notifications; confirmation with dialogs. The notebook records its snapshots in
// its metadata (`metadata.jupyter_ckpt`, see metadata.ts): a checkpoint adds its entry, a
// delete removes it; the change marks the notebook dirty and the next save keeps it.

import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';

import { CkptClient, IOperation, ISnapshot } from './api';
import { formatBytes, formatDuration, formatTime } from './format';
import { fetchVerdict } from './hostVerdict';
import { notifyDeleted } from './undoDelete';
import {
  ISnapshotEntry,
  METADATA_KEY,
  forgetSnapshot,
  recordSnapshot,
  rememberedSnapshots
} from './metadata';
import {
  IRestoreChoice,
  askRestore,
  checkpointExtras,
  replaceCells,
  routeResumedOutput,
  runningMark
} from './notebookRestore';
import { OperationWatcher, showCheckpointProgress, wasCancelled } from './progress';
import { showRefusal } from './advice';

export class CkptActions {
  constructor(options: CkptActions.IOptions) {
    this.client = options.client;
    this._showSnapshots = options.showSnapshots;
  }

  readonly client: CkptClient;

  /** Emitted after a snapshot was created, restored or deleted. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The message of the last failed restore (for the panel to show beside it). */
  get lastError(): string {
    return this._lastError;
  }

  /** Whether a snapshot of this kernel is being taken. */
  isCheckpointing(kernelId: string): boolean {
    return this._checkpointing.has(kernelId);
  }

  /**
   * Snapshot the notebook's kernel. Resolves with the snapshot, or null on failure. A second
   * request for a kernel whose snapshot is still being taken (a double click) is ignored.
   */
  async checkpoint(panel: NotebookPanel, label = ''): Promise<ISnapshot | null> {
    const kernel = panel.sessionContext.session?.kernel;
    const name = PathExt.basename(panel.context.path);
    if (!kernel) {
      Notification.warning(`${name} has no running kernel to snapshot.`, {
        autoClose: 5000
      });
      return null;
    }
    const kernelId = kernel.id;
    if (this._checkpointing.has(kernelId)) {
      return null;
    }
    this._checkpointing.add(kernelId);
    this._changed.emit(); // the panel disables its button meanwhile
    try {
      return await this._checkpoint(panel, kernelId, name, label);
    } finally {
      this._checkpointing.delete(kernelId);
      this._changed.emit();
    }
  }

  private async _checkpoint(
    panel: NotebookPanel,
    kernelId: string,
    name: string,
    label: string
  ): Promise<ISnapshot | null> {
    const id = Notification.emit(`Taking a snapshot of the kernel of ${name}…`, 'in-progress', {
      autoClose: false
    });
    const watcher = new OperationWatcher(
      this.client,
      op => op.kind === 'checkpoint' && op.kernel_id === kernelId,
      op => showCheckpointProgress(this.client, id, op)
    );
    const started = Date.now();
    try {
      const snapshot = await this.client.checkpoint(kernelId, label, checkpointExtras(panel));
      watcher.stop();
      CkptActions.remember(panel, snapshot);
      const paused =
        snapshot.freeze_ms === null || snapshot.freeze_ms === undefined
          ? ''
          : `, kernel paused ${formatDuration(snapshot.freeze_ms)}`;
      Notification.update({
        id,
        type: 'success',
        message:
          `Snapshot ${Private.quoted(snapshot)}saved: ${formatBytes(snapshot.size_bytes)} of ` +
          `kernel state in ${formatDuration(Date.now() - started)}${paused}`,
        autoClose: 6000,
        progress: undefined,
        actions: this._showSnapshots
          ? [
              {
                label: 'Show snapshots',
                caption: 'Open the kernel snapshots panel',
                callback: () => this._showSnapshots?.()
              }
            ]
          : []
      });
      this._changed.emit();
      return snapshot;
    } catch (error) {
      watcher.stop();
      if (wasCancelled(error)) {
        Notification.update({
          id,
          type: 'info',
          message: `Snapshot cancelled: the kernel of ${name} runs on unchanged.`,
          autoClose: 5000,
          progress: undefined,
          actions: []
        });
        return null;
      }
      if (showRefusal(id, name, error)) {
        return null;
      }
      Notification.update({
        id,
        type: 'error',
        message: `Snapshot of the kernel of ${name} failed: ${Private.message(error)}`,
        autoClose: false,
        progress: undefined
      });
      return null;
    }
  }

  /**
   * Restore a snapshot into the notebook: the server starts the restored kernel, then the
   * notebook's session is switched to it (the server shuts the previous kernel down).
   * Asks for confirmation unless `confirm` is false. Resolves with the new kernel id.
   */
  async restore(
    panel: NotebookPanel,
    snapshot: ISnapshot,
    confirm = true
  ): Promise<string | null> {
    const name = PathExt.basename(panel.context.path);
    const label = Private.short(snapshot.label || `snapshot of ${formatTime(snapshot.created)}`);
    this._lastError = '';
    let choice: IRestoreChoice = { withNotebook: false, interrupt: false };
    if (confirm) {
      const busy = panel.sessionContext.session?.kernel?.status === 'busy';
      const answer = await askRestore(
        snapshot,
        `Restore "${label}" (${formatTime(snapshot.created)}, ` +
          `${formatBytes(snapshot.size_bytes)}) into ${name}? ` +
          'The notebook switches to the restored kernel; its current kernel is shut down.' +
          (busy
            ? ' A cell is still running in the current kernel: it is stopped, and its ' +
              'further output is lost.'
            : ''),
        await fetchVerdict(this.client, snapshot)
      );
      if (answer === null) {
        return null;
      }
      choice = answer;
    }
    let cells: Record<string, unknown> | null = null;
    if (choice.withNotebook) {
      try {
        cells = await this.client.getSnapshotNotebook(snapshot.id);
      } catch (error) {
        Notification.error(
          `The notebook of "${label}" cannot be read, nothing was restored: ` +
            Private.message(error),
          { autoClose: false }
        );
        return null;
      }
    }
    const id = Notification.emit(`Restoring "${label}" into ${name}…`, 'in-progress', {
      autoClose: false
    });
    const watcher = new OperationWatcher(
      this.client,
      op => op.kind === 'restore' && op.snapshot_id === snapshot.id,
      op => Private.showProgress(id, 'Restoring', op)
    );
    const started = Date.now();
    let kernelId: string;
    try {
      kernelId = (await this.client.restore(snapshot.id)).kernel_id;
    } catch (error) {
      watcher.stop();
      this._lastError = Private.message(error);
      Notification.update({
        id,
        type: 'error',
        message: `Restoring "${label}" failed: ${this._lastError}`,
        autoClose: false,
        progress: undefined
      });
      return null;
    }
    watcher.stop();
    if (cells) {
      replaceCells(panel, cells);
    }
    if (snapshot.running_cell) {
      routeResumedOutput(panel, snapshot.running_cell);
    }
    try {
      const session = panel.sessionContext.session;
      if (session?.kernel?.id === kernelId) {
        // restored under the id the notebook already uses: just reconnect
        await session.kernel.reconnect();
      } else {
        await panel.sessionContext.changeKernel({ id: kernelId });
      }
      if (choice.interrupt && snapshot.running_cell) {
        await panel.sessionContext.session?.kernel?.interrupt();
      }
    } catch (error) {
      Notification.update({
        id,
        type: 'error',
        message:
          `Restored as kernel ${kernelId}, but switching ${name} to it failed: ` +
          Private.message(error),
        autoClose: false,
        progress: undefined
      });
      this._changed.emit();
      return kernelId;
    }
    const count =
      snapshot.execution_count === null || snapshot.execution_count === undefined
        ? ''
        : ` at execution count ${snapshot.execution_count}`;
    const resumed =
      snapshot.running_cell && !choice.interrupt
        ? ` (${runningMark(snapshot).replace('taken during', 'resuming')})`
        : '';
    const withCells = cells ? ' with cells and outputs' : '';
    Notification.update({
      id,
      type: 'success',
      message:
        `Restored "${label}"${resumed}${count}${withCells} into ${name} in ` +
        `${formatDuration(Date.now() - started)}`,
      autoClose: 5000,
      progress: undefined
    });
    this._changed.emit();
    return kernelId;
  }

  /**
   * Delete a snapshot, after confirmation unless `confirm` is false, and remove it from the
   * metadata of `panel`'s notebook when given. The notification offers Undo (undoDelete.ts).
   */
  async delete(
    snapshot: ISnapshot,
    confirm = true,
    panel: NotebookPanel | null = null
  ): Promise<boolean> {
    const label = Private.short(snapshot.label || `snapshot of ${formatTime(snapshot.created)}`);
    if (confirm) {
      const answer = await showDialog({
        title: 'Delete kernel snapshot',
        body:
          `Delete "${label}" (${formatTime(snapshot.created)}, ` +
          `${formatBytes(snapshot.size_bytes)})? Its image is removed from disk` +
          (panel ? ` and ${PathExt.basename(panel.context.path)} forgets it.` : '.'),
        buttons: [
          Dialog.cancelButton(),
          Dialog.warnButton({ label: 'Delete', ariaLabel: 'Delete snapshot' })
        ]
      });
      if (!answer.button.accept) {
        return false;
      }
    }
    try {
      await this.client.deleteSnapshot(snapshot.id);
    } catch (error) {
      Notification.error(`Could not delete "${label}": ${Private.message(error)}`, {
        autoClose: false
      });
      return false;
    }
    if (panel) {
      CkptActions.removeRemembered(panel, snapshot.id);
    }
    notifyDeleted(this.client, snapshot, label, back => {
      if (panel && !panel.isDisposed) {
        CkptActions.remember(panel, back);
      }
      this._changed.emit();
    });
    this._changed.emit();
    return true;
  }

  /**
   * Give a snapshot another label ('' for none); the notebook's record of it follows.
   * False when the server refused (a notification says why).
   */
  async relabel(
    snapshot: ISnapshot,
    label: string,
    panel: NotebookPanel | null = null
  ): Promise<boolean> {
    try {
      const changed = await this.client.relabelSnapshot(snapshot.id, label);
      if (panel && CkptActions.remembered(panel).some(entry => entry.id === snapshot.id)) {
        CkptActions.remember(panel, changed);
      }
    } catch (error) {
      const name = Private.short(snapshot.label || `snapshot of ${formatTime(snapshot.created)}`);
      Notification.error(`Could not rename "${name}": ${Private.message(error)}`, {
        autoClose: false
      });
      return false;
    }
    this._changed.emit();
    return true;
  }

  /**
   * Remove a snapshot that the server does not have from the notebook's metadata, after
   * confirmation unless `confirm` is false.
   */
  async forget(
    panel: NotebookPanel,
    entry: ISnapshotEntry,
    confirm = true
  ): Promise<boolean> {
    const name = PathExt.basename(panel.context.path);
    if (confirm) {
      const when = entry.created ? ` (${formatTime(entry.created)})` : '';
      const answer = await showDialog({
        title: 'Forget kernel snapshot',
        body:
          `Remove "${Private.short(entry.label || entry.id)}"${when} from the snapshots that ` +
          `${name} records? This server does not have it.`,
        buttons: [
          Dialog.cancelButton(),
          Dialog.warnButton({ label: 'Forget', ariaLabel: 'Forget snapshot' })
        ]
      });
      if (!answer.button.accept) {
        return false;
      }
    }
    const forgotten = CkptActions.removeRemembered(panel, entry.id);
    this._changed.emit();
    return forgotten;
  }

  private readonly _showSnapshots: (() => void) | undefined;
  private readonly _changed = new Signal<this, void>(this);
  private readonly _checkpointing = new Set<string>();
  private _lastError = '';
}

export namespace CkptActions {
  /** The snapshots the notebook records in its metadata (none for a closed notebook). */
  export function remembered(panel: NotebookPanel): ISnapshotEntry[] {
    const model = Private.model(panel);
    return model ? rememberedSnapshots(model.getMetadata(METADATA_KEY)) : [];
  }

  /** Record a snapshot in the notebook's metadata (marks the notebook dirty). */
  export function remember(panel: NotebookPanel, snapshot: ISnapshot | ISnapshotEntry): void {
    const model = Private.model(panel);
    if (model) {
      model.setMetadata(METADATA_KEY, recordSnapshot(model.getMetadata(METADATA_KEY), snapshot));
    }
  }

  /** Remove a snapshot from the notebook's metadata; false if it was not there. */
  export function removeRemembered(panel: NotebookPanel, snapshotId: string): boolean {
    const model = Private.model(panel);
    const value = model ? forgetSnapshot(model.getMetadata(METADATA_KEY), snapshotId) : null;
    if (!model || !value) {
      return false;
    }
    model.setMetadata(METADATA_KEY, value);
    return true;
  }

  export interface IOptions {
    client: CkptClient;
    /** Opens the snapshots panel (offered as an action on success). */
    showSnapshots?: () => void;
  }
}

namespace Private {
  /** The notebook's model, unless the notebook was closed in the meantime. */
  export function model(panel: NotebookPanel): INotebookModel | null {
    return panel.isDisposed || panel.context.isDisposed ? null : panel.context.model;
  }

  export function message(error: unknown): string {
    if (error instanceof Error && error.message) {
      return error.message;
    }
    return String(error);
  }

  /** `"label" ` for a labelled snapshot, nothing for an unlabelled one. */
  export function quoted(snapshot: ISnapshot): string {
    return snapshot.label ? `"${short(snapshot.label)}" ` : '';
  }

  /** Labels are the user's; keep them from swallowing the 140-character message. */
  export function short(label: string): string {
    return label.length > 40 ? `${label.slice(0, 39)}…` : label;
  }

  export function showProgress(id: string, verb: string, op: IOperation): void {
    const done = op.bytes_done || 0;
    const total = op.bytes_total || 0;
    let message = `${verb}… ${formatBytes(done)}`;
    if (total > 0) {
      message += ` of ${formatBytes(total)}`;
    }
    if (done === 0 && op.phase) {
      message = `${verb}… (${op.phase})`;
    }
    Notification.update({
      id,
      message,
      type: 'in-progress',
      autoClose: false,
      progress: total > 0 ? Math.min(1, done / total) : undefined
    });
  }
}
