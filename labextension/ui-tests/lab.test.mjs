// Browser test of the JupyterLab extension against a real JupyterLab with the jupyter-ckpt
// server extension (started by ../run-ui-tests.sh, which passes LAB_URL and LAB_TOKEN).
//
// A user opens a notebook, sets x = 42, checkpoints the kernel four ways (toolbar button,
// Kernel menu with a label, keyboard shortcut, snapshots panel with a label), restarts the
// kernel (x is gone), restores the labelled snapshot from the panel and finds x again, deletes
// a snapshot, and sees the server's message when a restore fails. The last screenshot is
// saved to $SCREENSHOT.
//
// Run with node's test runner: node --test ui-tests/

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const LAB_URL = process.env.LAB_URL; // e.g. http://127.0.0.1:8888/lab-test/
const TOKEN = process.env.LAB_TOKEN ?? '';
const SCREENSHOT = process.env.SCREENSHOT ?? '';
const FAILURE_SHOT = process.env.FAILURE_SCREENSHOT ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const NOTEBOOK = 'ckpt-ui-test.ipynb';
const SLOW = 120_000; // a checkpoint or restore of a real kernel: seconds, not minutes

if (!LAB_URL) {
  throw new Error('LAB_URL is not set: run this through labextension/run-ui-tests.sh');
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

/** The notebook's kernel is connected and idle (toolbar indicator). */
async function waitIdle(timeout = SLOW) {
  await page
    .locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
    .waitFor({ timeout });
}

/** Type `code` into cell `index` (creating cells as needed), run it, return its output. */
async function runCell(index, code, expected) {
  const cells = page.locator('.jp-NotebookPanel .jp-Notebook .jp-Cell');
  while ((await cells.count()) <= index) {
    await page
      .locator('.jp-NotebookPanel-toolbar jp-button[data-command="notebook:insert-cell-below"]')
      .click();
  }
  const cell = cells.nth(index);
  const editor = cell.locator('.cm-content');
  await editor.click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.type(code);
  await waitIdle();
  await page.keyboard.press('Control+Enter'); // run, stay on the cell
  const output = cell.locator('.jp-OutputArea-output');
  await output.filter({ hasText: expected }).first().waitFor({ timeout: SLOW });
  await waitIdle();
  return (await output.allInnerTexts()).join('\n');
}

/** Wait for a notification whose text matches; fail at once on an error notification. */
async function waitNotification(pattern, timeout = SLOW, errorsExpected = false) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const texts = await page.locator('.Toastify__toast').allInnerTexts();
    const hit = texts.find(text => pattern.test(text));
    if (hit) {
      return hit;
    }
    const errors = await page.locator('.Toastify__toast--error').allInnerTexts();
    if (errors.length && !errorsExpected) {
      throw new Error(`error notification: ${errors.join(' | ')}`);
    }
    await page.waitForTimeout(200);
  }
  const shown = await page.locator('.Toastify__toast').allInnerTexts();
  throw new Error(`no notification matching ${pattern}; shown: ${JSON.stringify(shown)}`);
}

async function dismissNotifications() {
  for (const button of await page.locator('.Toastify__toast .jp-Notification-Toast-Close').all()) {
    await button.click({ timeout: 2000 }).catch(() => {});
  }
}

/** Wait until the panel lists `before + 1` snapshots; return the id of the newest. */
async function newSnapshot(before) {
  await snapshotItems().nth(before).waitFor({ timeout: SLOW });
  assert.equal(await snapshotItems().count(), before + 1);
  return snapshotItems().first().getAttribute('data-snapshot-id');
}

function snapshotItems() {
  return page.locator('#jupyter-ckpt-snapshots .jp-CkptSnapshot');
}

before(async () => {
  // a rerun against the same server starts with a new kernel and without the snapshots
  // of an earlier run
  for (const session of await api('GET', 'api/sessions')) {
    if (session.path === NOTEBOOK) {
      await api('DELETE', `api/sessions/${session.id}`);
    }
  }
  for (const old of await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)) {
    await api('DELETE', `api/ckpt/snapshots/${old.id}`);
  }
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
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync'
    ]
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on('console', message => {
    if (message.type() === 'error') {
      consoleErrors.push(message.text());
    }
  });
  page.on('pageerror', error => consoleErrors.push(String(error)));
  // ?reset: start from the default layout, whatever an earlier session left
  await page.goto(`${LAB_URL}lab/tree/${NOTEBOOK}?reset&token=${TOKEN}`);
  await page.locator('.jp-NotebookPanel').waitFor({ timeout: SLOW });
  await waitIdle();
});

