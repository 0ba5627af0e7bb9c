// Snapshots made on another host: the panel marks them "made on <host>" (the server says
// which host it runs on, GET host), and the restore dialog shows the server's host verdict
// (GET snapshots/<id>/check): one line per difference with this host, the fatal ones as
// errors, and no Restore when the snapshot cannot be restored here.

import { Widget } from '@lumino/widgets';

import { CkptClient, IHostVerdict, ISnapshot } from './api';

/** This server's host name, asked once per client (null while it cannot be told). */
export async function serverHostname(client: CkptClient): Promise<string | null> {
  let known = Private.hostnames.get(client);
  if (known === undefined) {
    known = client.getHost().then(
      host => host.hostname,
      () => {
        Private.hostnames.delete(client); // asked again next time
        return null;
      }
    );
    Private.hostnames.set(client, known);
  }
  return known;
}

/** The host a snapshot was made on when it is not `here`, else null. */
export function madeElsewhere(snapshot: ISnapshot, here: string | null): string | null {
  const there = snapshot.host?.hostname;
  return here !== null && typeof there === 'string' && there !== here ? there : null;
}

/** The panel's "made on <host>" badge of a snapshot made elsewhere (none otherwise). */
export function hostMarks(snapshot: ISnapshot, here: string | null): HTMLElement[] {
  const there = madeElsewhere(snapshot, here);
  if (there === null) {
    return [];
  }
  const badge = document.createElement('span');
  badge.className = 'jp-CkptSnapshot-host';
  badge.textContent = `made on ${there}`;
  badge.title =
    `Taken on host ${there}, not on this server's host (${here}): ` +
    'the restore dialog says whether it can be restored here';
  return [badge];
}

/** The verdict, or null when the server cannot give one (the restore then decides). */
export async function fetchVerdict(
  client: CkptClient,
  snapshot: ISnapshot
): Promise<IHostVerdict | null> {
  try {
    return await client.checkSnapshot(snapshot.id);
  } catch {
    return null;
  }
}

/** The verdict's lines for the restore dialog (nothing when the hosts do not differ). */
export function verdictNode(verdict: IHostVerdict): HTMLElement | null {
  if (!verdict.lines.length) {
    return null;
  }
  const node = document.createElement('div');
  node.className = 'jp-CkptVerdict';
  const intro = document.createElement('p');
  intro.className = 'jp-CkptVerdict-summary';
  intro.textContent = verdict.restorable
    ? 'This host differs from the one the snapshot was made on; it can be restored here:'
    : 'This snapshot cannot be restored on this host:';
  const list = document.createElement('ul');
  list.className = 'jp-CkptVerdict-lines';
  for (const line of verdict.lines) {
    const item = document.createElement('li');
    item.className = line.fatal ? 'jp-CkptVerdict-line jp-mod-error' : 'jp-CkptVerdict-line';
    item.textContent = line.fatal ? `refused: ${line.text}` : line.text;
    list.append(item);
  }
  node.append(intro, list);
  return node;
}

/**
 * Once the dialog `body` sits in is shown, have it check its validity: the fatal lines
 * (class jp-mod-error) make the dialog disable its accept button and refuse to accept,
 * by click or Enter. (Its caller checks the verdict again.)
 */
export function refuseAccept(body: Widget, why: string): void {
  requestAnimationFrame(() => {
    body.node.dispatchEvent(new Event('input', { bubbles: true }));
    const dialog = body.node.closest('.jp-Dialog');
    for (const button of dialog?.querySelectorAll<HTMLButtonElement>(
      '.jp-Dialog-footer .jp-mod-accept'
    ) ?? []) {
      button.disabled = true;
      button.title = why;
    }
  });
}

namespace Private {
  export const hostnames = new WeakMap<CkptClient, Promise<string | null>>();
}
