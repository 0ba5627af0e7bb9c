// Unit tests of the notebook metadata helpers (src/metadata.ts): what a notebook records of
// its snapshots in metadata.jupyter_ckpt, and how the panel merges that with the server's list.

import { describe, expect, it } from 'vitest';

import { ISnapshot } from '../src/api';
import {
  ISnapshotEntry,
  METADATA_KEY,
  forgetSnapshot,
  mergeSnapshots,
  recordSnapshot,
  rememberedSnapshots,
  snapshotEntry
} from '../src/metadata';

function snapshot(id: string, created: string, label = `snap ${id}`): ISnapshot {
  return {
    id,
    label,
    kernel_id: 'k',
    kernel_name: 'python3',
    notebook_path: 'a.ipynb',
    created,
    size_bytes: 1000,
    execution_count: 3,
    freeze_ms: 12
  };
}

function entry(id: string, created: string, label = `entry ${id}`): ISnapshotEntry {
  return { id, label, created, execution_count: 1 };
}

const A = snapshot('aaaa', '2026-11-29T10:00:00Z', 'first');
const B = snapshot('bbbb', '2026-11-29T11:00:00Z', 'second');

describe('notebook metadata', () => {
  it('uses the key the Python side writes', () => {
    expect(METADATA_KEY).toBe('jupyter_ckpt');
  });

  it('records only id, label, created and execution_count, in that order', () => {
    const entry = snapshotEntry(A);
    expect(entry).toEqual({
      id: 'aaaa',
      label: 'first',
      created: '2026-11-29T10:00:00Z',
      execution_count: 3
    });
    expect(Object.keys(entry)).toEqual(['id', 'label', 'created', 'execution_count']);
    expect(snapshotEntry({ ...A, execution_count: null }).execution_count).toBeNull();
  });

  it('starts the entry of a notebook that has none', () => {
    expect(recordSnapshot(undefined, A)).toEqual({ snapshots: [snapshotEntry(A)] });
    expect(recordSnapshot(null, A)).toEqual({ snapshots: [snapshotEntry(A)] });
    expect(recordSnapshot('garbage', A)).toEqual({ snapshots: [snapshotEntry(A)] });
    expect(recordSnapshot({ snapshots: 'garbage' }, A)).toEqual({
      snapshots: [snapshotEntry(A)]
    });
  });

  it('appends a snapshot, replaces one with the same id, and keeps unknown keys', () => {
    const foreign = {
      id: 'ffff',
      label: 'elsewhere',
      created: '',
      execution_count: null,
      host: 'x'
    };
    const before = { snapshots: [foreign, snapshotEntry(A)], note: 'kept' };
    const copy = JSON.parse(JSON.stringify(before));
    const after = recordSnapshot(before, B);
    expect(after).toEqual({
      snapshots: [foreign, snapshotEntry(A), snapshotEntry(B)],
      note: 'kept'
    });
    expect(before).toEqual(copy); // the input is not changed

    const relabelled = recordSnapshot(after, { ...A, label: 'renamed' });
    expect(relabelled.snapshots).toEqual([
      foreign,
      snapshotEntry(B),
      { ...snapshotEntry(A), label: 'renamed' }
    ]);
  });

  it('forgets a snapshot, keeping everything else; null when it is not recorded', () => {
    const foreign = { id: 'ffff', host: 'x' };
    const before = { snapshots: [snapshotEntry(A), foreign, snapshotEntry(B)], note: 'kept' };
    const copy = JSON.parse(JSON.stringify(before));
    expect(forgetSnapshot(before, 'aaaa')).toEqual({
      snapshots: [foreign, snapshotEntry(B)],
      note: 'kept'
    });
    expect(before).toEqual(copy);
    expect(forgetSnapshot(before, 'cccc')).toBeNull();
    expect(forgetSnapshot(undefined, 'aaaa')).toBeNull();
    expect(forgetSnapshot({ snapshots: [snapshotEntry(A)] }, 'aaaa')).toEqual({ snapshots: [] });
  });

  it('reads the recorded snapshots, skipping malformed items', () => {
    expect(rememberedSnapshots(undefined)).toEqual([]);
    expect(rememberedSnapshots({})).toEqual([]);
    expect(rememberedSnapshots({ snapshots: {} })).toEqual([]);
    const value = {
      snapshots: [
        snapshotEntry(A),
        'not an object',
        null,
        { label: 'no id' },
        { id: 42 },
        { id: 'cccc', label: 7, created: null, execution_count: '2', host: 'x' },
        { ...snapshotEntry(A), label: 'recorded again' }
      ]
    };
    expect(rememberedSnapshots(value)).toEqual([
      { id: 'cccc', label: '', created: '', execution_count: null, host: 'x' },
      { ...snapshotEntry(A), label: 'recorded again' }
    ]);
  });
});

describe('merging the server list with what the notebook remembers', () => {
  it('lists the server snapshots as available, in its order', () => {
    const listed = mergeSnapshots([B, A], [snapshotEntry(A), snapshotEntry(B)]);
    expect(listed).toEqual([
      { available: true, snapshot: B },
      { available: true, snapshot: A }
    ]);
  });

  it('adds what only the notebook remembers as unavailable, by time, newest first', () => {
    const gone = entry('gone', '2026-11-29T10:30:00Z');
    const newest = entry('new', '2026-11-30T00:00:00Z');
    const oldest = entry('old', '2020-01-01T00:00:00Z');
    const undated = entry('undated', '');
    const listed = mergeSnapshots([B, A], [oldest, snapshotEntry(A), undated, gone, newest]);
    expect(listed.map(item => [item.snapshot.id, item.available])).toEqual([
      ['new', false],
      ['bbbb', true],
      ['gone', false],
      ['aaaa', true],
      ['old', false],
      ['undated', false]
    ]);
  });

  it('lists only the remembered ones when the server has none', () => {
    const x = entry('x', '2026-01-01T00:00:00Z');
    const y = entry('y', '2026-02-01T00:00:00Z');
    expect(mergeSnapshots([], [x, y])).toEqual([
      { available: false, snapshot: y },
      { available: false, snapshot: x }
    ]);
    expect(mergeSnapshots([], [])).toEqual([]);
  });
});
