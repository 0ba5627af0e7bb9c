// Progress of a pending checkpoint or restore: the server answers the POST only once the
// work is done, so while it is pending we poll GET /api/ckpt/operations for the matching
// operation and report its phase and byte counts.

import { Notification } from '@jupyterlab/apputils';

import { CkptApiError, CkptClient, IOperation } from './api';
import { formatBytes } from './format';

export class OperationWatcher {
  /**
   * Start polling at once; `onProgress` gets each state of the first operation that
   * `match` accepts. Call `stop()` when the request has settled.
   */
  constructor(
    private readonly _client: CkptClient,
    private readonly _match: (op: IOperation) => boolean,
    private readonly _onProgress: (op: IOperation) => void,
    private readonly _intervalMs = 400
  ) {
    this._schedule(150);
  }

  stop(): void {
    this._stopped = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _schedule(delay: number): void {
    if (!this._stopped) {
      this._timer = setTimeout(() => void this._poll(), delay);
    }
  }

  private async _poll(): Promise<void> {
    this._timer = null;
    try {
      const ops = await this._client.listOperations();
      const op = ops.find(this._match);
      if (op && !this._stopped) {
        this._onProgress(op);
      }
    } catch {
      // progress is best effort: the pending request reports the outcome
    }
    this._schedule(this._intervalMs);
  }

  private _stopped = false;
  private _timer: ReturnType<typeof setTimeout> | null = null;
}

/**
 * Show a running checkpoint's progress in notification `id`, with a Cancel action while the
 * server says it can be cancelled (the kernel then runs on unchanged, nothing is stored).
 */
export function showCheckpointProgress(client: CkptClient, id: string, op: IOperation): void {
  const done = op.bytes_done || 0;
  const total = op.bytes_total || 0;
  let message = `Taking a snapshot… ${formatBytes(done)}`;
  if (total > 0) {
    message += ` of ${formatBytes(total)}`;
  }
  if (done === 0 && op.phase) {
    message = `Taking a snapshot… (${op.phase})`;
  }
  if (op.cancelled) {
    message = 'Cancelling the snapshot…';
  }
  Notification.update({
    id,
    message,
    type: 'in-progress',
    autoClose: false,
    progress: total > 0 ? Math.min(1, done / total) : undefined,
    actions:
      op.cancellable && !op.cancelled
        ? [
            {
              label: 'Cancel',
              caption: 'Stop taking this snapshot; the kernel runs on unchanged',
              callback: event => {
                event.preventDefault(); // keep the notification: it reports the outcome
                Notification.update({ id, message: 'Cancelling the snapshot…', actions: [] });
                void client.cancelOperation(op.id).catch(() => {
                  // finished meanwhile: the pending request reports the outcome
                });
              }
            }
          ]
        : []
  });
}

/** Whether a failed checkpoint request failed because it was cancelled. */
export function wasCancelled(error: unknown): boolean {
  return error instanceof CkptApiError && error.body.reason === 'Cancelled';
}
