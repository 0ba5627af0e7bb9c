// Browser test of the JupyterLab extension against a real JupyterLab with the jupyter-ckpt
// server extension (started by ../run-ui-tests.sh, which passes LAB_URL and LAB_TOKEN).
//
// A user opens a notebook, sets x = 42, checkpoints the kernel four ways (toolbar button,
// Kernel menu with a label, keyboard shortcut, snapshots panel with a label), saves the
// notebook (its file records the snapshots in metadata.jupyter_ckpt), restarts the kernel (x is
// gone), restores the labelled snapshot from the panel and finds x again, deletes a snapshot
// (the saved file no longer records it), and sees the server's message when a restore fails.
// Reopened, the notebook still lists what it records, those the server does not have as "not
// available here". The screenshot is saved to $SCREENSHOT.
//
// Run with node's test runner: node --test ui-tests/

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const LAB_URL = process.env.LAB_URL; // e.g. http://127.0.0.1:8888/lab-test/
const TOKEN = process.env.LAB_TOKEN ?? '';
const SCREENSHOT = process.env.SCREENSHOT ?? '';
const FAILURE_SHOT = process.env.FAILURE_SCREENSHOT ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// the server's root directory, to read the saved notebook file itself (else: contents API)
const NOTEBOOK_DIR = process.env.NOTEBOOK_DIR ?? '';
// the server's snapshot store (a local directory), to damage a snapshot the way a disk can
const STORE_DIR = process.env.STORE_DIR ?? '';
const NOTEBOOK = 'ckpt-ui-test.ipynb';
// a snapshot taken on another machine, which this server does not have
const FOREIGN = 'f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0';
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

/** Open the snapshots panel in the right sidebar, unless it is open. */
async function openPanel() {
  const panel = page.locator('#jupyter-ckpt-snapshots');
  if (!(await panel.isVisible())) {
    await page.locator('.jp-SideBar.jp-mod-right [data-id="jupyter-ckpt-snapshots"]').click();
  }
  await panel.waitFor();
  await panel.locator('.jp-CkptPanel-notebook', { hasText: NOTEBOOK }).waitFor();
  return panel;
}

/** The notebook's tab, while it has unsaved changes. */
function dirtyTab() {
  return page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-dirty', { hasText: NOTEBOOK });
}

/** Save the notebook with the keyboard (Ctrl+S, from command mode) and wait until saved. */
async function saveNotebook() {
  await page.locator('.jp-NotebookPanel .jp-Cell').first().locator('.jp-InputPrompt').click();
  await page.keyboard.press('ControlOrMeta+s');
  await dirtyTab().waitFor({ state: 'detached', timeout: 30_000 });
}

/** The notebook as its file on disk holds it. */
async function notebookOnDisk() {
  if (NOTEBOOK_DIR) {
    return JSON.parse(readFileSync(join(NOTEBOOK_DIR, NOTEBOOK), 'utf8'));
  }
  return (await api('GET', `api/contents/${NOTEBOOK}?type=notebook&content=1`)).content;
}

/** The ids of the snapshots the notebook file records, in its order. */
function recordedIds(notebook) {
  return (notebook.metadata.jupyter_ckpt?.snapshots ?? []).map(entry => entry.id);
}

/** Wait until the file on disk records exactly `ids` (in that order); return the notebook. */
async function waitRecordedOnDisk(ids, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  let notebook;
  for (;;) {
    notebook = await notebookOnDisk();
    if (JSON.stringify(recordedIds(notebook)) === JSON.stringify(ids)) {
      return notebook;
    }
    if (Date.now() > deadline) {
      break;
    }
    await new Promise(resolve => setTimeout(resolve, 250));
  }
  assert.deepEqual(recordedIds(notebook), ids, 'snapshots recorded in the saved notebook');
  return notebook;
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
  // leaving the page (to reopen the notebook) must not be held up by "unsaved changes"
  page.on('dialog', dialog =>
    dialog.type() === 'beforeunload' ? dialog.accept() : dialog.dismiss()
  );
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
  assert.match(await button.innerText(), /Snapshot/);

  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  const menu = page.locator('.lm-Menu').last();
  await menu.locator('[data-command="jupyter-ckpt:checkpoint"]').waitFor();
  const entry = await menu.locator('[data-command="jupyter-ckpt:checkpoint"]').innerText();
  assert.match(entry, /Snapshot Kernel/);
  assert.match(entry, /Ctrl\+Alt\+K/);
  await menu.locator('[data-command="jupyter-ckpt:checkpoint-with-label"]').waitFor();
  await menu.locator('[data-command="jupyter-ckpt:show-snapshots"]').waitFor();
  await page.keyboard.press('Escape');

  const panel = await openPanel();
  await panel
    .locator('.jp-CkptPanel-status', { hasText: 'No snapshots of this notebook yet' })
    .waitFor();
});

