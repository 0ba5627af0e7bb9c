// Client for the jupyter-ckpt REST API (/api/ckpt), served by the jupyter_ckpt.jupyter
// server extension. Every request goes through ServerConnection.makeRequest, so the
// server's base URL, token and XSRF cookie are applied as for JupyterLab's own requests.

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A snapshot of a kernel, as the server describes it. */
export interface ISnapshot {
  id: string;
  label: string;
  kernel_id: string;
  kernel_name: string;
  notebook_path: string | null;
  /** ISO 8601 time the snapshot was taken. */
  created: string;
  /** Bytes of kernel state the snapshot holds (memory, files), before deduplication. */
  size_bytes: number;
  /** Bytes the snapshot added to the store: its cost on disk. */
  stored_bytes?: number;
  execution_count: number | null;
  /** How long the kernel was frozen while it was saved, in milliseconds. */
  freeze_ms: number | null;
  /** The cell the kernel was running when the snapshot was taken (it resumes on restore). */
  running_cell?: IRunningCell | null;
  /** Whether the notebook's cells and outputs were stored with the snapshot. */
  has_notebook?: boolean;
  /** The snapshot the kernel was at when this one was taken (restored from, or its
   * previous one), if any. */
  parent?: string | null;
  /** The host it was made on (its name, kernel release, ...). */
  host?: { hostname?: string; kernel?: string; [key: string]: unknown } | null;
  [key: string]: unknown;
}

/** The host the server runs on. */
export interface IHost {
  hostname: string;
  kernel: string;
}

/** Whether a snapshot can be restored on the server's host, and what differs from the
 * host it was made on: one line each, `fatal` when it stops the restore. */
export interface IHostVerdict {
  restorable: boolean;
  lines: { text: string; fatal: boolean }[];
}

/** A cell that a kernel runs: its execution count, the msg_id of its execute_request (the
 * parent of its output) and, when a notebook sent it, the cell's id. */
export interface IRunningCell {
  execution_count: number | null;
  msg_id: string;
  cell_id?: string | null;
}

/** What the server knows of a running kernel's past. */
export interface IKernelOrigin {
  kernel_id: string;
  /** The snapshot the kernel was restored from; null for a kernel started afresh. */
  restored_from: string | null;
  /** The snapshot the kernel came from or took last: the parent of its next one. */
  position?: string | null;
  running_cell: IRunningCell | null;
}

/** What a checkpoint request may carry besides the label. */
export interface ICheckpointExtras {
  /** The notebook (nbformat 4 JSON) to store with the snapshot. */
  notebook?: unknown;
  /** The execute requests the notebook waits on, with their cells. */
  pending_cells?: { msg_id: string; cell_id: string }[];
}

/** A checkpoint or restore that the server is working on. */
export interface IOperation {
  id: string;
  kind: 'checkpoint' | 'restore' | 'check';
  kernel_id: string | null;
  snapshot_id: string | null;
  phase: string;
  bytes_done: number;
  bytes_total: number;
  started: string;
  /** Whether DELETE operations/<id> may cancel it (checkpoints). */
  cancellable?: boolean;
  cancelled?: boolean;
}

/** One thing that blocks a snapshot, as the server names it, with what the user can do. */
export interface IRefusal {
  pid: number;
  where: string;
  kind: string;
  why: string;
  /** The engine's technical line. */
  detail: string;
  advice: string;
}

/** The JSON body of a failed API call (refusals: see advice.py on the server). */
export interface IErrorBody {
  message?: string;
  reason?: string;
  kind?: string;
  advice?: string;
  refusals?: IRefusal[];
}

/** What a restore answers: the kernel now running the snapshot. */
export interface IRestoreResult {
  kernel_id: string;
  [key: string]: unknown;
}

/**
 * A failed API call. `status` is the HTTP status, or 0 when the server could not be
 * reached; `message` is the server's own message when it sent one.
 */
export class CkptApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly body: IErrorBody = {}
  ) {
    super(message);
    this.name = 'CkptApiError';
  }
}

/** The REST API under `{baseUrl}api/ckpt`. */
export class CkptClient {
  constructor(options: CkptClient.IOptions = {}) {
    this.serverSettings =
      options.serverSettings ?? ServerConnection.makeSettings();
  }

  readonly serverSettings: ServerConnection.ISettings;

  /** Checkpoint a running kernel; resolves once the snapshot is written. */
  checkpoint(kernelId: string, label = '', extras: ICheckpointExtras = {}): Promise<ISnapshot> {
    return this._request<ISnapshot>(
      ['kernels', kernelId, 'snapshots'],
      { method: 'POST', body: JSON.stringify({ label, ...extras }) },
      [201, 200]
    );
  }

  /** Snapshots, newest first; only those of one notebook when a path is given. */
  listSnapshots(notebookPath?: string): Promise<ISnapshot[]> {
    const query =
      notebookPath === undefined
        ? ''
        : URLExt.objectToQueryString({ notebook_path: notebookPath });
    return this._request<ISnapshot[]>(['snapshots'], { method: 'GET' }, [200], query);
  }

  getSnapshot(snapshotId: string): Promise<ISnapshot> {
    return this._request<ISnapshot>(['snapshots', snapshotId], { method: 'GET' }, [200]);
  }

