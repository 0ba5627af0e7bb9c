// The history view of the snapshots panel: a notebook's snapshots as a tree, each under the
// snapshot its kernel was at when it was taken (its `parent`: the kernel's previous snapshot,
// or the one it was restored from), so a restore and the snapshots after it make a branch.
// The kernel's position (the snapshot it came from or last took) is marked. It is an ARIA
// tree: one tab stop, arrow keys move, Left/Right fold, Home/End, Enter restores, F2
// renames; the actions under it (Restore, Restore as a new notebook, Rename) act on the
// selected snapshot. Labels are edited in place (`editLabel`, used by the list too).

import type { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import type * as nbformat from '@jupyterlab/nbformat';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Contents } from '@jupyterlab/services';

import { CkptClient, ISnapshot } from './api';
import { formatAge, formatTime, snapshotName } from './format';
import { routeResumedOutput } from './notebookRestore';

/** A snapshot in the tree, with those taken from it. */
export interface IHistoryNode {
  snapshot: ISnapshot;
  children: IHistoryNode[];
}

/**
 * The snapshots as a forest: each under its parent when the parent is among them, else a
 * root; roots and children oldest first.
 */
export function buildHistory(snapshots: readonly ISnapshot[]): IHistoryNode[] {
  const nodes = new Map<string, IHistoryNode>();
  for (const snapshot of snapshots) {
    nodes.set(snapshot.id, { snapshot, children: [] });
  }
  const roots: IHistoryNode[] = [];
  for (const node of nodes.values()) {
    const parent = node.snapshot.parent ? nodes.get(node.snapshot.parent) : undefined;
    (parent && parent !== node ? parent.children : roots).push(node);
  }
  const time = (node: IHistoryNode) => {
    const ms = new Date(node.snapshot.created).getTime();
    return isNaN(ms) ? -Infinity : ms;
  };
  const sort = (list: IHistoryNode[]) => {
    list.sort((a, b) => time(a) - time(b));
    list.forEach(node => sort(node.children));
  };
  sort(roots);
  return roots;
}

/**
 * Edit a snapshot's label in place of `node` (its displayed name): Enter or leaving the
 * field saves, Escape cancels. `save` answers whether the label was stored; `done` runs
 * once the field is gone.
 */
export function editLabel(
  node: HTMLElement,
  snapshot: ISnapshot,
  save: (label: string) => Promise<boolean>,
  done: () => void
): void {
  const input = document.createElement('input');
  input.type = 'text';
  input.className = 'jp-mod-styled jp-CkptSnapshot-labelEdit';
  input.value = snapshot.label;
  input.maxLength = LABEL_MAX;
  input.placeholder = 'Label (empty: none)';
  input.setAttribute('aria-label', `New label of snapshot ${snapshotName(snapshot)}`);
  const shown = node.style.display;
  node.style.display = 'none';
  node.after(input);
  let finished = false;
  const finish = async (keep: boolean) => {
    if (finished) {
      return;
    }
    finished = true;
    const label = input.value.trim();
    if (keep && label !== snapshot.label) {
      input.disabled = true;
      await save(label);
    }
    input.remove();
    node.style.display = shown;
    done();
  };
  input.addEventListener('keydown', event => {
    event.stopPropagation(); // (the tree's and the notebook's keys)
    if (event.key === 'Enter') {
      event.preventDefault();
      void finish(true);
    } else if (event.key === 'Escape') {
      event.preventDefault();
      void finish(false);
    }
  });
  input.addEventListener('blur', () => void finish(true));
  input.focus();
  input.select();
}

/** What the history view asks its panel to do with a snapshot. */
export interface IHistoryActions {
  restore(snapshot: ISnapshot): Promise<void>;
  restoreAsNewNotebook(snapshot: ISnapshot): Promise<void>;
  relabel(snapshot: ISnapshot, label: string): Promise<boolean>;
  /** While a label is edited the panel does not redraw (it would drop the field). */
  editing(active: boolean): void;
}

