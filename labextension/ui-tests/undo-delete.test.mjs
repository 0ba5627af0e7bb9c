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

import { chromium } from 'playwright-core';

const LAB_URL = process.env.LAB_URL;
const TOKEN = process.env.LAB_TOKEN ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const NOTEBOOK_DIR = process.env.NOTEBOOK_DIR ?? '';
const STORE_DIR = process.env.STORE_DIR ?? '';
const HELPER = join(dirname(fileURLToPath(import.meta.url)), 'made_elsewhere.py');
const FAILURE_SHOT = process.env.FAILURE_SCREENSHOT ?? '';
const NOTEBOOK = 'ckpt-undo-delete.ipynb';
const SLOW = 120_000;

if (!LAB_URL || !NOTEBOOK_DIR || !STORE_DIR) {
  throw new Error('LAB_URL, NOTEBOOK_DIR or STORE_DIR is not set: run this through labextension/run-ui-tests.sh');
}

let browser;
let page;
const consoleErrors = [];

async function api(method, path, body) {
  const response = await fetch(new URL(path, LAB_URL), {
    method,
    headers: { Authorization: `token ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  });
  const text = await response.text();
  if (!response.ok) {
    throw new Error(`${method} ${path}: HTTP ${response.status} ${text}`);
  }
  return text ? JSON.parse(text) : null;
}

/** Poll `probe` (every 100 ms) until it returns something truthy; return that. */
async function until(probe, what, timeout = SLOW) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise(resolve => setTimeout(resolve, 100));
  }
}

before(async () => {
  await api('PUT', `api/contents/${NOTEBOOK}`, {
    type: 'notebook',
    content: {
      cells: [],
      metadata: {
        kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' }
      },
      nbformat: 4,
      nbformat_minor: 5
    }
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync']
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on('console', message => {
    if (message.type() === 'error') {
      consoleErrors.push(message.text());
      console.log(`browser console: ${message.text()}`);
    }
  });
  page.on('pageerror', error => consoleErrors.push(String(error)));
  page.on('dialog', dialog =>
    dialog.type() === 'beforeunload' ? dialog.accept() : dialog.dismiss()
  );
  await page.goto(`${LAB_URL}lab/tree/${NOTEBOOK}?reset&token=${TOKEN}`);
  await page.locator('.jp-NotebookPanel').waitFor({ timeout: SLOW });
});

after(async () => {
  if (page && FAILURE_SHOT) {
    await page.screenshot({ path: FAILURE_SHOT }).catch(() => {});
  }
  await browser?.close();
});

test('a deleted snapshot comes back with Undo', { timeout: 300_000 }, async () => {
  const kernel = await until(
    async () => (await api('GET', 'api/sessions')).find(s => s.path === NOTEBOOK)?.kernel?.id,
    'the notebook kernel'
  );
  await page
    .locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
    .waitFor({ timeout: SLOW });
  const kept = await api('POST', `api/ckpt/kernels/${kernel}/snapshots`, { label: 'kept' });
  const doomed = await api('POST', `api/ckpt/kernels/${kernel}/snapshots`, { label: 'doomed' });

  await page.locator('.jp-SideBar.jp-mod-right [data-id="jupyter-ckpt-snapshots"]').click();
  const row = id => page.locator(`#jupyter-ckpt-snapshots .jp-CkptSnapshot[data-snapshot-id="${id}"]`);
  await row(doomed.id).waitFor({ timeout: SLOW });
  await row(kept.id).waitFor();

  const remove = async () => {
    await row(doomed.id).locator('.jp-CkptSnapshot-delete').click();
    await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Delete' }).click();
    await row(doomed.id).waitFor({ state: 'detached' });
    const listed = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
    assert.deepEqual(listed.map(s => s.id), [kept.id]);
    return page.locator('.Toastify__toast', { hasText: 'Deleted snapshot "doomed"' }).last();
  };

  const toast = await remove();
  await toast.getByRole('button', { name: 'Undo' }).click();
  await row(doomed.id).waitFor({ timeout: SLOW });
  await page.locator('.Toastify__toast', { hasText: 'Snapshot "doomed" is back' }).waitFor();
  assert.equal((await api('GET', `api/ckpt/snapshots/${doomed.id}`)).label, 'doomed');
  await row(doomed.id).locator('.jp-CkptSnapshot-delete:enabled').waitFor({ timeout: SLOW });

  // not undone: on a page loaded again it is still gone, and only the kept one is listed
  const again = await remove();
  await again.waitFor({ state: 'detached', timeout: 30_000 }); // the Undo window closes
  await page.goto(`${LAB_URL}lab/tree/${NOTEBOOK}?reset&token=${TOKEN}`);
  await page.locator('.jp-NotebookPanel').waitFor({ timeout: SLOW });
  await page.locator('.jp-SideBar.jp-mod-right [data-id="jupyter-ckpt-snapshots"]').click();
  await row(kept.id).waitFor({ timeout: SLOW });
  assert.equal(await row(doomed.id).count(), 0);
  const response = await fetch(new URL(`api/ckpt/snapshots/${doomed.id}`, LAB_URL), {
    headers: { Authorization: `token ${TOKEN}` }
  });
  assert.equal(response.status, 404);
  assert.deepEqual(consoleErrors.filter(text => !text.includes('404')), []);
});

test('Clean up deletes the snapshots older than an age, with Undo', { timeout: 300_000 }, async () => {
  const created = new Date(Date.now() - 10 * 86400_000).toISOString().replace(/\.\d+Z$/, 'Z');
  const old = execFileSync(
    'python3',
    [HELPER, STORE_DIR, NOTEBOOK, join(NOTEBOOK_DIR, 'libm-old.so'), 'ten days old', created],
    { encoding: 'utf8' }
  ).trim();
  const row = id => page.locator(`#jupyter-ckpt-snapshots .jp-CkptSnapshot[data-snapshot-id="${id}"]`);
  await row(old).waitFor({ timeout: SLOW }); // (the panel polls)
  const before = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).map(s => s.id);
  assert.equal(before.length, 2);

  await page.locator('#jupyter-ckpt-snapshots .jp-CkptPanel-cleanup').click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Clean up kernel snapshots' });
  await dialog.waitFor();
  await dialog.locator('.jp-CkptCleanup-amount').fill('7');
  await dialog.locator('.jp-CkptCleanup-unit').selectOption({ label: 'days' });
  assert.match(await dialog.locator('.jp-CkptCleanup-summary').innerText(), /That is 1 of the 2 /);
  await dialog.locator('.jp-Dialog-footer .jp-mod-accept').click();
  await row(old).waitFor({ state: 'detached', timeout: SLOW });
  const listed = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).map(s => s.id);
  assert.deepEqual(listed, before.filter(id => id !== old));

  const toast = page.locator('.Toastify__toast', { hasText: 'Deleted 1 snapshot' }).last();
  await toast.getByRole('button', { name: 'Undo' }).click();
  await row(old).waitFor({ timeout: SLOW });
  assert.equal((await api('GET', `api/ckpt/snapshots/${old}`)).label, 'ten days old');
});