test('checkpoint, restart, restore: the kernel state comes back', { timeout: 600_000 }, async () => {
  // state in the kernel
  await runCell(0, 'x = 41 + 1\nprint("x =", x)', 'x = 42');

  // 1. a snapshot from the notebook toolbar: unlabelled, named by its execution count
  await page
    .locator('.jp-NotebookPanel-toolbar jp-button[data-command="jupyter-ckpt:checkpoint"]')
    .click();
  const saved = await waitNotification(/Snapshot saved: [\d.]+ [kMG]?B of kernel state in /);
  console.log(saved.split('\n')[0]);
  await dismissNotifications();
  const fromToolbar = await newSnapshot(0);

  // 2. from the Kernel menu, with a label asked for in a dialog
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  await page.locator('.lm-Menu [data-command="jupyter-ckpt:checkpoint-with-label"]').click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Snapshot kernel' });
  const input = dialog.locator('input');
  // the placeholder fits its field (not cut off)
  assert.ok(
    await input.evaluate(el => el.scrollWidth <= el.clientWidth),
    'the label field shows its whole placeholder'
  );
  await input.fill('x is 42');
  await dialog.locator('.jp-Dialog-button', { hasText: 'Snapshot' }).click();
  await waitNotification(/Snapshot "x is 42" saved/);
  await dismissNotifications();
  const labelled = await newSnapshot(1);

  // 3. with the keyboard shortcut, in command mode
  await page.locator('.jp-NotebookPanel .jp-Cell').first().locator('.jp-InputPrompt').click();
  await page.keyboard.press('Control+Alt+k');
  const fromShortcut = await newSnapshot(2);
  await dismissNotifications();

  // 4. from the panel, with a label typed there
  const panel = page.locator('#jupyter-ckpt-snapshots');
  await panel.locator('.jp-CkptPanel-labelInput').fill('from the panel');
  await panel.locator('.jp-CkptPanel-checkpoint').click();
  await waitNotification(/Snapshot "from the panel" saved/);
  await dismissNotifications();
  const fromPanel = await newSnapshot(3);

  // newest first, with label, time, size and execution count
  const items = snapshotItems();
  assert.equal(await items.count(), 4);
  assert.equal(await items.nth(0).locator('.jp-CkptSnapshot-label').innerText(), 'from the panel');
  const row = page.locator(`.jp-CkptSnapshot[data-snapshot-id="${labelled}"]`);
  assert.equal(await row.locator('.jp-CkptSnapshot-label').innerText(), 'x is 42');
  assert.match(await row.locator('.jp-CkptSnapshot-size').innerText(), /^[\d.]+ [kMG]?B$/);
  assert.match(await row.locator('.jp-CkptSnapshot-time').innerText(), /^(just now|\d+ min ago)$/);
  assert.match(await row.locator('.jp-CkptSnapshot-count').innerText(), /^In \[1\]$/);
  // the unlabelled one is named by its execution count, and its time is not repeated
  const unlabelled = page.locator(`.jp-CkptSnapshot[data-snapshot-id="${fromToolbar}"]`);
  assert.equal(await unlabelled.locator('.jp-CkptSnapshot-label').innerText(), 'Snapshot at In [1]');

  // the server agrees
  const listed = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  assert.equal(listed.length, 4);
  assert.equal(listed.find(s => s.id === fromToolbar).label, '', 'no server-clock label');
  // the size shown is what the snapshot costs on disk; what it holds is in the tooltip
  const model = listed.find(s => s.id === labelled);
  const size = row.locator('.jp-CkptSnapshot-size');
  assert.match(await size.getAttribute('title'), /stored on disk, .* of kernel state/);
  assert.ok(model.stored_bytes < model.size_bytes, 'the store deduplicates and compresses');
  assert.match(
    await page.locator('#jupyter-ckpt-snapshots .jp-CkptPanel-total').innerText(),
    /^4 snapshots of this notebook, [\d.]+ [kMG]?B on disk$/
  );
  assert.equal(listed[0].label, 'from the panel', 'newest snapshot first');
  assert.equal(listed.find(s => s.id === labelled).label, 'x is 42');

  // the notebook records them in its metadata: saved with Ctrl+S, they are in its file
  await saveNotebook();
  const saved1 = await waitRecordedOnDisk([fromToolbar, labelled, fromShortcut, fromPanel]);
  const record = saved1.metadata.jupyter_ckpt.snapshots.find(entry => entry.id === labelled);
  const server = listed.find(s => s.id === labelled);
  assert.deepEqual(record, {
    id: labelled,
    label: 'x is 42',
    created: server.created,
    execution_count: server.execution_count
  });
  assert.equal(record.execution_count, 1);

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

  // and from the notebook's record: saved, its file no longer has it
  await saveNotebook();
  await waitRecordedOnDisk([labelled, fromShortcut, fromPanel]);

  // for the record: the notebook with x back and the panel with the snapshot
  await runCell(2, 'print("restored: x =", x)', 'restored: x = 42');
  await page.waitForTimeout(300);
  if (SCREENSHOT) {
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });
    console.log(`screenshot: ${SCREENSHOT}`);
  }
});

