// Small formatting helpers for sizes, durations and times shown to the user.

/** Bytes in decimal units, as file managers show them: 950 B, 12.3 MB, 1.2 GB. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes) || bytes < 0) {
    return '?';
  }
  if (bytes < 1000) {
    return `${Math.round(bytes)} B`;
  }
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1000;
    unit++;
  } while (value >= 999.95 && unit < units.length - 1);
  return `${value.toFixed(value < 100 ? 1 : 0)} ${units[unit]}`;
}

/** A duration: 850 ms, 2.3 s, 1 min 5 s. */
export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !isFinite(ms) || ms < 0) {
    return '?';
  }
  if (ms < 1000) {
    return `${Math.round(ms)} ms`;
  }
  const seconds = ms / 1000;
  if (seconds < 60) {
    return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

/** An ISO time as the user's local date and time. */
export function formatTime(iso: string): string {
  const date = new Date(iso);
  if (isNaN(date.getTime())) {
    return iso;
  }
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  const time = date.toLocaleTimeString(undefined, {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit'
  });
  return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
}

/** How long ago an ISO time was: "just now", "5 min ago", "3 h ago", "2 days ago". */
export function formatAge(iso: string, now: number = Date.now()): string {
  const then = new Date(iso).getTime();
  if (isNaN(then)) {
    return '';
  }
  const seconds = Math.max(0, (now - then) / 1000);
  if (seconds < 45) {
    return 'just now';
  }
  if (seconds < 3600) {
    return `${Math.max(1, Math.round(seconds / 60))} min ago`;
  }
  if (seconds < 86400) {
    return `${Math.round(seconds / 3600)} h ago`;
  }
  const days = Math.round(seconds / 86400);
  return days === 1 ? 'yesterday' : `${days} days ago`;
}

/** What a snapshot costs on disk and what it holds, for display. `stored` is the bytes the
 * snapshot added to the store (what deleting it frees, at most); `logical` the kernel
 * memory and files it represents. The store deduplicates, so `stored` is usually far less. */
export function describeSize(
  stored: number | null | undefined,
  logical: number | null | undefined
): { text: string; title: string } {
  const hasStored = typeof stored === 'number' && isFinite(stored) && stored >= 0;
  const text = formatBytes(hasStored ? stored : logical);
  const parts = [];
  if (hasStored) {
    parts.push(`${formatBytes(stored)} stored on disk`);
  }
  if (typeof logical === 'number' && isFinite(logical) && logical >= 0) {
    parts.push(`${formatBytes(logical)} of kernel state`);
  }
  return { text, title: parts.join(', ') || 'size unknown' };
}

/** The disk use of a list of snapshots: the sum of what each added to the store. */
export function totalStored(
  snapshots: readonly { stored_bytes?: unknown; size_bytes?: unknown }[]
): number {
  let total = 0;
  for (const snapshot of snapshots) {
    const stored = snapshot.stored_bytes ?? snapshot.size_bytes;
    if (typeof stored === 'number' && isFinite(stored) && stored > 0) {
      total += stored;
    }
  }
  return total;
}

/** A snapshot's name in lists: its label, or for an unlabelled one the execution count it
 * was taken at (its time is shown beside it, once, not repeated as a label). */
export function snapshotName(snapshot: {
  label?: string;
  execution_count?: number | null;
}): string {
  if (snapshot.label) {
    return snapshot.label;
  }
  const count = snapshot.execution_count;
  return count === null || count === undefined
    ? 'Unlabelled snapshot'
    : `Snapshot at In [${count}]`;
}