after(async () => {
  if (page && FAILURE_SHOT) {
    await page.screenshot({ path: FAILURE_SHOT }).catch(() => {});
  }
  await browser?.close();
});

test('the toolbar button, Kernel menu entries and snapshots panel are there', async () => {
  const button = page.locator(
    '.jp-NotebookPanel-toolbar jp-button[data-command="jupyter-ckpt:checkpoint"]'
  );
  await button.waitFor();
  assert.match(await button.innerText(), /Checkpoint/);

  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  const menu = page.locator('.lm-Menu').last();
  await menu.locator('[data-command="jupyter-ckpt:checkpoint"]').waitFor();
  const entry = await menu.locator('[data-command="jupyter-ckpt:checkpoint"]').innerText();
  assert.match(entry, /Checkpoint Kernel/);
  assert.match(entry, /Ctrl\+Alt\+K/);
  await menu.locator('[data-command="jupyter-ckpt:checkpoint-with-label"]').waitFor();
  await menu.locator('[data-command="jupyter-ckpt:show-snapshots"]').waitFor();
  await page.keyboard.press('Escape');

  const panel = page.locator('#jupyter-ckpt-snapshots');
  if (!(await panel.isVisible())) {
    await page.locator('.jp-SideBar.jp-mod-right [data-id="jupyter-ckpt-snapshots"]').click();
  }
  await panel.waitFor();
  await panel.locator('.jp-CkptPanel-notebook', { hasText: NOTEBOOK }).waitFor();
  await panel
    .locator('.jp-CkptPanel-status', { hasText: 'No snapshots of this notebook yet' })
    .waitFor();
});

