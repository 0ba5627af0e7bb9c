// The "Kernel snapshots" side panel: the snapshots of the current notebook, newest first,
// with Restore and Delete, and a label field to checkpoint the kernel. Snapshots the notebook
// records in its metadata but the server does not have (deleted, or taken on another machine)
// are listed too, as "not available here", with Forget instead of Restore and Delete.
// While visible the panel polls the server, so snapshots made elsewhere (the %checkpoint
// magic, another browser tab) appear by themselves; while the server cannot be reached every
// action is disabled. A switch shows them as a history tree instead (history.ts); labels are
// edited in place in both.

import type { JupyterFrontEnd } from '@jupyterlab/application';
import { PathExt } from '@jupyterlab/coreutils';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Contents } from '@jupyterlab/services';
import { refreshIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { CkptActions } from './actions';
import { cleanUp } from './cleanup';
import { CkptApiError, ISnapshot } from './api';
import {
  describeSize,
  formatAge,
  formatBytes,
  formatDuration,
  formatTime,
  snapshotName,
  totalStored
} from './format';
import { ISnapshotEntry, ListedSnapshot, METADATA_KEY, mergeSnapshots } from './metadata';
import { HistoryView, editLabel, restoreAsNewNotebook } from './history';
import { hostMarks, serverHostname } from './hostVerdict';
import { snapshotIcon } from './icons';
import { KernelOrigin, snapshotMarks } from './notebookRestore';

export class SnapshotsPanel extends Widget {
  constructor(options: SnapshotsPanel.IOptions) {
    super();
    this._actions = options.actions;
    this._tracker = options.tracker;
    this._history = new HistoryView({
      restore: snapshot => this._restore(snapshot),
      restoreAsNewNotebook: async snapshot => {
        const notebook = this._notebook;
        if (!notebook) {
          return;
        }
        this._setBusy(true);
        try {
          await restoreAsNewNotebook(
            this._actions.client,
            options.contents,
            options.commands,
            notebook,
            snapshot
          );
        } finally {
          this._setBusy(false);
        }
      },
      relabel: (snapshot, label) => this._actions.relabel(snapshot, label, this._notebook),
      editing: active => this._setEditing(active)
    });
    this.id = 'jupyter-ckpt-snapshots';
    this.addClass('jp-CkptPanel');
    this.title.icon = snapshotIcon;
    this.title.caption = 'Kernel snapshots';

    const node = this.node;
    node.innerHTML = '';

    const header = document.createElement('header');
    header.className = 'jp-CkptPanel-header';
    const title = document.createElement('h2');
    title.className = 'jp-CkptPanel-title';
    title.textContent = 'Kernel snapshots';
    this._refreshButton = document.createElement('button');
    this._refreshButton.className = 'jp-CkptPanel-refresh jp-ToolbarButtonComponent';
    this._refreshButton.title = 'Refresh the list';
    this._refreshButton.setAttribute('aria-label', 'Refresh the list');
    refreshIcon.element({ container: this._refreshButton, elementPosition: 'center' });
    this._refreshButton.addEventListener('click', () => {
      this._failedRestores.clear(); // a manual refresh offers failed snapshots again
      void this.refresh();
    });
    this._cleanupButton = document.createElement('button');
    this._cleanupButton.className = 'jp-mod-styled jp-CkptPanel-cleanup';
    this._cleanupButton.textContent = 'Clean up…';
    this._cleanupButton.title = 'Delete the snapshots of this notebook older than you choose';
    this._cleanupButton.addEventListener('click', () => {
      const notebook = this._notebook;
      if (notebook) {
        const available = this._snapshots.flatMap(entry =>
          entry.available ? [entry.snapshot] : []
        );
        void cleanUp(this._actions, notebook, available, () => void this.refresh(true));
      }
    });
    header.append(title, this._cleanupButton, this._refreshButton);

    this._notebookNode = document.createElement('div');
    this._notebookNode.className = 'jp-CkptPanel-notebook';

    const form = document.createElement('form');
    form.className = 'jp-CkptPanel-new';
    this._labelInput = document.createElement('input');
    this._labelInput.className = 'jp-mod-styled jp-CkptPanel-labelInput';
    this._labelInput.type = 'text';
    this._labelInput.placeholder = 'Label (optional)';
    this._labelInput.title = 'A label for the next snapshot (optional)';
    this._labelInput.setAttribute('aria-label', 'Snapshot label');
    this._checkpointButton = document.createElement('button');
    this._checkpointButton.type = 'submit';
    this._checkpointButton.className =
      'jp-mod-styled jp-mod-accept jp-CkptPanel-checkpoint';
    this._checkpointButton.textContent = 'Snapshot kernel';
    this._checkpointButton.title = 'Save a snapshot of the live kernel of this notebook';
    form.append(this._labelInput, this._checkpointButton);
    form.addEventListener('submit', event => {
      event.preventDefault();
      void this._checkpoint();
    });

    this._statusNode = document.createElement('div');
    this._statusNode.className = 'jp-CkptPanel-status';
    // announced by screen readers as it changes (loading, errors, offline)
    this._statusNode.setAttribute('role', 'status');
    this._statusNode.setAttribute('aria-live', 'polite');
    this._listNode = document.createElement('ul');
    this._listNode.className = 'jp-CkptPanel-list';
    this._listNode.setAttribute('aria-label', 'Snapshots of this notebook');
    this._totalNode = document.createElement('div');
    this._totalNode.className = 'jp-CkptPanel-total';

    const views = document.createElement('div');
    views.className = 'jp-CkptPanel-views';
    views.setAttribute('role', 'group');
    views.setAttribute('aria-label', 'Show the snapshots as');
    for (const [mode, text, title] of [
      ['list', 'List', 'The snapshots of this notebook, newest first'],
      ['history', 'History', 'The snapshots as a tree: each under the one its kernel came from']
    ] as const) {
      const button = document.createElement('button');
      button.className = `jp-CkptPanel-view jp-CkptPanel-view-${mode}`;
      button.textContent = text;
      button.title = title;
      button.addEventListener('click', () => this._setMode(mode));
      this._viewButtons.set(mode, button);
      views.append(button);
    }

    node.append(
      header,
      this._notebookNode,
      this._origin.node,
      form,
      views,
      this._statusNode,
      this._listNode,
      this._history.node,
      this._totalNode
    );
    this._setMode('list');

    this._tracker.currentChanged.connect(this._onCurrentChanged, this);
    this._actions.changed.connect(() => void this.refresh(), this);
    this._onCurrentChanged();
  }

  /** The notebook whose snapshots are shown: the current one, or the last one seen. */
  get notebook(): NotebookPanel | null {
    return this._notebook;
  }

  /** The snapshots on display, with those only the notebook remembers (`available` false). */
  get snapshots(): readonly ListedSnapshot[] {
    return this._snapshots;
  }

  /** Whether the server answered the last request (actions are disabled while not). */
  get online(): boolean {
    return this._online;
  }

  /** Move keyboard focus into the panel (its label field), e.g. when a command opens it. */
  focusPanel(): void {
    this._labelInput.focus();
  }

  /** The newest snapshot of the current notebook the server has, if any. */
  get latest(): ISnapshot | null {
    const listed = this._snapshots.find(entry => entry.available);
    return listed && listed.available ? listed.snapshot : null;
  }

  /**
   * Fetch the list again (only while visible; a hidden panel refreshes when shown).
   * `quiet`: a background poll, which shows no "Loading…".
   */
  async refresh(quiet = false): Promise<void> {
    if (!this.isVisible || this._editing) {
      this._stale = true; // (a label being edited: refreshed once it is done)
      return;
    }
    this._stale = false;
    const notebook = this._notebook;
    const generation = ++this._generation;
    this._renderHeader();
    if (!notebook) {
      this._snapshots = [];
      this._renderList('Open a notebook to see the snapshots of its kernel.');
      return;
    }
    if (!quiet) {
      this._statusNode.textContent = 'Loading…';
    }
    try {
      const client = this._actions.client;
      const available = await client.listSnapshots(notebook.context.path);
      this._hostname = await serverHostname(client);
      // the notebook's own record of its snapshots, once its file is loaded
      await notebook.context.ready.catch(() => undefined);
      if (generation !== this._generation) {
        return; // a newer refresh is under way
      }
      const remembered = CkptActions.remembered(notebook);
      const known = new Set(available.map(snapshot => snapshot.id));
      if (remembered.some(entry => !known.has(entry.id))) {
        // the server may have them under another notebook path (a renamed or copied
        // notebook): those can be restored too
        const wanted = new Set(remembered.map(entry => entry.id));
        const elsewhere = (await client.listSnapshots().catch(() => [])).filter(
          snapshot => wanted.has(snapshot.id) && !known.has(snapshot.id)
        );
        if (generation !== this._generation) {
          return;
        }
        available.push(...elsewhere);
        Private.sortNewestFirst(available);
      }
      const snapshots = mergeSnapshots(available, remembered);
      this._snapshots = snapshots;
      this._online = true;
      this._renderHeader();
      this._renderList(
        snapshots.length ? '' : 'No snapshots of this notebook yet: snapshot its kernel.'
      );
      await this._origin.update(
        client,
        notebook.sessionContext.session?.kernel?.id ?? null,
        available,
        this._listNode
      );
      this._renderHistory();
    } catch (error) {
      if (generation !== this._generation) {
        return;
      }
      if (error instanceof CkptApiError && error.status === 0) {
        // keep the list in view, but nothing can be done with it until the server is back
        this._online = false;
        this._renderHeader();
        this._renderList(
          'The Jupyter server cannot be reached: restore, delete and snapshot are disabled ' +
            'until it answers again.',
          true
        );
        return;
      }
      this._snapshots = [];
      this._renderList(`Could not list snapshots: ${(error as Error).message}`, true);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    if (this._stale) {
      void this.refresh();
    }
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this._stale) {
      void this.refresh();
    }
    this._poll = setInterval(() => {
      if (this.isVisible && !this._busy) {
        void this.refresh(true);
      }
    }, SnapshotsPanel.POLL_MS);
  }

  protected onBeforeDetach(msg: Message): void {
    if (this._poll !== null) {
      clearInterval(this._poll);
      this._poll = null;
    }
    super.onBeforeDetach(msg);
  }

  private _onCurrentChanged(): void {
    const current = this._tracker.currentWidget;
    if (current && current !== this._notebook) {
      if (this._notebook) {
        this._disconnect(this._notebook);
      }
      this._notebook = current;
      current.context.pathChanged.connect(this._onPathChanged, this);
      current.context.model.metadataChanged.connect(this._onMetadataChanged, this);
      current.sessionContext.kernelChanged.connect(this._onKernelChanged, this);
      current.disposed.connect(this._onNotebookDisposed, this);
      void this.refresh();
    } else if (!current && !this._notebook) {
      void this.refresh();
    }
  }

  private _disconnect(notebook: NotebookPanel): void {
    notebook.context.pathChanged.disconnect(this._onPathChanged, this);
    notebook.context.model.metadataChanged.disconnect(this._onMetadataChanged, this);
    notebook.sessionContext.kernelChanged.disconnect(this._onKernelChanged, this);
    notebook.disposed.disconnect(this._onNotebookDisposed, this);
  }

  private _onPathChanged(): void {
    void this.refresh();
  }

  /** The notebook's record of its snapshots changed (loaded, edited, reverted). */
  private _onMetadataChanged(_model: INotebookModel, change: { key: string }): void {
    if (change.key === METADATA_KEY) {
      void this.refresh();
    }
  }

  private _onKernelChanged(): void {
    this._renderHeader();
    void this.refresh(true); // which snapshot the new kernel came from
  }

  private _onNotebookDisposed(): void {
    if (this._notebook) {
      this._disconnect(this._notebook);
    }
    this._notebook = null;
    this._onCurrentChanged();
    if (!this._notebook) {
      void this.refresh();
    }
  }

  private async _checkpoint(): Promise<void> {
    const notebook = this._notebook;
    if (!notebook) {
      return;
    }
    this._checkpointButton.disabled = true;
    try {
      const snapshot = await this._actions.checkpoint(notebook, this._labelInput.value.trim());
      if (snapshot) {
        this._labelInput.value = '';
      }
    } finally {
      this._renderHeader();
    }
  }

  /** Show the list or the history tree. */
  private _setMode(mode: 'list' | 'history'): void {
    for (const [which, button] of this._viewButtons) {
      button.setAttribute('aria-pressed', String(which === mode));
      button.classList.toggle('jp-mod-active', which === mode);
    }
    this._listNode.hidden = mode !== 'list';
    this._history.node.hidden = mode !== 'history';
  }

  /** While a label is edited nothing is redrawn (the field would go); then all is. */
  private _setEditing(active: boolean): void {
    this._editing = active;
    if (!active) {
      void this.refresh(true);
    }
  }

  private _renderHistory(): void {
    if (this._editing) {
      return;
    }
    this._history.update(
      this._snapshots.flatMap(entry => (entry.available ? [entry.snapshot] : [])),
      this._origin.position,
      this._online,
      this._busy
    );
  }

  /** Restore a snapshot into the notebook (from the list or the tree). */
  private async _restore(snapshot: ISnapshot): Promise<void> {
    const notebook = this._notebook;
    if (!notebook) {
      return;
    }
    this._setBusy(true);
    try {
      const outcome = await this._actions.restore(notebook, snapshot);
      if (outcome === null && this._actions.lastError) {
        this._failedRestores.set(snapshot.id, this._actions.lastError);
      }
    } finally {
      this._setBusy(false);
    }
  }

  private _renderHeader(): void {
    const notebook = this._notebook;
    if (!notebook) {
      this._notebookNode.textContent = 'No notebook';
      this._checkpointButton.disabled = true;
      this._cleanupButton.disabled = true;
      return;
    }
    const kernel = notebook.sessionContext.session?.kernel;
    this._notebookNode.textContent = PathExt.basename(notebook.context.path);
    this._notebookNode.title = notebook.context.path;
    this._checkpointButton.disabled =
      !kernel || !this._online || this._actions.isCheckpointing(kernel.id);
    this._cleanupButton.disabled = !this._online;
  }

  private _renderList(status: string, isError = false): void {
    if (this._statusNode.textContent !== status) {
      this._statusNode.textContent = status; // unchanged text is not announced again
    }
    this._statusNode.classList.toggle('jp-mod-error', isError);
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.ckptControl;
    this._listNode.innerHTML = '';
    for (const listed of this._snapshots) {
      this._listNode.appendChild(
        listed.available
          ? this._renderItem(listed.snapshot)
          : this._renderUnavailable(listed.snapshot)
      );
    }
    if (focused) {
      // a background refresh must not take the keyboard focus away from a button
      this._listNode.querySelector<HTMLElement>(`[data-ckpt-control="${focused}"]`)?.focus();
    }
    this._renderHistory();
    const available = this._snapshots.filter(entry => entry.available);
    this._totalNode.textContent = available.length
      ? `${available.length} snapshot${available.length === 1 ? '' : 's'} of this ` +
        `notebook, ${formatBytes(totalStored(available.map(entry => entry.snapshot)))} on disk`
      : '';
  }

  private _renderItem(snapshot: ISnapshot): HTMLLIElement {
    const item = document.createElement('li');
    item.className = 'jp-CkptSnapshot';
    item.dataset.snapshotId = snapshot.id;

    const name = snapshotName(snapshot);
    const label = document.createElement('div');
    label.className = 'jp-CkptSnapshot-label';
    label.textContent = name;
    label.title = snapshot.label || name;

    const meta = document.createElement('div');
    meta.className = 'jp-CkptSnapshot-meta';
    const time = document.createElement('time');
    time.className = 'jp-CkptSnapshot-time';
    time.dateTime = snapshot.created;
    time.textContent = formatAge(snapshot.created) || formatTime(snapshot.created);
    time.title = new Date(snapshot.created).toLocaleString();
    const size = document.createElement('span');
    size.className = 'jp-CkptSnapshot-size';
    const described = describeSize(snapshot.stored_bytes, snapshot.size_bytes);
    size.textContent = described.text;
    size.title = described.title;
    meta.append(time, size);
    if (snapshot.execution_count !== null && snapshot.execution_count !== undefined) {
      const count = document.createElement('span');
      count.className = 'jp-CkptSnapshot-count';
      count.textContent = `In [${snapshot.execution_count}]`;
      count.title = `Execution count ${snapshot.execution_count}`;
      meta.append(count);
    }
    if (snapshot.freeze_ms !== null && snapshot.freeze_ms !== undefined) {
      const freeze = document.createElement('span');
      freeze.className = 'jp-CkptSnapshot-freeze';
      freeze.textContent = `paused ${formatDuration(snapshot.freeze_ms)}`;
      freeze.title = 'How long the kernel was frozen while it was saved';
      meta.append(freeze);
    }

    meta.append(...snapshotMarks(snapshot), ...hostMarks(snapshot, this._hostname));
    item.classList.toggle('jp-mod-current', this._origin.snapshotId === snapshot.id);

    const failure = this._failedRestores.get(snapshot.id);
    const failed = document.createElement('div');
    failed.className = 'jp-CkptSnapshot-failure';
    if (failure) {
      failed.textContent = `Restore failed: ${failure}`;
      item.classList.add('jp-mod-failed');
    }

    const buttons = document.createElement('div');
    buttons.className = 'jp-CkptSnapshot-actions';
    const restore = document.createElement('button');
    restore.className = 'jp-mod-styled jp-mod-accept jp-CkptSnapshot-restore';
    restore.textContent = 'Restore';
    restore.dataset.ckptControl = `restore-${snapshot.id}`;
    restore.setAttribute('aria-label', `Restore snapshot ${name}`);
    restore.title = failure
      ? 'This snapshot could not be restored (see above); refresh the list to try again'
      : 'Restore this snapshot into the notebook';
    restore.disabled = !this._online || Boolean(failure) || this._busy;
    restore.addEventListener('click', () => void this._restore(snapshot));
    const rename = document.createElement('button');
    rename.className = 'jp-mod-styled jp-CkptSnapshot-rename';
    rename.textContent = 'Rename';
    rename.dataset.ckptControl = `rename-${snapshot.id}`;
    rename.setAttribute('aria-label', `Rename snapshot ${name}`);
    rename.title = 'Change the label of this snapshot';
    rename.disabled = !this._online;
    rename.addEventListener('click', () => {
      this._setEditing(true);
      editLabel(
        label,
        snapshot,
        text => this._actions.relabel(snapshot, text, this._notebook),
        () => this._setEditing(false)
      );
    });
    const remove = document.createElement('button');
    remove.className = 'jp-mod-styled jp-mod-warn jp-CkptSnapshot-delete';
    remove.textContent = 'Delete';
    remove.dataset.ckptControl = `delete-${snapshot.id}`;
    remove.setAttribute('aria-label', `Delete snapshot ${name}`);
    remove.title = 'Delete this snapshot from disk';
    remove.disabled = !this._online || this._busy;
    remove.addEventListener('click', async () => {
      this._setBusy(true);
      try {
        await this._actions.delete(snapshot, true, this._notebook);
      } finally {
        this._setBusy(false);
      }
    });
    buttons.append(restore, rename, remove);

    item.append(label, meta, ...(failure ? [failed] : []), buttons);
    return item;
  }

  /** While a restore or delete runs, the list's other actions wait (and polls pause). */
  private _setBusy(busy: boolean): void {
    this._busy = busy;
    for (const button of this._listNode.querySelectorAll<HTMLButtonElement>(
      '.jp-CkptSnapshot-restore, .jp-CkptSnapshot-delete'
    )) {
      button.disabled = busy || !this._online;
    }
    this._renderHistory();
    if (!busy) {
      void this.refresh(true);
    }
  }

  /** A snapshot the notebook records but the server does not have: no Restore, no Delete. */
  private _renderUnavailable(entry: ISnapshotEntry): HTMLLIElement {
    const item = document.createElement('li');
    item.className = 'jp-CkptSnapshot jp-mod-unavailable';
    item.dataset.snapshotId = entry.id;
    item.title =
      'This notebook records this snapshot, but this server does not have it: it was ' +
      'deleted, or taken on another machine.';

    const label = document.createElement('div');
    label.className = 'jp-CkptSnapshot-label';
    label.textContent = entry.label || 'Unlabelled snapshot';

    const meta = document.createElement('div');
    meta.className = 'jp-CkptSnapshot-meta';
    if (entry.created) {
      const time = document.createElement('time');
      time.className = 'jp-CkptSnapshot-time';
      time.dateTime = entry.created;
      time.textContent = formatAge(entry.created) || formatTime(entry.created);
      time.title = new Date(entry.created).toLocaleString();
      meta.append(time);
    }
    if (entry.execution_count !== null) {
      const count = document.createElement('span');
      count.className = 'jp-CkptSnapshot-count';
      count.textContent = `In [${entry.execution_count}]`;
      count.title = `Execution count ${entry.execution_count}`;
      meta.append(count);
    }
    const unavailable = document.createElement('span');
    unavailable.className = 'jp-CkptSnapshot-unavailable';
    unavailable.textContent = 'not available here';
    meta.append(unavailable);

    const buttons = document.createElement('div');
    buttons.className = 'jp-CkptSnapshot-actions';
    const forget = document.createElement('button');
    forget.className = 'jp-mod-styled jp-mod-warn jp-CkptSnapshot-forget';
    forget.textContent = 'Forget';
    forget.setAttribute('aria-label', `Forget snapshot ${entry.label || entry.id}`);
    forget.title = 'Remove this snapshot from the ones the notebook records';
    forget.addEventListener('click', async () => {
      const notebook = this._notebook;
      if (!notebook) {
        return;
      }
      forget.disabled = true;
      try {
        await this._actions.forget(notebook, entry);
      } finally {
        forget.disabled = false;
      }
    });
    buttons.append(forget);

    item.append(label, meta, buttons);
    return item;
  }

  private readonly _actions: CkptActions;
  private readonly _tracker: INotebookTracker;
  private readonly _notebookNode: HTMLDivElement;
  private readonly _labelInput: HTMLInputElement;
  private readonly _checkpointButton: HTMLButtonElement;
  private readonly _refreshButton: HTMLButtonElement;
  private readonly _cleanupButton: HTMLButtonElement;
  private readonly _statusNode: HTMLDivElement;
  private readonly _listNode: HTMLUListElement;
  private readonly _totalNode: HTMLDivElement;
  private readonly _failedRestores = new Map<string, string>();
  private readonly _origin = new KernelOrigin();
  private readonly _history: HistoryView;
  private readonly _viewButtons = new Map<'list' | 'history', HTMLButtonElement>();
  private _editing = false;
  private _notebook: NotebookPanel | null = null;
  private _hostname: string | null = null;
  private _snapshots: ListedSnapshot[] = [];
  private _generation = 0;
  private _stale = true;
  private _online = true;
  private _busy = false;
  private _poll: ReturnType<typeof setInterval> | null = null;
}

export namespace SnapshotsPanel {
  /** How often a visible panel asks the server for its list. */
  export const POLL_MS = 3000;

  export interface IOptions {
    actions: CkptActions;
    tracker: INotebookTracker;
    /** Where "Restore as a new notebook" saves the notebook, and how it opens it. */
    contents: Contents.IManager;
    commands: JupyterFrontEnd['commands'];
  }
}

namespace Private {
  /** Newest first by creation time (stable: equal times keep their order). */
  export function sortNewestFirst(snapshots: ISnapshot[]): void {
    const time = (snapshot: ISnapshot) => {
      const ms = new Date(snapshot.created).getTime();
      return isNaN(ms) ? -Infinity : ms;
    };
    snapshots.sort((a, b) => time(b) - time(a) || 0);
  }
}
