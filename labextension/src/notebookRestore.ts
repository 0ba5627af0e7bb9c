// Keeping a notebook and its kernel together around snapshots:
// - a checkpoint sends the notebook's live cells and outputs (stored with the snapshot) and
//   the execute requests the notebook waits on, so that a snapshot taken while a cell runs
//   names that cell ("taken during In [7]");
// - the restore dialog offers "kernel only" or "kernel and notebook", and, for a snapshot
//   taken during a cell, says that the cell resumes and offers to interrupt it;
// - "kernel and notebook" puts the snapshot's cells and outputs back in place, as one step
//   that the notebook's "Undo Cell Operation" (Z) takes back;
// - the restored kernel runs the resumed cell to its end and publishes its output with the
//   original request as parent, which no future of this page waits on any more: it is
//   routed into the cell by that request's msg_id.

import { Dialog, showDialog } from '@jupyterlab/apputils';
import type { Cell, CodeCell } from '@jupyterlab/cells';
import type * as nbformat from '@jupyterlab/nbformat';
import { NotebookPanel } from '@jupyterlab/notebook';
import { KernelMessage } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { CkptClient, ICheckpointExtras, IHostVerdict, IRunningCell, ISnapshot } from './api';
import { refuseAccept, verdictNode } from './hostVerdict';

/** What a checkpoint of `panel`'s kernel sends besides its label. */
export function checkpointExtras(panel: NotebookPanel): ICheckpointExtras {
  const model = panel.context.isDisposed ? null : panel.context.model;
  const pending: { msg_id: string; cell_id: string }[] = [];
  for (const cell of panel.content.widgets) {
    const future = cell.model.type === 'code' ? (cell as CodeCell).outputArea.future : null;
    if (future && !future.isDisposed) {
      pending.push({ msg_id: future.msg.header.msg_id, cell_id: cell.model.id });
    }
  }
  return {
    ...(model ? { notebook: model.toJSON() } : {}),
    ...(pending.length ? { pending_cells: pending } : {})
  };
}

/** "taken during In [7]" for a snapshot taken while a cell ran, else ''. */
export function runningMark(snapshot: Pick<ISnapshot, 'running_cell'>): string {
  const running = snapshot.running_cell;
  if (!running) {
    return '';
  }
  const count = running.execution_count;
  return count === null || count === undefined ? 'taken during a cell' : `taken during In [${count}]`;
}

/** What the user chose in the restore dialog. */
export interface IRestoreChoice {
  /** Also put the snapshot's cells and outputs back into the notebook. */
  withNotebook: boolean;
  /** Interrupt the cell the restored kernel resumes. */
  interrupt: boolean;
}

/**
 * Ask before a restore: `intro` says what happens to the kernel; the dialog adds what the
 * snapshot holds besides (the notebook, a running cell) and the choices about them.
 * Null when cancelled.
 */
export async function askRestore(
  snapshot: ISnapshot,
  intro: string,
  verdict: IHostVerdict | null = null
): Promise<IRestoreChoice | null> {
  const body = new RestoreOptions(snapshot, intro);
  const lines = verdict ? verdictNode(verdict) : null;
  if (lines) {
    body.node.insertBefore(lines, body.node.children[1] ?? null);
  }
  if (verdict && !verdict.restorable) {
    refuseAccept(body, 'This snapshot cannot be restored on this host (see above)');
  }
  const answer = await showDialog<IRestoreChoice>({
    title: 'Restore kernel snapshot',
    body,
    buttons: [
      Dialog.cancelButton(),
      Dialog.warnButton({ label: 'Restore', ariaLabel: 'Restore snapshot' })
    ]
  });
  return answer.button.accept && (!verdict || verdict.restorable) ? answer.value : null;
}

