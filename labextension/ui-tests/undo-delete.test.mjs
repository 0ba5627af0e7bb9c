// Browser test: Undo after Delete (started by ../run-ui-tests.sh, which passes LAB_URL,
// LAB_TOKEN, NOTEBOOK_DIR and STORE_DIR).
//
// A snapshot of the notebook's kernel is deleted from the panel: it leaves the list and the
// server's listing at once, and the notification offers Undo, which brings it back.
// Deleted again and not undone, it stays gone after the page is loaded again (the server
// keeps it in its trash, not the page). "Clean up…" deletes the snapshots older than an
// age (one made "10 days ago" by made_elsewhere.py), with Undo too.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import {
  LAB_URL, Lab, NOTEBOOK_DIR, SLOW, STORE_DIR, TOKEN, api, kernelOf, requireEnv, until
} from './lab-helpers.mjs';

const HELPER = join(dirname(fileURLToPath(import.meta.url)), 'made_elsewhere.py');
const NOTEBOOK = 'ckpt-undo-delete.ipynb';

requireEnv('LAB_URL', 'NOTEBOOK_DIR', 'STORE_DIR');

let lab;

before(async () => {
  lab = await Lab.start(NOTEBOOK, { idle: false });
});

after(() => lab?.close());

test('a deleted snapshot comes back with Undo', { timeout: 300_000 }, async () => {
  const kernel = await until(() => kernelOf(NOTEBOOK), 'the notebook kernel');
  await lab.waitIdle();
  const kept = await api('POST', `api/ckpt/kernels/${kernel}/snapshots`, { label: 'kept' });
  const doomed = await api('POST', `api/ckpt/kernels/${kernel}/snapshots`, { label: 'doomed' });

  await lab.openPanel();
  await lab.snapshotRow(doomed.id).waitFor({ timeout: SLOW });
  await lab.snapshotRow(kept.id).waitFor();

  const remove = async () => {
    await lab.snapshotRow(doomed.id).locator('.jp-CkptSnapshot-delete').click();
    await lab.page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Delete' }).click();
    await lab.snapshotRow(doomed.id).waitFor({ state: 'detached' });
    const listed = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
    assert.deepEqual(listed.map(s => s.id), [kept.id]);
    return lab.page.locator('.Toastify__toast', { hasText: 'Deleted snapshot "doomed"' }).last();
  };

  const toast = await remove();
  await toast.getByRole('button', { name: 'Undo' }).click();
  await lab.snapshotRow(doomed.id).waitFor({ timeout: SLOW });
  await lab.page.locator('.Toastify__toast', { hasText: 'Snapshot "doomed" is back' }).waitFor();
  assert.equal((await api('GET', `api/ckpt/snapshots/${doomed.id}`)).label, 'doomed');
  await lab.snapshotRow(doomed.id).locator('.jp-CkptSnapshot-delete:enabled').waitFor({ timeout: SLOW });

  // not undone: on a page loaded again it is still gone, and only the kept one is listed
  const again = await remove();
  await again.waitFor({ state: 'detached', timeout: 30_000 }); // the Undo window closes
  await lab.open(NOTEBOOK, { idle: false });
  await lab.openPanel();
  await lab.snapshotRow(kept.id).waitFor({ timeout: SLOW });
  assert.equal(await lab.snapshotRow(doomed.id).count(), 0);
  const response = await fetch(new URL(`api/ckpt/snapshots/${doomed.id}`, LAB_URL), {
    headers: { Authorization: `token ${TOKEN}` }
  });
  assert.equal(response.status, 404);
  assert.deepEqual(lab.consoleErrors.filter(text => !text.includes('404')), []);
});

test('Clean up deletes the snapshots older than an age, with Undo', { timeout: 300_000 }, async () => {
  const created = new Date(Date.now() - 10 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z');
  const old = execFileSync(
    'python3',
    [HELPER, STORE_DIR, NOTEBOOK, join(NOTEBOOK_DIR, 'libm-old.so'), 'ten days old', created],
    { encoding: 'utf8' }
  ).trim();
  await lab.snapshotRow(old).waitFor({ timeout: SLOW }); // (the panel polls)
  const before = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).map(s => s.id);
  assert.equal(before.length, 2);

  await lab.page.locator('#jupyter-ckpt-snapshots .jp-CkptPanel-cleanup').click();
  const dialog = lab.page.locator('.jp-Dialog', { hasText: 'Clean up kernel snapshots' });
  await dialog.waitFor();
  await dialog.locator('.jp-CkptCleanup-amount').fill('7');
  await dialog.locator('.jp-CkptCleanup-unit').selectOption({ label: 'days' });
  assert.match(await dialog.locator('.jp-CkptCleanup-summary').innerText(), /That is 1 of the 2 /);
  await dialog.locator('.jp-Dialog-footer .jp-mod-accept').click();
  await lab.snapshotRow(old).waitFor({ state: 'detached', timeout: SLOW });
  const listed = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).map(s => s.id);
  assert.deepEqual(listed, before.filter(id => id !== old));

  const toast = lab.page.locator('.Toastify__toast', { hasText: 'Deleted 1 snapshot' }).last();
  await toast.getByRole('button', { name: 'Undo' }).click();
  await lab.snapshotRow(old).waitFor({ timeout: SLOW });
  assert.equal((await api('GET', `api/ckpt/snapshots/${old}`)).label, 'ten days old');
});
