// Automatic snapshots before each cell, and "Undo Last Cell".
// The server takes the snapshots (it holds each cell's request until the kernel is out of
// the snapshot's freeze; CheckpointConfig.auto_snapshot is its default). Here:
// - the setting "autoSnapshots" turns them on or off for this user (PUT /api/ckpt/auto);
// - as a cell is scheduled, the notebook as it is then (cells, outputs, execution counts) is
//   sent, and the server stores it with the snapshot taken before that cell;
// - "Undo Last Cell" restores the kernel from the snapshot before the notebook's last
//   executed cell (the kernel keeps its id: the notebook reconnects) and puts that notebook
//   back in place, as one step the notebook's own undo takes back. It is enabled only when
//   the server has such a snapshot (GET /api/ckpt/kernels/ID/undo), which holds after a
//   server restart too: the snapshots say which one came before which.

import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import type { Cell } from '@jupyterlab/cells';
import { INotebookTracker, Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { CkptApiError, CkptClient, IRestoreResult, ISnapshot } from './api';
import { replaceCells } from './notebookRestore';

export const UNDO_LAST_CELL = 'jupyter-ckpt:undo-last-cell';

/** The user's choice (the extension's setting "autoSnapshots"). */
export type AutoChoice = 'server default' | 'on' | 'off';

/** What the server says of its automatic snapshots. */
export interface IAutoSettings {
  enabled: boolean;
  server_default: boolean;
  override: boolean | null;
  keep: number;
  quota_bytes: number;
}

/** The REST calls of automatic snapshots, and what the command shows. */
export class AutoCells {
  constructor(client: CkptClient) {
    this._client = client;
  }

  /** Whether the server takes automatic snapshots now. */
  get enabled(): boolean {
    return this._enabled;
  }

  /** Apply the user's choice; resolves with whether the server takes them now. */
  async choose(choice: AutoChoice): Promise<boolean> {
    const enabled = choice === 'on' ? true : choice === 'off' ? false : null;
    const settings = await this._request<IAutoSettings>(['auto'], 'PUT', { enabled });
    this._enabled = settings.enabled;
    return this._enabled;
  }

  /** Send the notebook as it is just before `cell` runs, for the snapshot before it. */
  async sendNotebook(panel: NotebookPanel, cell: Cell): Promise<void> {
    const kernelId = panel.sessionContext.session?.kernel?.id;
    const model = panel.context.isDisposed ? null : panel.context.model;
    if (!this._enabled || !kernelId || !model || cell.model.type !== 'code') {
      return;
    }
    await this._request<null>(['kernels', kernelId, 'auto', 'notebook'], 'POST', {
      cell_id: cell.model.id,
      notebook: model.toJSON()
    });
  }

  /** The snapshot "Undo Last Cell" restores in `panel` (as last asked), or null. */
  target(panel: NotebookPanel | null): ISnapshot | null {
    const kernelId = panel?.sessionContext.session?.kernel?.id;
    return (kernelId && this._targets.get(kernelId)) || null;
  }

  /** Ask the server again which snapshot precedes the last cell of `panel`'s kernel. */
  async refresh(panel: NotebookPanel): Promise<ISnapshot | null> {
    const kernelId = panel.sessionContext.session?.kernel?.id;
    if (!kernelId) {
      return null;
    }
    let snapshot: ISnapshot | null = null;
    try {
      snapshot = (await this._request<{ snapshot: ISnapshot | null }>(
        ['kernels', kernelId, 'undo'], 'GET')).snapshot;
    } catch {
      // a kernel not (yet) known to the server, or the server away: nothing to undo
    }
    this._targets.set(kernelId, snapshot);
    return snapshot;
  }

  /** Restore `panel`'s kernel to just before its last cell (see the top of this file). */
  async undo(panel: NotebookPanel): Promise<boolean> {
    const kernel = panel.sessionContext.session?.kernel;
    const snapshot = await this.refresh(panel);
    if (!kernel || !snapshot) {
      Notification.info(
        'No automatic snapshot precedes the last cell this kernel ran: there is nothing to undo.',
        { autoClose: 5000 }
      );
      return false;
    }
    const cell = snapshot.execution_count === null ? 'the last cell' :
      `In [${(snapshot.execution_count ?? 0) + 1}]`;
    let notebook: Record<string, unknown> | null = null;
    if (snapshot.has_notebook) {
      try {
        notebook = await this._client.getSnapshotNotebook(snapshot.id);
      } catch (error) {
        Notification.error(`Cannot undo ${cell}: its notebook cannot be read: ` +
          `${(error as Error).message}`, { autoClose: false });
        return false;
      }
    }
    const id = Notification.emit(`Undoing ${cell}…`, 'in-progress', { autoClose: false });
    try {
      await this._request<IRestoreResult>(['kernels', kernel.id, 'undo'], 'POST', {});
    } catch (error) {
      Notification.update({ id, type: 'error', autoClose: false,
        message: `Undoing ${cell} failed: ${(error as Error).message}` });
      await this.refresh(panel);
      return false;
    }
    if (notebook) {
      replaceCells(panel, notebook);
    }
    try {
      await kernel.reconnect(); // restored under its own id
    } catch (error) {
      Notification.update({ id, type: 'error', autoClose: false,
        message: `Undid ${cell}, but reconnecting to the kernel failed: ${(error as Error).message}` });
      return true;
    }
    Notification.update({ id, type: 'success', autoClose: 5000,
      message: `Undid ${cell}: the kernel${notebook ? ' and the notebook are' : ' is'} ` +
        'back to just before it ran' });
    await this.refresh(panel);
    return true;
  }

  private async _request<T>(parts: string[], method: string, body?: unknown): Promise<T> {
    const settings = this._client.serverSettings;
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(this._client.url(parts), {
        method, ...(body === undefined ? {} : { body: JSON.stringify(body) })
      }, settings);
    } catch (error) {
      throw new CkptApiError(`Could not reach the Jupyter server: ${(error as Error).message}`, 0);
    }
    const text = await response.text();
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        message = JSON.parse(text).message || message;
      } catch {
        // not JSON: the status says it
      }
      throw new CkptApiError(message, response.status);
    }
    return (text ? JSON.parse(text) : null) as T;
  }

  private _client: CkptClient;
  private _enabled = false;
  private _targets = new Map<string, ISnapshot | null>();
}