/** The restore dialog's body: the explanation and the choices. */
class RestoreOptions extends Widget {
  constructor(snapshot: ISnapshot, intro: string) {
    super();
    this.addClass('jp-CkptRestoreOptions');
    const text = document.createElement('p');
    text.textContent = intro;
    this.node.append(text);

    if (snapshot.has_notebook) {
      const group = document.createElement('fieldset');
      group.className = 'jp-CkptRestoreOptions-mode';
      const legend = document.createElement('legend');
      legend.textContent = 'What to restore';
      group.append(legend);
      Private.radio(
        group,
        'kernel',
        'Kernel only: the cells and outputs stay as they are now',
        true
      );
      this._withNotebook = Private.radio(
        group,
        'notebook',
        'Kernel and notebook: cells and outputs as they were at the snapshot ' +
          '(Undo Cell Operation, Z, brings today’s back)',
        false
      );
      this.node.append(group);
    }

    const mark = runningMark(snapshot);
    if (mark) {
      const running = document.createElement('p');
      running.className = 'jp-CkptRestoreOptions-running';
      running.textContent =
        `This snapshot was ${mark}: the cell resumes where it was and runs to its end ` +
        'in the restored kernel, its further output appears in that cell, and the kernel ' +
        'stays busy until then.';
      const label = document.createElement('label');
      this._interrupt = document.createElement('input');
      this._interrupt.type = 'checkbox';
      this._interrupt.className = 'jp-CkptRestoreOptions-interrupt';
      label.append(this._interrupt, ' Interrupt the cell once restored');
      this.node.append(running, label);
    }
  }

  getValue(): IRestoreChoice {
    return {
      withNotebook: Boolean(this._withNotebook?.checked),
      interrupt: Boolean(this._interrupt?.checked)
    };
  }

  private _withNotebook: HTMLInputElement | null = null;
  private _interrupt: HTMLInputElement | null = null;
}

/**
 * Replace the notebook's cells (and outputs) by those of `notebook` (nbformat JSON), in
 * one transaction that the notebook's undo takes back as a whole.
 */
export function replaceCells(panel: NotebookPanel, notebook: Record<string, unknown>): void {
  const cells = Array.isArray(notebook.cells) ? (notebook.cells as nbformat.ICell[]) : [];
  const shared = panel.content.model?.sharedModel;
  if (!shared) {
    throw new Error('the notebook is closed');
  }
  // (the shared notebook's Yjs undo manager, which its interface does not declare)
  const undo = (shared as unknown as { undoManager?: { stopCapturing(): void } }).undoManager;
  undo?.stopCapturing(); // a step of its own, not merged with the last edit
  shared.transact(() => {
    const before = shared.cells.length;
    shared.insertCells(before, cells.map(cell => ({ ...cell })));
    shared.deleteCellRange(0, before);
  });
  undo?.stopCapturing();
}

/**
 * Put the output that a restored kernel publishes for the cell it resumed into that cell
 * of `panel` (found by the id the snapshot recorded), until the cell ends. Returns a
 * function that stops routing early.
 */
export function routeResumedOutput(panel: NotebookPanel, running: IRunningCell): () => void {
  const session = panel.sessionContext;
  const find = (): CodeCell | null => {
    const cell = panel.content.widgets.find(
      (widget: Cell) => widget.model.id === running.cell_id && widget.model.type === 'code'
    );
    return cell ? (cell as CodeCell) : null;
  };
  const start = find();
  if (start) {
    start.model.executionState = 'running';
    start.setPrompt('*');
  }
  const stop = () => {
    session.iopubMessage.disconnect(onMessage);
    panel.disposed.disconnect(stop);
  };
  const onMessage = (_: unknown, msg: KernelMessage.IMessage) => {
    if ((msg.parent_header as Partial<KernelMessage.IHeader>)?.msg_id !== running.msg_id) {
      return;
    }
    const cell = find();
    const native = cell?.outputArea.future;
    if (native && !native.isDisposed && native.msg.header.msg_id === running.msg_id) {
      return; // the request is still this page's own: its future shows the output
    }
    const kind = msg.header.msg_type;
    if (kind === 'status') {
      if ((msg.content as { execution_state?: string }).execution_state === 'idle') {
        if (cell) {
          cell.model.executionState = 'idle';
          cell.model.executionCount = running.execution_count ?? null;
          cell.setPrompt(`${running.execution_count ?? ''}`);
        }
        stop();
      }
      return;
    }
    if (!cell) {
      return;
    }
    if (kind === 'clear_output') {
      cell.model.outputs.clear((msg.content as { wait?: boolean }).wait ?? false);
    } else if (
      kind === 'stream' ||
      kind === 'display_data' ||
      kind === 'execute_result' ||
      kind === 'error'
    ) {
      const content = { ...(msg.content as Record<string, unknown>) };
      delete content.transient;
      cell.model.outputs.add({ output_type: kind, ...content } as nbformat.IOutput);
    }
  };
  session.iopubMessage.connect(onMessage);
  panel.disposed.connect(stop);
  return stop;
}

