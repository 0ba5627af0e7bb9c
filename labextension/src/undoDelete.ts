// Undo after Delete: the server keeps a deleted snapshot in its trash for a while
// (CheckpointConfig.trash_seconds, minutes), so the notification saying it was deleted
// offers Undo, which takes it back (POST snapshots/<id>/undelete) and has the notebook
// record it again. The delete itself is done at once, so that every tab and a reloaded
// page agree that it is gone; only the Undo button is lost with the page.

import { Notification } from '@jupyterlab/apputils';

import { CkptClient, ISnapshot } from './api';

/** How long the Undo of a delete is offered (the server keeps the snapshot longer). */
export const UNDO_MS = 10_000;

/** Say `snapshot` was deleted, offering Undo; `restored` runs once it is back. */
export function notifyDeleted(
  client: CkptClient,
  snapshot: ISnapshot,
  label: string,
  restored: (snapshot: ISnapshot) => void
): void {
  Notification.success(`Deleted snapshot "${label}"`, {
    autoClose: UNDO_MS,
    actions: [
      {
        label: 'Undo',
        caption: 'Bring the snapshot back',
        callback: () => {
          client.undeleteSnapshot(snapshot.id).then(
            back => {
              restored(back);
              Notification.success(`Snapshot "${label}" is back`, { autoClose: 3000 });
            },
            error =>
              Notification.error(
                `Could not bring "${label}" back: ${(error as Error).message}`,
                { autoClose: false }
              )
          );
        }
      }
    ]
  });
}