/** The tree and the actions on its selected snapshot. */
export class HistoryView {
  constructor(private readonly _actions: IHistoryActions) {
    this.node = document.createElement('div');
    this.node.className = 'jp-CkptHistory';
    this._tree = document.createElement('ul');
    this._tree.className = 'jp-CkptHistory-tree';
    this._tree.setAttribute('role', 'tree');
    this._tree.setAttribute('aria-label', 'History of this notebook’s snapshots');
    this._tree.addEventListener('keydown', event => this._onKey(event));
    const bar = (this._bar = document.createElement('div'));
    bar.className = 'jp-CkptHistory-actions';
    this._restore = Private.button('Restore', 'jp-mod-accept jp-CkptHistory-restore', () =>
      this._run(snapshot => this._actions.restore(snapshot))
    );
    this._fork = Private.button('Restore as a new notebook', 'jp-CkptHistory-fork', () =>
      this._run(snapshot => this._actions.restoreAsNewNotebook(snapshot))
    );
    this._rename = Private.button('Rename', 'jp-CkptHistory-rename', () => this.rename());
    bar.append(this._restore, this._fork, this._rename);
    this.node.append(this._tree, bar);
  }

  readonly node: HTMLDivElement;

  /** The selected snapshot, if any. */
  get selected(): ISnapshot | null {
    return this._snapshots.find(snapshot => snapshot.id === this._selected) ?? null;
  }

  /**
   * Draw the tree of `snapshots` with `position` (the kernel's snapshot) marked; actions
   * are disabled while `online` is false or the panel is `busy`.
   */
  update(
    snapshots: readonly ISnapshot[],
    position: string | null,
    online: boolean,
    busy: boolean
  ): void {
    this._snapshots = snapshots;
    this._position = position;
    this._online = online;
    this._busy = busy;
    if (!snapshots.some(snapshot => snapshot.id === this._selected)) {
      this._selected = snapshots.some(snapshot => snapshot.id === position)
        ? position
        : (snapshots[0]?.id ?? null);
    }
    const focused = this._tree.contains(document.activeElement);
    this._tree.innerHTML = '';
    const roots = buildHistory(snapshots);
    this._tree.hidden = this._bar.hidden = roots.length === 0; // (the status says why)
    this._draw(roots, this._tree, 1);
    if (focused) {
      this._item(this._selected)?.focus();
    }
    this._updateActions();
  }

  /** Edit the selected snapshot's label in place. */
  rename(): void {
    const snapshot = this.selected;
    const row = this._item(snapshot?.id ?? null)?.querySelector<HTMLElement>(
      ':scope > .jp-CkptHistory-row > .jp-CkptHistory-label'
    );
    if (!snapshot || !row || !this._online) {
      return;
    }
    this._actions.editing(true);
    editLabel(
      row,
      snapshot,
      label => this._actions.relabel(snapshot, label),
      () => {
        this._actions.editing(false);
        this._item(snapshot.id)?.focus();
      }
    );
  }

  private _draw(nodes: IHistoryNode[], parent: HTMLElement, level: number): void {
    nodes.forEach((node, index) => {
      const { snapshot } = node;
      const item = document.createElement('li');
      item.className = 'jp-CkptHistory-item';
      item.dataset.snapshotId = snapshot.id;
      item.setAttribute('role', 'treeitem');
      item.setAttribute('aria-level', String(level));
      item.setAttribute('aria-setsize', String(nodes.length));
      item.setAttribute('aria-posinset', String(index + 1));
      const selected = snapshot.id === this._selected;
      item.setAttribute('aria-selected', String(selected));
      item.tabIndex = selected ? 0 : -1;
      const current = snapshot.id === this._position;
      item.classList.toggle('jp-mod-current', current);
      if (current) {
        item.setAttribute('aria-current', 'location');
      }

      const row = document.createElement('div');
      row.className = 'jp-CkptHistory-row';
      const label = document.createElement('span');
      label.className = 'jp-CkptHistory-label';
      label.textContent = snapshotName(snapshot);
      const time = document.createElement('time');
      time.className = 'jp-CkptHistory-time';
      time.dateTime = snapshot.created;
      time.textContent = formatAge(snapshot.created) || formatTime(snapshot.created);
      time.title = new Date(snapshot.created).toLocaleString();
      row.append(label, time);
      if (current) {
        const mark = document.createElement('span');
        mark.className = 'jp-CkptHistory-here';
        mark.textContent = 'kernel is here';
        mark.title = 'The notebook’s kernel came from this snapshot or took it last';
        row.append(mark);
      }
      row.addEventListener('click', () => this._select(snapshot.id, true));
      row.addEventListener('dblclick', () => this.rename());
      item.append(row);

      if (node.children.length) {
        const expanded = !this._collapsed.has(snapshot.id);
        item.setAttribute('aria-expanded', String(expanded));
        const group = document.createElement('ul');
        group.setAttribute('role', 'group');
        group.className = 'jp-CkptHistory-group';
        group.hidden = !expanded;
        this._draw(node.children, group, level + 1);
        item.append(group);
      }
      parent.append(item);
    });
  }