test('checkpoint, restart, restore: the kernel state comes back', { timeout: 600_000 }, async () => {
  // state in the kernel
  await runCell(0, 'x = 41 + 1\nprint("x =", x)', 'x = 42');

  // 1. checkpoint from the notebook toolbar: the server labels it with the time
  await page
    .locator('.jp-NotebookPanel-toolbar jp-button[data-command="jupyter-ckpt:checkpoint"]')
    .click();
  const saved = await waitNotification(/Checkpoint ".*" saved: [\d.]+ [kMG]?B in /);
  console.log(saved.split('\n')[0]);
  await dismissNotifications();
  const fromToolbar = await newSnapshot(0);

  // 2. from the Kernel menu, with a label asked for in a dialog
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  await page.locator('.lm-Menu [data-command="jupyter-ckpt:checkpoint-with-label"]').click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Checkpoint kernel' });
  await dialog.locator('input').fill('x is 42');
  await dialog.locator('.jp-Dialog-button', { hasText: 'Checkpoint' }).click();
  await waitNotification(/Checkpoint "x is 42" saved/);
  await dismissNotifications();
  const labelled = await newSnapshot(1);

  // 3. with the keyboard shortcut, in command mode
  await page.locator('.jp-NotebookPanel .jp-Cell').first().locator('.jp-InputPrompt').click();
  await page.keyboard.press('Control+Alt+k');
  await newSnapshot(2);
  await dismissNotifications();

  // 4. from the panel, with a label typed there
  const panel = page.locator('#jupyter-ckpt-snapshots');
  await panel.locator('.jp-CkptPanel-labelInput').fill('from the panel');
  await panel.locator('.jp-CkptPanel-checkpoint').click();
  await waitNotification(/Checkpoint "from the panel" saved/);
  await dismissNotifications();
  await newSnapshot(3);

  // newest first, with label, time, size and execution count
  const items = snapshotItems();
  assert.equal(await items.count(), 4);
  assert.equal(await items.nth(0).locator('.jp-CkptSnapshot-label').innerText(), 'from the panel');
  const row = page.locator(`.jp-CkptSnapshot[data-snapshot-id="${labelled}"]`);
  assert.equal(await row.locator('.jp-CkptSnapshot-label').innerText(), 'x is 42');
  assert.match(await row.locator('.jp-CkptSnapshot-size').innerText(), /^[\d.]+ [kMG]?B$/);
  assert.match(await row.locator('.jp-CkptSnapshot-time').innerText(), /\d\d:\d\d/);
  assert.match(await row.locator('.jp-CkptSnapshot-count').innerText(), /^In \[1\]$/);

  // the server agrees
  const listed = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  assert.equal(listed.length, 4);
  assert.equal(listed[0].label, 'from the panel', 'newest snapshot first');
  assert.equal(listed.find(s => s.id === labelled).label, 'x is 42');

  // restart: the state is gone
  const kernelBefore = (await api('GET', 'api/sessions')).find(s => s.path === NOTEBOOK).kernel.id;
  await page
    .locator('.jp-NotebookPanel-toolbar jp-button[data-command="notebook:restart-kernel"]')
    .click();
  await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept').click();
  await page.waitForTimeout(500);
  await waitIdle();
  const gone = await runCell(1, 'print("x =", x)', 'NameError');
  assert.match(gone, /NameError/);

  // restore the labelled snapshot from the panel
  await page
    .locator(`#jupyter-ckpt-snapshots .jp-CkptSnapshot[data-snapshot-id="${labelled}"]`)
    .locator('.jp-CkptSnapshot-restore')
    .click();
  await page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' }).waitFor();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  const restored = await waitNotification(/Restored "x is 42".* into /);
  console.log(`${restored.split('\n')[0]}`);
  await waitIdle();

  // the notebook now talks to the restored kernel, and x is back
  const back = await runCell(1, 'print("x =", x)', 'x = 42');
  assert.match(back, /x = 42/);
  const kernelAfter = (await api('GET', 'api/sessions')).find(s => s.path === NOTEBOOK).kernel.id;
  console.log(`kernel ${kernelBefore} -> ${kernelAfter}`);

  // delete the toolbar's snapshot, after confirming
  await page
    .locator(`.jp-CkptSnapshot[data-snapshot-id="${fromToolbar}"] .jp-CkptSnapshot-delete`)
    .click();
  await page.locator('.jp-Dialog', { hasText: 'Delete kernel snapshot' }).waitFor();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Delete' }).click();
  await waitNotification(/Deleted snapshot/);
  await page
    .locator(`.jp-CkptSnapshot[data-snapshot-id="${fromToolbar}"]`)
    .waitFor({ state: 'detached' });
  assert.equal(await snapshotItems().count(), 3);
  const remaining = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  assert.equal(remaining.length, 3);
  assert.ok(!remaining.some(s => s.id === fromToolbar), 'deleted on the server');

  // for the record: the notebook with x back and the panel with the snapshot
  await runCell(2, 'print("restored: x =", x)', 'restored: x = 42');
  await page.waitForTimeout(300);
  if (SCREENSHOT) {
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });
    console.log(`screenshot: ${SCREENSHOT}`);
  }
});

test('a failed restore is reported with the server message', async () => {
  // the snapshot disappears behind the panel's back: restoring it fails with a 404
  const item = snapshotItems().last();
  const id = await item.getAttribute('data-snapshot-id');
  await api('DELETE', `api/ckpt/snapshots/${id}`);
  await item.locator('.jp-CkptSnapshot-restore').click();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  const failed = await waitNotification(/Restore failed: /, SLOW, true);
  assert.match(failed, new RegExp(`Restore failed: .*${id}`));
  console.log(`${failed.split('\n')[0]}`);
  await dismissNotifications();

  // the refreshed list no longer shows it
  await page.locator('#jupyter-ckpt-snapshots .jp-CkptPanel-refresh').click();
  await page
    .locator(`#jupyter-ckpt-snapshots .jp-CkptSnapshot[data-snapshot-id="${id}"]`)
    .waitFor({ state: 'detached' });
});

test('no errors in the browser console from the extension', () => {
  const ours = consoleErrors.filter(text => /ckpt/i.test(text));
  assert.deepEqual(ours, []);
});