namespace Private {
  export function radio(
    group: HTMLFieldSetElement,
    value: string,
    text: string,
    checked: boolean
  ): HTMLInputElement {
    const label = document.createElement('label');
    label.className = 'jp-CkptRestoreOptions-choice';
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'jp-ckpt-restore-mode';
    input.value = value;
    input.checked = checked;
    label.append(input, ` ${text}`);
    group.append(label);
    return input;
  }
}

/** The marks of a snapshot in the panel's list: taken during a cell, notebook stored. */
export function snapshotMarks(snapshot: ISnapshot): HTMLElement[] {
  const marks: HTMLElement[] = [];
  const mark = runningMark(snapshot);
  if (mark) {
    const running = document.createElement('span');
    running.className = 'jp-CkptSnapshot-running';
    running.textContent = mark;
    running.title = 'A cell was running: restored, the kernel resumes it and runs it to its end';
    marks.push(running);
  }
  if (snapshot.has_notebook) {
    const notebook = document.createElement('span');
    notebook.className = 'jp-CkptSnapshot-withNotebook';
    notebook.textContent = '+ cells';
    notebook.title =
      'The notebook’s cells and outputs are stored with it: a restore can bring them back';
    marks.push(notebook);
  }
  return marks;
}

/**
 * The panel's line saying which snapshot the notebook's current kernel was restored from,
 * as the server knows it (so it holds after a reload, and for restores made elsewhere);
 * the listed snapshot it came from gets the class jp-mod-current.
 */
export class KernelOrigin {
  constructor() {
    this.node = document.createElement('div');
    this.node.className = 'jp-CkptPanel-origin';
    this.node.hidden = true;
  }

  readonly node: HTMLDivElement;

  /** The id of the snapshot the current kernel was restored from, if known. */
  get snapshotId(): string | null {
    return this._snapshotId;
  }

  /** The snapshot the current kernel came from or took last, if known. */
  get position(): string | null {
    return this._position;
  }

  /** Ask the server about `kernelId`; name its snapshot among `snapshots`; mark it in `list`. */
  async update(
    client: CkptClient,
    kernelId: string | null,
    snapshots: readonly ISnapshot[],
    list: HTMLElement
  ): Promise<void> {
    const generation = ++this._generation;
    let from: string | null = null;
    let position: string | null = null;
    if (kernelId) {
      try {
        const origin = await client.getKernelOrigin(kernelId);
        from = origin.restored_from;
        position = origin.position === undefined ? from : origin.position;
      } catch {
        from = null; // an older server, or the kernel is gone: say nothing
      }
    }
    if (generation !== this._generation) {
      return;
    }
    this._snapshotId = from;
    this._position = position;
    const snapshot = snapshots.find(candidate => candidate.id === from);
    this.node.hidden = from === null;
    this.node.textContent = from === null ? '' : `Kernel restored from ${originName(snapshot)}`;
    this.node.title = from === null ? '' : `Snapshot ${from}`;
    for (const item of list.querySelectorAll<HTMLElement>('.jp-CkptSnapshot')) {
      item.classList.toggle('jp-mod-current', item.dataset.snapshotId === from);
    }
  }

  private _snapshotId: string | null = null;
  private _position: string | null = null;
  private _generation = 0;
}

/** How the origin line names a snapshot. */
function originName(snapshot: ISnapshot | undefined): string {
  if (!snapshot) {
    return 'a snapshot not listed here';
  }
  const count =
    snapshot.execution_count === null || snapshot.execution_count === undefined
      ? ''
      : ` (In [${snapshot.execution_count}])`;
  return snapshot.label ? `“${snapshot.label}”${count}` : `the snapshot at In [${snapshot.execution_count ?? '?'}]`;
}