/** Overwrite the stored chunk list of a snapshot (as a failing disk would). */
function damageSnapshot(id) {
  assert.ok(STORE_DIR, 'STORE_DIR is set by run-ui-tests.sh');
  const found = readdirSync(STORE_DIR, { recursive: true }).filter(
    name => String(name).includes(`${id}.`) && String(name).endsWith('.chunks')
  );
  assert.equal(found.length, 1, `the chunk list of ${id} in ${STORE_DIR}`);
  writeFileSync(join(STORE_DIR, String(found[0])), 'damaged');
}

test('a failed restore is reported with the server message', async () => {
  // a damaged snapshot: the server refuses it, and the panel marks it and offers no
  // Restore of it (until a manual refresh)
  const item = snapshotItems().last();
  const id = await item.getAttribute('data-snapshot-id');
  damageSnapshot(id);
  await item.locator('.jp-CkptSnapshot-restore').click();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  const damaged = await waitNotification(/Restoring ".*" failed: /, SLOW, true);
  console.log(`${damaged.split('\n')[0]}`);
  await dismissNotifications();
  await item.locator('.jp-CkptSnapshot-failure', { hasText: 'Restore failed' }).waitFor();
  assert.ok(await item.locator('.jp-CkptSnapshot-restore').isDisabled());
  await page.waitForTimeout(2 * 3000); // background refreshes keep the mark
  assert.ok(await item.locator('.jp-CkptSnapshot-restore').isDisabled());
  await page.locator('#jupyter-ckpt-snapshots .jp-CkptPanel-refresh').click();
  await item.locator('.jp-CkptSnapshot-failure').waitFor({ state: 'detached' });
  assert.ok(!(await item.locator('.jp-CkptSnapshot-restore').isDisabled()));

  // the snapshot disappears behind the panel's back: restoring it fails with a 404
  await api('DELETE', `api/ckpt/snapshots/${id}`);
  await item.locator('.jp-CkptSnapshot-restore').click();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  const failed = await waitNotification(/Restoring ".*" failed: /, SLOW, true);
  assert.match(failed, new RegExp(`Restoring ".*" failed: .*${id}`));
  console.log(`${failed.split('\n')[0]}`);
  await dismissNotifications();

  // the notebook still records it: the refreshed list shows it as not available here,
  // without Restore or Delete
  await page.locator('#jupyter-ckpt-snapshots .jp-CkptPanel-refresh').click();
  const gone = page.locator(
    `#jupyter-ckpt-snapshots .jp-CkptSnapshot.jp-mod-unavailable[data-snapshot-id="${id}"]`
  );
  await gone.waitFor();
  assert.equal(await gone.locator('.jp-CkptSnapshot-unavailable').innerText(), 'not available here');
  assert.equal(await gone.locator('.jp-CkptSnapshot-restore').count(), 0);
  assert.equal(await gone.locator('.jp-CkptSnapshot-delete').count(), 0);
  assert.equal(await gone.locator('.jp-CkptSnapshot-forget').count(), 1);
});

