// Unit tests of the REST API wrapper (src/api.ts) against a fake fetch: the URLs, methods,
// bodies and headers it sends, and how it turns the server's answers into results or errors.

import { ServerConnection } from '@jupyterlab/services';
import { describe, expect, it } from 'vitest';

import { CkptApiError, CkptClient, ISnapshot } from '../src/api';
import {
  describeSize,
  formatAge,
  formatBytes,
  formatDuration,
  snapshotName,
  totalStored
} from '../src/format';

const BASE = 'http://127.0.0.1:8888/lab-test/';
const KERNEL = '5d5c1ab8-51b6-4d57-9d04-2c0e5b0e1a11';
const SNAP = '0123456789abcdef0123456789abcdef';

const SNAPSHOT: ISnapshot = {
  id: SNAP,
  label: 'before training',
  kernel_id: KERNEL,
  kernel_name: 'python3',
  notebook_path: 'work/analysis.ipynb',
  created: '2026-11-29T01:02:03Z',
  size_bytes: 1_234_567_890,
  execution_count: 7,
  freeze_ms: 850
};

interface ISeen {
  url: string;
  method: string;
  body: string;
  headers: Headers;
}

/** A client whose requests go to `reply`; `seen` records each request. */
function fakeClient(
  reply: (request: ISeen) => Response | Promise<Response>,
  token = 'secret-token'
): { client: CkptClient; seen: ISeen[] } {
  const seen: ISeen[] = [];
  const fakeFetch = async (input: RequestInfo, init?: RequestInit): Promise<Response> => {
    const request = new Request(input as any, init);
    const record: ISeen = {
      url: request.url,
      method: request.method,
      body: await request.text(),
      headers: request.headers
    };
    seen.push(record);
    return reply(record);
  };
  const serverSettings = ServerConnection.makeSettings({
    baseUrl: BASE,
    appUrl: BASE + 'lab',
    wsUrl: 'ws://127.0.0.1:8888/lab-test/',
    token,
    fetch: fakeFetch as any,
    Request,
    Headers
  });
  return { client: new CkptClient({ serverSettings }), seen };
}

/**
 * The URL without the cache-busting `?<timestamp>` that ServerConnection.makeRequest adds
 * to GET requests; other query parameters are kept.
 */
function route(url: string): string {
  const parsed = new URL(url);
  for (const key of [...parsed.searchParams.keys()]) {
    if (/^\d+$/.test(key) && parsed.searchParams.get(key) === '') {
      parsed.searchParams.delete(key);
    }
  }
  return parsed.toString();
}

function json(status: number, data: unknown, statusText = ''): Response {
  return new Response(JSON.stringify(data), {
    status,
    statusText,
    headers: { 'Content-Type': 'application/json' }
  });
}

