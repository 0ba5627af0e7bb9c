// Progress of a pending checkpoint or restore: the server answers the POST only once the
// work is done, so while it is pending we poll GET /api/ckpt/operations for the matching
// operation and report its phase and byte counts.

import { CkptClient, IOperation } from './api';

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