test('a reopened notebook remembers its snapshots', { timeout: 300_000 }, async () => {
  // saved, its file records three snapshots; the oldest was deleted on the server above
  await saveNotebook();
  const onServer = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).map(
    s => s.id
  );
  assert.equal(onServer.length, 2);
  const recorded = recordedIds(await notebookOnDisk());
  assert.equal(recorded.length, 3);
  const [deleted, ...kept] = recorded;
  assert.ok(!onServer.includes(deleted));
  assert.deepEqual([...kept].reverse(), onServer);

  // another program adds a snapshot from another machine and keys of its own to the file
  const file = (await api('GET', `api/contents/${NOTEBOOK}?type=notebook&content=1`)).content;
  const foreign = {
    id: FOREIGN,
    label: 'on another machine',
    created: '2020-01-02T03:04:05Z',
    execution_count: 3,
    host: 'elsewhere'
  };
  file.metadata.jupyter_ckpt.snapshots.unshift(foreign);
  file.metadata.jupyter_ckpt.note = 'kept';
  await api('PUT', `api/contents/${NOTEBOOK}`, { type: 'notebook', format: 'json', content: file });

  // reopen the notebook: a new page loads it from disk
  await page.goto(`${LAB_URL}lab/tree/${NOTEBOOK}?reset&token=${TOKEN}`);
  await page.locator('.jp-NotebookPanel').waitFor({ timeout: SLOW });
  await waitIdle();
  await openPanel();

  // what the server has can be restored; what only the notebook remembers is listed as not
  // available here; newest first
  const ids = [...onServer, deleted, FOREIGN];
  await snapshotItems().nth(ids.length - 1).waitFor({ timeout: SLOW });
  assert.equal(await snapshotItems().count(), ids.length);
  for (const [index, id] of ids.entries()) {
    const item = snapshotItems().nth(index);
    assert.equal(await item.getAttribute('data-snapshot-id'), id);
    const available = onServer.includes(id);
    assert.equal(await item.locator('.jp-CkptSnapshot-restore').count(), available ? 1 : 0);
    assert.equal(await item.locator('.jp-CkptSnapshot-unavailable').count(), available ? 0 : 1);
  }
  const row = snapshotItems().nth(ids.length - 1);
  assert.equal(await row.locator('.jp-CkptSnapshot-label').innerText(), 'on another machine');
  assert.equal(await row.locator('.jp-CkptSnapshot-count').innerText(), 'In [3]');
  assert.match(await row.locator('.jp-CkptSnapshot-meta').innerText(), /not available here/);
  assert.equal(await dirtyTab().count(), 0, 'opening does not change the notebook');

  // a new checkpoint is recorded, which makes the notebook dirty (of a fresh kernel: the
  // restored one runs in a pid namespace of its own, which the engine cannot checkpoint)
  await page
    .locator('.jp-NotebookPanel-toolbar jp-button[data-command="notebook:restart-kernel"]')
    .click();
  await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept').click();
  await page.waitForTimeout(500);
  await waitIdle();
  await page
    .locator('.jp-NotebookPanel-toolbar jp-button[data-command="jupyter-ckpt:checkpoint"]')
    .click();
  await waitNotification(/Snapshot .*saved/);
  await dismissNotifications();
  const fresh = await newSnapshot(ids.length);
  await dirtyTab().waitFor();

  // Forget removes one the server does not have from the notebook
  await page
    .locator(`.jp-CkptSnapshot[data-snapshot-id="${deleted}"] .jp-CkptSnapshot-forget`)
    .click();
  await page.locator('.jp-Dialog', { hasText: 'Forget kernel snapshot' }).waitFor();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Forget' }).click();
  await page
    .locator(`.jp-CkptSnapshot[data-snapshot-id="${deleted}"]`)
    .waitFor({ state: 'detached' });
  assert.equal(await snapshotItems().count(), ids.length);

  // saved: the new snapshot is there, the forgotten one is not, the other keys are kept
  await saveNotebook();
  const saved = await waitRecordedOnDisk([FOREIGN, ...kept, fresh]);
  assert.deepEqual(saved.metadata.jupyter_ckpt.snapshots[0], foreign);
  assert.equal(saved.metadata.jupyter_ckpt.note, 'kept');
});

test('a double click takes one snapshot', async () => {
  const before = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).length;
  const shown = await snapshotItems().count();
  await page
    .locator('.jp-NotebookPanel-toolbar jp-button[data-command="jupyter-ckpt:checkpoint"]')
    .dblclick();
  await waitNotification(/Snapshot saved/);
  await dismissNotifications();
  await newSnapshot(shown);
  // give a second request every chance to arrive
  await page.waitForTimeout(1500);
  const after = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  assert.equal(after.length, before + 1);
  assert.equal(await api('GET', 'api/ckpt/operations').then(ops => ops.length), 0);
});