  /**
   * Bring a snapshot back as a running kernel. Without `kernelId` the server picks the id
   * (the original one if free, otherwise a new one for a fork).
   */
  restore(snapshotId: string, kernelId?: string): Promise<IRestoreResult> {
    const body = kernelId === undefined ? {} : { kernel_id: kernelId };
    return this._request<IRestoreResult>(
      ['snapshots', snapshotId, 'restore'],
      { method: 'POST', body: JSON.stringify(body) },
      [200]
    );
  }

  /** The host verdict of a snapshot: can the server restore it, and what differs. */
  checkSnapshot(snapshotId: string): Promise<IHostVerdict> {
    return this._request<IHostVerdict>(['snapshots', snapshotId, 'check'], { method: 'GET' }, [200]);
  }

  /** The host the server runs on. */
  getHost(): Promise<IHost> {
    return this._request<IHost>(['host'], { method: 'GET' }, [200]);
  }

  /** The notebook (nbformat 4 JSON) stored with a snapshot; 404 when it has none. */
  getSnapshotNotebook(snapshotId: string): Promise<Record<string, unknown>> {
    return this._request<Record<string, unknown>>(
      ['snapshots', snapshotId, 'notebook'],
      { method: 'GET' },
      [200]
    );
  }

  /** Which snapshot a running kernel was restored from, and the cell it runs. */
  getKernelOrigin(kernelId: string): Promise<IKernelOrigin> {
    return this._request<IKernelOrigin>(['kernels', kernelId], { method: 'GET' }, [200]);
  }

  /** Give a snapshot another label ('' for none); resolves with the snapshot. */
  relabelSnapshot(snapshotId: string, label: string): Promise<ISnapshot> {
    return this._request<ISnapshot>(
      ['snapshots', snapshotId],
      { method: 'PATCH', body: JSON.stringify({ label }) },
      [200]
    );
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    await this._request<null>(['snapshots', snapshotId], { method: 'DELETE' }, [204, 200]);
  }

  /** Move several snapshots to the trash: those named, or those older than an age (of
   * one notebook when given). Each can be undeleted. */
  deleteSnapshots(
    which: { ids: string[] } | { older_than_seconds: number; notebook_path?: string }
  ): Promise<{ deleted: string[]; missing: string[] }> {
    return this._request<{ deleted: string[]; missing: string[] }>(
      ['snapshots', 'delete'],
      { method: 'POST', body: JSON.stringify(which) },
      [200]
    );
  }

  /** Take a deleted snapshot back out of the server's trash. */
  undeleteSnapshot(snapshotId: string): Promise<ISnapshot> {
    return this._request<ISnapshot>(
      ['snapshots', snapshotId, 'undelete'],
      { method: 'POST', body: '{}' },
      [200]
    );
  }

  /** Cancel a running checkpoint: its pending request then fails (reason Cancelled). */
  async cancelOperation(operationId: string): Promise<void> {
    await this._request<IOperation>(['operations', operationId], { method: 'DELETE' }, [202]);
  }

  /** Checkpoints and restores in progress on the server. */
  listOperations(): Promise<IOperation[]> {
    return this._request<IOperation[]>(['operations'], { method: 'GET' }, [200]);
  }

  /** The URL of an API path (each part is URL-encoded). */
  url(parts: string[], query = ''): string {
    return (
      URLExt.join(
        this.serverSettings.baseUrl,
        'api',
        'ckpt',
        ...parts.map(encodeURIComponent)
      ) + query
    );
  }

  private async _request<T>(
    parts: string[],
    init: RequestInit,
    expected: number[],
    query = ''
  ): Promise<T> {
    const url = this.url(parts, query);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.serverSettings);
    } catch (error) {
      throw new CkptApiError(
        `Could not reach the Jupyter server: ${(error as Error).message}`,
        0
      );
    }
    const text = await response.text();
    if (!expected.includes(response.status)) {
      throw new CkptApiError(
        Private.errorMessage(response, text),
        response.status,
        Private.errorBody(text)
      );
    }
    if (text === '') {
      return null as T;
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new CkptApiError(
        `The server sent a response that is not JSON (HTTP ${response.status})`,
        response.status
      );
    }
  }
}

export namespace CkptClient {
  export interface IOptions {
    /** Defaults to ServerConnection.makeSettings(): the page's server, base URL and token. */
    serverSettings?: ServerConnection.ISettings;
  }
}

namespace Private {
  /** The server's JSON error body, or nothing. */
  export function errorBody(text: string): IErrorBody {
    try {
      const data = JSON.parse(text);
      return data && typeof data === 'object' && !Array.isArray(data) ? data : {};
    } catch {
      return {};
    }
  }

  /** The server's {"message": ...} if it sent one, else the HTTP status. */
  export function errorMessage(response: Response, text: string): string {
    try {
      const data = JSON.parse(text);
      if (data && typeof data.message === 'string' && data.message !== '') {
        return data.message;
      }
      if (data && typeof data.reason === 'string' && data.reason !== '') {
        return data.reason;
      }
    } catch {
      // not JSON: fall through
    }
    const reason = response.statusText ? ` ${response.statusText}` : '';
    if (response.status === 404) {
      // no JSON: the route itself is unknown, not a snapshot or kernel
      return `HTTP 404${reason}: is the jupyter-ckpt server extension enabled?`;
    }
    return `HTTP ${response.status}${reason}`;
  }
}