  private _item(id: string | null): HTMLElement | null {
    return id === null
      ? null
      : this._tree.querySelector<HTMLElement>(`[role="treeitem"][data-snapshot-id="${id}"]`);
  }

  /** The tree items a user can reach (not inside folded ones), in order. */
  private _visible(): HTMLElement[] {
    return [...this._tree.querySelectorAll<HTMLElement>('[role="treeitem"]')].filter(
      item => !item.closest('[role="group"][hidden]')
    );
  }

  private _select(id: string, focus: boolean): void {
    this._selected = id;
    for (const item of this._tree.querySelectorAll<HTMLElement>('[role="treeitem"]')) {
      const selected = item.dataset.snapshotId === id;
      item.setAttribute('aria-selected', String(selected));
      item.tabIndex = selected ? 0 : -1;
    }
    if (focus) {
      this._item(id)?.focus();
    }
    this._updateActions();
  }

  private _fold(item: HTMLElement, expand: boolean): void {
    const id = item.dataset.snapshotId ?? '';
    if (expand) {
      this._collapsed.delete(id);
    } else {
      this._collapsed.add(id);
    }
    item.setAttribute('aria-expanded', String(expand));
    const group = item.querySelector<HTMLElement>(':scope > [role="group"]');
    if (group) {
      group.hidden = !expand;
    }
  }

  private _onKey(event: KeyboardEvent): void {
    const item = (event.target as HTMLElement).closest<HTMLElement>('[role="treeitem"]');
    if (!item || event.target !== item) {
      return;
    }
    const visible = this._visible();
    const at = visible.indexOf(item);
    const expanded = item.getAttribute('aria-expanded');
    let next: HTMLElement | null | undefined = null;
    switch (event.key) {
      case 'ArrowDown':
        next = visible[at + 1];
        break;
      case 'ArrowUp':
        next = visible[at - 1];
        break;
      case 'Home':
        next = visible[0];
        break;
      case 'End':
        next = visible[visible.length - 1];
        break;
      case 'ArrowRight':
        if (expanded === 'false') {
          this._fold(item, true);
        } else if (expanded === 'true') {
          next = item.querySelector<HTMLElement>(':scope > [role="group"] > [role="treeitem"]');
        }
        break;
      case 'ArrowLeft':
        if (expanded === 'true') {
          this._fold(item, false);
        } else {
          next = item.parentElement?.closest<HTMLElement>('[role="treeitem"]');
        }
        break;
      case 'Enter':
        this._restore.click();
        break;
      case 'F2':
        this.rename();
        break;
      default:
        return;
    }
    event.preventDefault();
    event.stopPropagation();
    if (next?.dataset.snapshotId) {
      this._select(next.dataset.snapshotId, true);
    }
  }

  private _updateActions(): void {
    const snapshot = this.selected;
    const name = snapshot ? snapshotName(snapshot) : '';
    for (const [button, verb] of [
      [this._restore, 'Restore'],
      [this._fork, 'Restore as a new notebook:'],
      [this._rename, 'Rename']
    ] as const) {
      button.disabled = !snapshot || !this._online || this._busy;
      button.setAttribute('aria-label', snapshot ? `${verb} snapshot ${name}` : verb);
    }
    this._fork.title = 'Start a kernel of its own from this snapshot, in a new notebook';
  }

  private async _run(action: (snapshot: ISnapshot) => Promise<void>): Promise<void> {
    const snapshot = this.selected;
    if (snapshot && !this._busy && this._online) {
      await action(snapshot);
    }
  }