describe('CkptClient', () => {
  it('checkpoints a kernel with a POST under the base URL, with the token', async () => {
    const { client, seen } = fakeClient(() => json(201, SNAPSHOT));
    const snapshot = await client.checkpoint(KERNEL, 'before training');
    expect(snapshot).toEqual(SNAPSHOT);
    expect(seen).toHaveLength(1);
    expect(seen[0].method).toBe('POST');
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/kernels/${KERNEL}/snapshots`);
    expect(JSON.parse(seen[0].body)).toEqual({ label: 'before training' });
    expect(seen[0].headers.get('Authorization')).toBe('token secret-token');
  });

  it('sends an empty label when none is given (the server then labels with the time)', async () => {
    const { client, seen } = fakeClient(() => json(201, SNAPSHOT));
    await client.checkpoint(KERNEL);
    expect(JSON.parse(seen[0].body)).toEqual({ label: '' });
  });

  it('passes the server message of a refused checkpoint through', async () => {
    const message = 'pid 4242 fd 9: inotify: cannot be checkpointed';
    const { client } = fakeClient(() => json(409, { message, reason: 'Conflict' }, 'Conflict'));
    const error = await client.checkpoint(KERNEL, 'x').catch(e => e);
    expect(error).toBeInstanceOf(CkptApiError);
    expect(error.status).toBe(409);
    expect(error.message).toBe(message);
  });

  it('keeps the kind, advice and blockers of a refusal with the error', async () => {
    const refusal = {
      pid: 4242,
      where: 'fd 9',
      kind: 'io_uring',
      why: 'anon_inode:[io_uring]: this kind of file is not supported',
      detail: 'pid 4242 fd 9: io_uring: anon_inode:[io_uring]: this kind of file is not supported',
      advice: 'Close the ring.'
    };
    const body = {
      message: `cannot checkpoint: ${refusal.detail}`,
      reason: 'Refused',
      kind: 'io_uring',
      advice: 'Close the ring.',
      refusals: [refusal]
    };
    const { client } = fakeClient(() => json(409, body, 'Conflict'));
    const error = await client.checkpoint(KERNEL).catch(e => e);
    expect(error.message).toBe(body.message);
    expect(error.body).toEqual(body);
    const { client: plain } = fakeClient(() => new Response('oops', { status: 500 }));
    expect((await plain.checkpoint(KERNEL).catch(e => e)).body).toEqual({});
  });

  it('cancels an operation with DELETE operations/<id>', async () => {
    const { client, seen } = fakeClient(() => json(202, { id: '7', cancelled: true }));
    await client.cancelOperation('7');
    expect(seen[0].method).toBe('DELETE');
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/operations/7`);
  });

  it('lists all snapshots, or those of one notebook with its path encoded', async () => {
    const { client, seen } = fakeClient(() => json(200, [SNAPSHOT]));
    expect(await client.listSnapshots()).toEqual([SNAPSHOT]);
    expect(seen[0].method).toBe('GET');
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/snapshots`);

    await client.listSnapshots('my dir/Untitled é&1.ipynb');
    const url = new URL(route(seen[1].url));
    expect(url.pathname).toBe('/lab-test/api/ckpt/snapshots');
    expect(url.searchParams.get('notebook_path')).toBe('my dir/Untitled é&1.ipynb');
  });

  it('gets one snapshot, and reports an unknown one as a 404 with its message', async () => {
    const { client, seen } = fakeClient(request =>
      route(request.url).endsWith(SNAP)
        ? json(200, SNAPSHOT)
        : json(404, { message: 'no snapshot ffff', reason: 'Not Found' }, 'Not Found')
    );
    expect(await client.getSnapshot(SNAP)).toEqual(SNAPSHOT);
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/snapshots/${SNAP}`);
    const error = await client.getSnapshot('ffff').catch(e => e);
    expect(error).toBeInstanceOf(CkptApiError);
    expect(error.status).toBe(404);
    expect(error.message).toBe('no snapshot ffff');
  });

  it('restores a snapshot, with or without a kernel id to restore under', async () => {
    const { client, seen } = fakeClient(() => json(200, { kernel_id: 'new-kernel-id' }));
    expect(await client.restore(SNAP)).toEqual({ kernel_id: 'new-kernel-id' });
    expect(seen[0].method).toBe('POST');
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/snapshots/${SNAP}/restore`);
    expect(JSON.parse(seen[0].body)).toEqual({});

    await client.restore(SNAP, KERNEL);
    expect(JSON.parse(seen[1].body)).toEqual({ kernel_id: KERNEL });
  });

  it('deletes a snapshot (204, no body)', async () => {
    const { client, seen } = fakeClient(() => new Response(null, { status: 204 }));
    await expect(client.deleteSnapshot(SNAP)).resolves.toBeUndefined();
    expect(seen[0].method).toBe('DELETE');
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/snapshots/${SNAP}`);
  });

  it('lists the running operations', async () => {
    const op = {
      id: '3',
      kind: 'checkpoint',
      kernel_id: KERNEL,
      snapshot_id: SNAP,
      phase: 'writing',
      bytes_done: 1_200_000_000,
      bytes_total: 2_000_000_000,
      started: '2026-11-29T01:02:03Z'
    };
    const { client, seen } = fakeClient(() => json(200, [op]));
    expect(await client.listOperations()).toEqual([op]);
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/operations`);
  });

  it('encodes ids so that they stay one path segment', async () => {
    const { client, seen } = fakeClient(() => json(200, SNAPSHOT));
    await client.getSnapshot('../kernels');
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/snapshots/..%2Fkernels`);
  });

  it('reports an error page that is not JSON by its HTTP status', async () => {
    const { client } = fakeClient(
      () => new Response('<html>Bad Gateway</html>', { status: 502, statusText: 'Bad Gateway' })
    );
    const error = await client.listSnapshots().catch(e => e);
    expect(error).toBeInstanceOf(CkptApiError);
    expect(error.status).toBe(502);
    expect(error.message).toBe('HTTP 502 Bad Gateway');
  });

  it('points at the server extension when the API route itself is missing', async () => {
    const { client } = fakeClient(
      () => new Response('<html>404 : Not Found</html>', { status: 404, statusText: 'Not Found' })
    );
    const error = await client.listSnapshots().catch(e => e);
    expect(error.status).toBe(404);
    expect(error.message).toBe(
      'HTTP 404 Not Found: is the jupyter-ckpt server extension enabled?'
    );
  });

  it('uses the reason when the server sends no message', async () => {
    const { client } = fakeClient(() => json(403, { reason: 'Forbidden' }, 'Forbidden'));
    const error = await client.listOperations().catch(e => e);
    expect(error.status).toBe(403);
    expect(error.message).toBe('Forbidden');
  });

  it('reports an unreachable server with status 0', async () => {
    const { client } = fakeClient(() => {
      throw new TypeError('Failed to fetch');
    });
    const error = await client.listSnapshots().catch(e => e);
    expect(error).toBeInstanceOf(CkptApiError);
    expect(error.status).toBe(0);
    expect(error.message).toContain('Failed to fetch');
  });

  it('rejects a success response that is not JSON', async () => {
    const { client } = fakeClient(() => new Response('not json', { status: 200 }));
    const error = await client.listSnapshots().catch(e => e);
    expect(error).toBeInstanceOf(CkptApiError);
    expect(error.message).toMatch(/not JSON/);
  });

  it('sends no Authorization header when there is no token', async () => {
    const { client, seen } = fakeClient(() => json(200, []), '');
    await client.listSnapshots();
    expect(seen[0].headers.get('Authorization')).toBeNull();
  });
});

