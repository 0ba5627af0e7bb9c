// The `jupyter_ckpt` entry of a notebook's metadata: the snapshots the notebook can return to,
// saved with the notebook so that a reopened notebook still knows them.
//
//     metadata.jupyter_ckpt = {"snapshots": [{"id", "label", "created", "execution_count"}, ...]}
//
// The same shape as jupyter_ckpt/jupyter/notebook_meta.py writes: optional, entries in the
// order they were recorded, one per id; keys this code does not know (in the entry or in an
// item) are kept. These functions are pure: they read a metadata value and return a new one.

import { ISnapshot } from './api';

/** The notebook metadata key. */
export const METADATA_KEY = 'jupyter_ckpt';

/** A snapshot as a notebook records it. */
export interface ISnapshotEntry {
  id: string;
  label: string;
  /** ISO 8601 time the snapshot was taken. */
  created: string;
  execution_count: number | null;
  [key: string]: unknown;
}

/** The value under `metadata.jupyter_ckpt`. */
export interface ICkptMetadata {
  snapshots: unknown[];
  [key: string]: unknown;
}

/** A row of the snapshots panel: a snapshot the server has, or one only the notebook knows. */
export type ListedSnapshot =
  | { available: true; snapshot: ISnapshot }
  | { available: false; snapshot: ISnapshotEntry };

/** The entry a notebook records for a snapshot. */
export function snapshotEntry(snapshot: ISnapshot | ISnapshotEntry): ISnapshotEntry {
  return {
    id: snapshot.id,
    label: snapshot.label ?? '',
    created: snapshot.created ?? '',
    execution_count: snapshot.execution_count ?? null
  };
}

/**
 * The snapshots a metadata value records, oldest recorded first. Items without a string id
 * are skipped; for an id recorded twice, the later item counts.
 */
export function rememberedSnapshots(value: unknown): ISnapshotEntry[] {
  const byId = new Map<string, ISnapshotEntry>();
  for (const item of Private.items(value)) {
    if (!Private.isObject(item) || typeof item.id !== 'string' || item.id === '') {
      continue;
    }
    byId.delete(item.id);
    byId.set(item.id, {
      ...item,
      id: item.id,
      label: typeof item.label === 'string' ? item.label : '',
      created: typeof item.created === 'string' ? item.created : '',
      execution_count:
        typeof item.execution_count === 'number' ? item.execution_count : null
    });
  }
  return [...byId.values()];
}

/**
 * The metadata value with `snapshot` recorded: appended, replacing an item with the same id.
 * Everything else in the value is kept.
 */
export function recordSnapshot(
  value: unknown,
  snapshot: ISnapshot | ISnapshotEntry
): ICkptMetadata {
  const entry = snapshotEntry(snapshot);
  const items = Private.items(value).filter(item => Private.idOf(item) !== entry.id);
  return { ...Private.object(value), snapshots: [...items, entry] };
}

/**
 * The metadata value without the snapshot `id`, or null when it does not record it (then
 * there is nothing to change). Everything else in the value is kept.
 */
export function forgetSnapshot(value: unknown, id: string): ICkptMetadata | null {
  const items = Private.items(value);
  const kept = items.filter(item => Private.idOf(item) !== id);
  if (kept.length === items.length) {
    return null;
  }
  return { ...Private.object(value), snapshots: kept };
}

/**
 * What the panel lists, newest first: the snapshots the server has (`available`, in the
 * server's order, newest first), and among them, by time, those the notebook remembers but
 * the server does not have (deleted, or taken on another machine).
 */
export function mergeSnapshots(
  available: readonly ISnapshot[],
  remembered: readonly ISnapshotEntry[]
): ListedSnapshot[] {
  const known = new Set(available.map(snapshot => snapshot.id));
  const missing = remembered
    .filter(entry => !known.has(entry.id))
    .map((entry, index) => ({ entry, index }))
    // newest first; entries without a valid time last, in the order they were recorded
    .sort(
      (a, b) =>
        Private.time(b.entry.created) - Private.time(a.entry.created) || a.index - b.index
    )
    .map(({ entry }) => entry);
  const result: ListedSnapshot[] = [];
  let next = 0;
  for (const snapshot of available) {
    const time = Private.time(snapshot.created);
    while (next < missing.length && Private.time(missing[next].created) > time) {
      result.push({ available: false, snapshot: missing[next++] });
    }
    result.push({ available: true, snapshot });
  }
  while (next < missing.length) {
    result.push({ available: false, snapshot: missing[next++] });
  }
  return result;
}

namespace Private {
  export function isObject(value: unknown): value is Record<string, unknown> {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
  }

  /** The value if it is an object (a copy), else an empty one. */
  export function object(value: unknown): Record<string, unknown> {
    return isObject(value) ? { ...value } : {};
  }

  /** The items of `value.snapshots`, or none. */
  export function items(value: unknown): unknown[] {
    return isObject(value) && Array.isArray(value.snapshots) ? [...value.snapshots] : [];
  }

  export function idOf(item: unknown): unknown {
    return isObject(item) ? item.id : undefined;
  }

  /** Milliseconds since the epoch; -Infinity for a missing or invalid time. */
  export function time(iso: string): number {
    const ms = new Date(iso).getTime();
    return isNaN(ms) ? -Infinity : ms;
  }
}