  private readonly _tree: HTMLUListElement;
  private readonly _bar: HTMLDivElement;
  private readonly _restore: HTMLButtonElement;
  private readonly _fork: HTMLButtonElement;
  private readonly _rename: HTMLButtonElement;
  private readonly _collapsed = new Set<string>();
  private _snapshots: readonly ISnapshot[] = [];
  private _selected: string | null = null;
  private _position: string | null = null;
  private _online = true;
  private _busy = false;
}

/**
 * Restore `snapshot` as a kernel of its own (a fork while its kernel still runs) in a new
 * notebook beside `panel`'s, holding the snapshot's cells and outputs when it stored them.
 * Resolves with the new notebook's path, or null when it failed (a notification says why).
 */
export async function restoreAsNewNotebook(
  client: CkptClient,
  contents: Contents.IManager,
  commands: JupyterFrontEnd['commands'],
  panel: NotebookPanel,
  snapshot: ISnapshot
): Promise<string | null> {
  const name = snapshotName(snapshot);
  const id = Notification.emit(`Restoring “${name}” as a new notebook…`, 'in-progress', {
    autoClose: false
  });
  const fail = (what: string, error: unknown) => {
    Notification.update({
      id,
      type: 'error',
      message: `${what}: ${error instanceof Error ? error.message : String(error)}`,
      autoClose: false
    });
    return null;
  };
  let notebook: Record<string, unknown>;
  try {
    notebook = snapshot.has_notebook
      ? await client.getSnapshotNotebook(snapshot.id)
      : Private.emptyNotebook(snapshot);
  } catch (error) {
    return fail(`The notebook of “${name}” cannot be read, nothing was restored`, error);
  }
  let kernelId: string;
  try {
    kernelId = (await client.restore(snapshot.id)).kernel_id;
  } catch (error) {
    return fail(`Restoring “${name}” failed`, error);
  }
  let path: string;
  try {
    path = await Private.freePath(contents, panel.context.path, snapshot);
    await contents.save(path, { type: 'notebook', format: 'json', content: notebook });
  } catch (error) {
    return fail(`Restored as kernel ${kernelId}, but the new notebook could not be saved`, error);
  }
  const opened = await commands
    .execute('docmanager:open', {
      path,
      factory: 'Notebook',
      kernel: { id: kernelId, name: snapshot.kernel_name }
    })
    .catch(error => fail(`Restored as kernel ${kernelId}, but ${path} did not open`, error));
  if (opened instanceof NotebookPanel && snapshot.running_cell) {
    await opened.context.ready;
    routeResumedOutput(opened, snapshot.running_cell);
  }
  Notification.update({
    id,
    type: 'success',
    message: `Restored “${name}” as ${PathExt.basename(path)}, with a kernel of its own`,
    autoClose: 5000
  });
  return path;
}

const LABEL_MAX = 200; // as the server allows (jupyter/validation.py)

namespace Private {
  export function button(text: string, className: string, click: () => void): HTMLButtonElement {
    const button = document.createElement('button');
    button.className = `jp-mod-styled ${className}`;
    button.textContent = text;
    button.addEventListener('click', click);
    return button;
  }

  /** A notebook with no cells for the snapshot's kernel (one that stored no notebook). */
  export function emptyNotebook(snapshot: ISnapshot): nbformat.INotebookContent {
    return {
      cells: [],
      metadata: { kernelspec: { name: snapshot.kernel_name, display_name: snapshot.kernel_name } },
      nbformat: 4,
      nbformat_minor: 5
    };
  }

  /** "<dir>/<name> (<snapshot>).ipynb", numbered if taken. */
  export async function freePath(
    contents: Contents.IManager,
    original: string,
    snapshot: ISnapshot
  ): Promise<string> {
    const dir = PathExt.dirname(original);
    const stem = PathExt.basename(original, PathExt.extname(original));
    const tag = snapshotName(snapshot)
      .replace(/[\\/:*?"<>|\x00-\x1f]+/g, '-')
      .slice(0, 40)
      .trim();
    for (let n = 1; ; n++) {
      const path = PathExt.join(dir, `${stem} (${tag}${n > 1 ? ` ${n}` : ''}).ipynb`);
      const exists = await contents.get(path, { content: false }).then(
        () => true,
        () => false
      );
      if (!exists) {
        return path;
      }
    }
  }
}