/** The command, its palette entry, the setting and the signals that keep it current. */
export function activateUndoCell(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  client: CkptClient,
  settings: Promise<ISettingRegistry.ISettings> | null,
  palette: ICommandPalette | null
): AutoCells {
  const { commands } = app;
  const auto = new AutoCells(client);
  let undoing = false;
  const changed = () => commands.notifyCommandChanged(UNDO_LAST_CELL);
  const refresh = (panel: NotebookPanel | null) => {
    if (panel) {
      void auto.refresh(panel).then(changed);
    }
  };
  const panelOf = (notebook: Notebook) => tracker.find(panel => panel.content === notebook) ?? null;

  void settings?.then(loaded => {
    const apply = () => {
      const choice = (loaded.get('autoSnapshots').composite ?? 'server default') as AutoChoice;
      auto.choose(choice).catch(reason =>
        console.error('jupyter-ckpt: could not set automatic snapshots', reason));
    };
    apply();
    loaded.changed.connect(apply);
  });

  NotebookActions.executionScheduled.connect((_, { notebook, cell }) => {
    const panel = panelOf(notebook);
    if (panel && auto.enabled) {
      auto.sendNotebook(panel, cell).catch(reason =>
        console.warn('jupyter-ckpt: the notebook before this cell was not stored', reason));
    }
  });
  NotebookActions.executed.connect((_, { notebook }) => refresh(panelOf(notebook)));
  tracker.currentChanged.connect((_, panel) => {
    refresh(panel);
    changed();
  });
  tracker.widgetAdded.connect((_, panel) =>
    panel.sessionContext.kernelChanged.connect(() => refresh(panel)));

  commands.addCommand(UNDO_LAST_CELL, {
    label: 'Undo Last Cell (Kernel and Notebook)',
    caption: 'Restore the kernel, and the cells and outputs, to just before the last cell ran ' +
      '(from its automatic snapshot)',
    isEnabled: () => !undoing && auto.target(tracker.currentWidget) !== null,
    execute: async () => {
      const panel = tracker.currentWidget;
      if (!panel || undoing) {
        return false;
      }
      undoing = true;
      changed();
      try {
        return await auto.undo(panel);
      } finally {
        undoing = false;
        changed();
      }
    }
  });
  palette?.addItem({ command: UNDO_LAST_CELL, category: 'Kernel Snapshots' });
  return auto;
}
