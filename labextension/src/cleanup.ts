// Retention: "Clean up…" in the panel deletes the snapshots of the notebook taken more than
// a chosen time ago, in one request (POST snapshots/delete), after showing how many that
// is; the notification offers Undo, as for one snapshot (the server's trash).

import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { CkptActions } from './actions';
import { ISnapshot } from './api';
import { UNDO_MS } from './undoDelete';

const UNITS: [string, number][] = [
  ['days', 86400],
  ['hours', 3600],
  ['minutes', 60]
];

/** Ask for an age, delete the notebook's snapshots older than it; `changed` after each step. */
export async function cleanUp(
  actions: CkptActions,
  panel: NotebookPanel,
  snapshots: ISnapshot[],
  changed: () => void
): Promise<void> {
  const body = new AgeChooser(snapshots);
  const answer = await showDialog<number | null>({
    title: 'Clean up kernel snapshots',
    body,
    buttons: [
      Dialog.cancelButton(),
      Dialog.warnButton({ label: 'Delete', ariaLabel: 'Delete old snapshots' })
    ]
  });
  if (!answer.button.accept || answer.value === null) {
    return;
  }
  let deleted: string[];
  try {
    deleted = (
      await actions.client.deleteSnapshots({
        older_than_seconds: answer.value,
        notebook_path: panel.context.path
      })
    ).deleted;
  } catch (error) {
    Notification.error(`Could not delete old snapshots: ${(error as Error).message}`, {
      autoClose: false
    });
    return;
  }
  const gone = snapshots.filter(snapshot => deleted.includes(snapshot.id));
  for (const snapshot of gone) {
    CkptActions.removeRemembered(panel, snapshot.id);
  }
  changed();
  const count = `${deleted.length} snapshot${deleted.length === 1 ? '' : 's'}`;
  Notification.success(`Deleted ${count}`, {
    autoClose: UNDO_MS,
    actions: deleted.length
      ? [
          {
            label: 'Undo',
            caption: 'Bring them back',
            callback: () => {
              void Promise.all(
                deleted.map(id =>
                  actions.client.undeleteSnapshot(id).then(
                    snapshot => snapshot,
                    () => null
                  )
                )
              ).then(results => {
                let back = 0;
                for (const snapshot of results) {
                  if (snapshot) {
                    back++;
                    if (!panel.isDisposed) {
                      CkptActions.remember(panel, snapshot);
                    }
                  }
                }
                changed();
                if (back === results.length) {
                  Notification.success(`${count} back`, { autoClose: 3000 });
                } else {
                  Notification.error(`Only ${back} of ${count} could be brought back`, {
                    autoClose: false
                  });
                }
              });
            }
          }
        ]
      : []
  });
}

/** The dialog's body: an age and its unit, and how many snapshots that deletes. */
class AgeChooser extends Widget {
  constructor(snapshots: ISnapshot[]) {
    super();
    this.addClass('jp-CkptCleanup');
    this._snapshots = snapshots;
    const row = document.createElement('label');
    row.append('Delete the snapshots of this notebook taken more than ');
    this._amount = document.createElement('input');
    this._amount.type = 'number';
    this._amount.min = '0';
    this._amount.step = 'any';
    this._amount.required = true;
    this._amount.value = '7';
    this._amount.className = 'jp-mod-styled jp-CkptCleanup-amount';
    this._amount.setAttribute('aria-label', 'Age');
    this._unit = document.createElement('select');
    this._unit.className = 'jp-mod-styled jp-CkptCleanup-unit';
    this._unit.setAttribute('aria-label', 'Unit');
    for (const [name, seconds] of UNITS) {
      const option = document.createElement('option');
      option.value = String(seconds);
      option.textContent = name;
      this._unit.append(option);
    }
    row.append(this._amount, ' ', this._unit, ' ago.');
    this._summary = document.createElement('p');
    this._summary.className = 'jp-CkptCleanup-summary';
    this.node.append(row, this._summary);
    this._amount.addEventListener('input', () => this._update());
    this._unit.addEventListener('change', () => this._update());
    this._update();
  }

  getValue(): number | null {
    const seconds = Number(this._amount.value) * Number(this._unit.value);
    return this._amount.value !== '' && isFinite(seconds) && seconds >= 0 ? seconds : null;
  }

  private _update(): void {
    const seconds = this.getValue();
    if (seconds === null) {
      this._summary.textContent = '';
      return;
    }
    const cutoff = Date.now() - seconds * 1000;
    const old = this._snapshots.filter(snapshot => new Date(snapshot.created).getTime() < cutoff);
    this._summary.textContent =
      `That is ${old.length} of the ${this._snapshots.length} snapshots listed ` +
      '(Undo brings them back for a few seconds).';
  }

  private readonly _snapshots: ISnapshot[];
  private readonly _amount: HTMLInputElement;
  private readonly _unit: HTMLSelectElement;
  private readonly _summary: HTMLParagraphElement;
}