test('a snapshot taken elsewhere appears in the panel by itself', async () => {
  // as %checkpoint in the kernel, or another browser tab, would: straight through the API
  const shown = await snapshotItems().count();
  const session = (await api('GET', 'api/sessions')).find(s => s.path === NOTEBOOK);
  const made = await api('POST', `api/ckpt/kernels/${session.kernel.id}/snapshots`, {
    label: 'from elsewhere'
  });
  // no click on Refresh: the panel polls while it is visible
  await page
    .locator(`#jupyter-ckpt-snapshots .jp-CkptSnapshot[data-snapshot-id="${made.id}"]`)
    .waitFor({ timeout: 15_000 });
  assert.equal(await snapshotItems().count(), shown + 1);
});

test('actions are named for assistive technology and the panel takes the focus', async () => {
  const panel = page.locator('#jupyter-ckpt-snapshots');
  await panel.getByRole('button', { name: 'Restore snapshot from elsewhere' }).waitFor();
  await panel.getByRole('button', { name: 'Delete snapshot from elsewhere' }).waitFor();
  assert.equal(await panel.locator('[role="status"]').count(), 1, 'a live region for the status');
  assert.equal(await panel.locator('[role="status"]').getAttribute('aria-live'), 'polite');

  // the Kernel menu entry opens the panel with the keyboard focus in it
  await page.locator('.jp-NotebookPanel .jp-Cell').first().locator('.jp-InputPrompt').click();
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  await page.locator('.lm-Menu [data-command="jupyter-ckpt:show-snapshots"]').click();
  await page.waitForFunction(
    () => document.activeElement?.closest('#jupyter-ckpt-snapshots') !== null
  );

  // the palette offers restoring the newest snapshot, and says it asks first
  await page.keyboard.press('ControlOrMeta+Shift+c');
  const palette = page.locator('.lm-CommandPalette');
  await palette.locator('input').fill('Restore Latest Kernel Snapshot');
  const item = palette.locator('.lm-CommandPalette-item[data-command="jupyter-ckpt:restore-latest"]');
  await item.waitFor();
  await item.click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' });
  await dialog.waitFor();
  assert.match(await dialog.innerText(), /from elsewhere/, 'the newest snapshot is offered');
  await dialog.locator('.jp-Dialog-button', { hasText: 'Cancel' }).click();
});

test('while the server cannot be reached, every action is disabled', async () => {
  const panel = page.locator('#jupyter-ckpt-snapshots');
  const consoleMark = consoleErrors.length; // the refused requests are logged: expected here
  // the browser loses the server: its requests fail as a dropped connection does
  await page.route('**/api/ckpt/**', route => route.abort('connectionrefused'));
  try {
    await panel
      .locator('.jp-CkptPanel-status', { hasText: 'cannot be reached' })
      .waitFor({ timeout: 15_000 });
    const restores = panel.locator('.jp-CkptSnapshot-restore');
    assert.ok((await restores.count()) > 0, 'the list stays in view');
    for (const button of await restores.all()) {
      assert.ok(await button.isDisabled(), 'Restore is disabled while offline');
    }
    for (const button of await panel.locator('.jp-CkptSnapshot-delete').all()) {
      assert.ok(await button.isDisabled(), 'Delete is disabled while offline');
    }
    assert.ok(await panel.locator('.jp-CkptPanel-checkpoint').isDisabled());
  } finally {
    await page.unroute('**/api/ckpt/**');
  }
  // back: the next poll enables them again
  await panel
    .locator('.jp-CkptPanel-status', { hasText: 'cannot be reached' })
    .waitFor({ state: 'detached', timeout: 15_000 })
    .catch(() => {});
  await page.waitForFunction(
    () =>
      !document.querySelector('#jupyter-ckpt-snapshots .jp-CkptPanel-status')?.textContent
        ?.includes('cannot be reached'),
    undefined,
    { timeout: 15_000 }
  );
  assert.ok(!(await panel.locator('.jp-CkptSnapshot-restore').first().isDisabled()));
  consoleErrors.splice(consoleMark);
});

test('no errors in the browser console from the extension', () => {
  const ours = consoleErrors.filter(text => /ckpt/i.test(text));
  assert.deepEqual(ours, []);
});