describe('formatting', () => {
  it('formats sizes in decimal units', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(950)).toBe('950 B');
    expect(formatBytes(12_345)).toBe('12.3 kB');
    expect(formatBytes(1_234_567_890)).toBe('1.2 GB');
    expect(formatBytes(999_999)).toBe('1.0 MB');
    expect(formatBytes(250_000_000)).toBe('250 MB');
  });

  it('formats durations', () => {
    expect(formatDuration(850)).toBe('850 ms');
    expect(formatDuration(2300)).toBe('2.3 s');
    expect(formatDuration(65_000)).toBe('1 min 5 s');
  });

  it('shows what a snapshot costs on disk, with what it holds in the tooltip', () => {
    expect(describeSize(10_900_000, 254_000_000)).toEqual({
      text: '10.9 MB',
      title: '10.9 MB stored on disk, 254 MB of kernel state'
    });
    // a server that does not report the stored size: the logical size, said as such
    expect(describeSize(undefined, 254_000_000)).toEqual({
      text: '254 MB',
      title: '254 MB of kernel state'
    });
    expect(describeSize(null, null).text).toBe('?');
  });

  it('adds up the disk use of snapshots, skipping unknown sizes', () => {
    expect(
      totalStored([
        { stored_bytes: 1000, size_bytes: 9000 },
        { stored_bytes: 500 },
        { size_bytes: 200 },
        { stored_bytes: 'x' }
      ])
    ).toBe(1700);
  });

  it('names unlabelled snapshots by their execution count, not by a time', () => {
    expect(snapshotName({ label: 'data loaded', execution_count: 3 })).toBe('data loaded');
    expect(snapshotName({ label: '', execution_count: 7 })).toBe('Snapshot at In [7]');
    expect(snapshotName({ label: '', execution_count: null })).toBe('Unlabelled snapshot');
  });

  it('says how long ago a snapshot was taken, by the browser clock', () => {
    const now = Date.parse('2026-12-03T10:00:00Z');
    expect(formatAge('2026-12-03T09:59:30Z', now)).toBe('just now');
    expect(formatAge('2026-12-03T09:57:00+00:00', now)).toBe('3 min ago');
    expect(formatAge('2026-12-03T07:00:00Z', now)).toBe('3 h ago');
    expect(formatAge('2026-12-01T10:00:00Z', now)).toBe('2 days ago');
    expect(formatAge('not a time', now)).toBe('');
  });
});

describe('CkptClient: a notebook and its kernel', () => {
  it('sends the notebook and the cells it waits on with a checkpoint', async () => {
    const { client, seen } = fakeClient(() => json(201, SNAPSHOT));
    const notebook = { nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [] };
    const pending = [{ msg_id: 'm-1', cell_id: 'c-1' }];
    await client.checkpoint(KERNEL, 'x', { notebook, pending_cells: pending });
    expect(JSON.parse(seen[0].body)).toEqual({ label: 'x', notebook, pending_cells: pending });
  });

  it('gets the notebook stored with a snapshot, and the origin of a kernel', async () => {
    const notebook = { nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [] };
    const origin = { kernel_id: KERNEL, restored_from: SNAP, running_cell: null };
    const { client, seen } = fakeClient(request =>
      json(200, request.url.includes('/notebook') ? notebook : origin)
    );
    expect(await client.getSnapshotNotebook(SNAP)).toEqual(notebook);
    expect(route(seen[0].url)).toBe(`${BASE}api/ckpt/snapshots/${SNAP}/notebook`);
    expect(await client.getKernelOrigin(KERNEL)).toEqual(origin);
    expect(route(seen[1].url)).toBe(`${BASE}api/ckpt/kernels/${KERNEL}`);
  });

  it('reports a snapshot without a notebook as a 404 with the server message', async () => {
    const message = `no notebook stored with snapshot ${SNAP}`;
    const { client } = fakeClient(() => json(404, { message, reason: 'NotFound' }));
    const error = await client.getSnapshotNotebook(SNAP).catch(e => e);
    expect(error.status).toBe(404);
    expect(error.message).toBe(message);
  });
});
