// A refused snapshot, told as what the user can do: the server sends, with its 409, the kind
// of each refused resource and advice for it (jupyter_ckpt/jupyter/advice.py). The
// notification says what is in the way in a few words and offers "What to do", a dialog with
// the advice and, folded away, the engine's technical lines.

import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { CkptApiError, IRefusal } from './api';

/** The refusals of a failed request, or null when it was not a refusal with advice. */
export function refusalsOf(error: unknown): IRefusal[] | null {
  if (!(error instanceof CkptApiError) || !error.body.advice) {
    return null;
  }
  const refusals = error.body.refusals ?? [];
  return refusals.length
    ? refusals
    : [
        {
          pid: 0,
          where: '',
          kind: error.body.kind ?? '',
          why: '',
          detail: error.message,
          advice: error.body.advice
        }
      ];
}

/** "a POSIX timer", "an io_uring and a unix stream socket": what holds the kernel back. */
export function heldKinds(refusals: IRefusal[]): string {
  const kinds = [...new Set(refusals.map(r => r.kind).filter(k => k))];
  if (!kinds.length) {
    return 'something that cannot be saved';
  }
  const shown = kinds.slice(0, 2).join(' and ');
  return kinds.length > 2 ? `${shown} and ${kinds.length - 2} more` : shown;
}

/**
 * Turn notification `id` into the report of a refused snapshot of `name`'s kernel, with a
 * "What to do" action. True if `error` was such a refusal (else nothing changed).
 */
export function showRefusal(id: string, name: string, error: unknown): boolean {
  const refusals = refusalsOf(error);
  if (!refusals) {
    return false;
  }
  Notification.update({
    id,
    type: 'error',
    message: `The kernel of ${name} cannot be snapshotted now: it holds ${heldKinds(refusals)}.`,
    autoClose: false,
    progress: undefined,
    actions: [
      {
        label: 'What to do',
        caption: 'What holds the kernel back, and how to release it',
        callback: () => void showAdvice(name, refusals)
      }
    ]
  });
  return true;
}

/** A dialog with the advice for each kind refused, and the technical lines folded away. */
export async function showAdvice(name: string, refusals: IRefusal[]): Promise<void> {
  const body = document.createElement('div');
  body.className = 'jp-CkptAdvice';
  const seen = new Set<string>();
  for (const refusal of refusals) {
    if (seen.has(refusal.advice)) {
      continue;
    }
    seen.add(refusal.advice);
    const paragraph = document.createElement('p');
    paragraph.className = 'jp-CkptAdvice-text';
    paragraph.textContent = refusal.advice;
    body.appendChild(paragraph);
  }
  const details = document.createElement('details');
  details.className = 'jp-CkptAdvice-details';
  const summary = document.createElement('summary');
  summary.textContent = 'Technical details';
  const lines = document.createElement('pre');
  lines.className = 'jp-CkptAdvice-technical';
  lines.textContent = refusals.map(r => r.detail).join('\n');
  details.append(summary, lines);
  body.appendChild(details);
  await showDialog({
    title: `Why the kernel of ${name} cannot be snapshotted`,
    body: new Widget({ node: body }),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
}
