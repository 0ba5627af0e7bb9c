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
// Run with node's test runner: node --test ui-tests/*.test.mjs

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import { Lab, NOTEBOOK_DIR, SCREENSHOT, SLOW, STORE_DIR, api, kernelOf, requireEnv } from './lab-helpers.mjs';

// With NOTEBOOK_DIR (the server's root directory) the test reads the saved notebook file
// itself (else: contents API); in STORE_DIR (the server's snapshot store) it damages a
// snapshot the way a disk can.
const NOTEBOOK = 'ckpt-ui-test.ipynb';
// a snapshot taken on another machine, which this server does not have
const FOREIGN = 'f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0';

requireEnv('LAB_URL');

let lab;
let page;

/** Wait until the panel lists `before + 1` snapshots; return the id of the newest. */
async function newSnapshot(before) {
  await lab.snapshotItems().nth(before).waitFor({ timeout: SLOW });
  assert.equal(await lab.snapshotItems().count(), before + 1);
  return lab.snapshotItems().first().getAttribute('data-snapshot-id');
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
  lab = await Lab.start(NOTEBOOK);
  page = lab.page;
});

after(() => lab?.close());

test('the toolbar button, Kernel menu entries and snapshots panel are there', async () => {
  const button = lab.toolbarButton('jupyter-ckpt:checkpoint');
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

  const panel = await lab.openPanel(NOTEBOOK);
  await panel
    .locator('.jp-CkptPanel-status', { hasText: 'No snapshots of this notebook yet' })
    .waitFor();
});

test('checkpoint, restart, restore: the kernel state comes back', { timeout: 600_000 }, async () => {
  // state in the kernel
  await lab.runCell(0, 'x = 41 + 1\nprint("x =", x)', 'x = 42');

  // 1. a snapshot from the notebook toolbar: unlabelled, named by its execution count
  await lab.toolbarButton('jupyter-ckpt:checkpoint').click();
  const saved = await lab.waitNotification(/Snapshot saved: [\d.]+ [kMG]?B of kernel state in /);
  console.log(saved.split('\n')[0]);
  await lab.dismissNotifications();
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
  await lab.waitNotification(/Snapshot "x is 42" saved/);
  await lab.dismissNotifications();
  const labelled = await newSnapshot(1);

  // 3. with the keyboard shortcut, in command mode
  await page.locator('.jp-NotebookPanel .jp-Cell').first().locator('.jp-InputPrompt').click();
  await page.keyboard.press('Control+Alt+k');
  const fromShortcut = await newSnapshot(2);
  await lab.dismissNotifications();

  // 4. from the panel, with a label typed there
  const panel = page.locator('#jupyter-ckpt-snapshots');
  await panel.locator('.jp-CkptPanel-labelInput').fill('from the panel');
  await panel.locator('.jp-CkptPanel-checkpoint').click();
  await lab.waitNotification(/Snapshot "from the panel" saved/);
  await lab.dismissNotifications();
  const fromPanel = await newSnapshot(3);

  // newest first, with label, time, size and execution count
  const items = lab.snapshotItems();
  assert.equal(await items.count(), 4);
  assert.equal(await items.nth(0).locator('.jp-CkptSnapshot-label').innerText(), 'from the panel');
  const row = lab.snapshotRow(labelled);
  assert.equal(await row.locator('.jp-CkptSnapshot-label').innerText(), 'x is 42');
  assert.match(await row.locator('.jp-CkptSnapshot-size').innerText(), /^[\d.]+ [kMG]?B$/);
  assert.match(await row.locator('.jp-CkptSnapshot-time').innerText(), /^(just now|\d+ min ago)$/);
  assert.match(await row.locator('.jp-CkptSnapshot-count').innerText(), /^In \[1\]$/);
  // the unlabelled one is named by its execution count, and its time is not repeated
  const unlabelled = lab.snapshotRow(fromToolbar);
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
  const kernelBefore = await kernelOf(NOTEBOOK);
  await lab.restartKernel();
  const gone = await lab.runCell(1, 'print("x =", x)', 'NameError');
  assert.match(gone, /NameError/);

  // restore the labelled snapshot from the panel
  await lab.snapshotRow(labelled).locator('.jp-CkptSnapshot-restore').click();
  await page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' }).waitFor();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  const restored = await lab.waitNotification(/Restored "x is 42".* into /);
  console.log(`${restored.split('\n')[0]}`);
  await lab.waitIdle();

  // the notebook now talks to the restored kernel, and x is back
  const back = await lab.runCell(1, 'print("x =", x)', 'x = 42');
  assert.match(back, /x = 42/);
  const kernelAfter = await kernelOf(NOTEBOOK);
  console.log(`kernel ${kernelBefore} -> ${kernelAfter}`);

  // delete the toolbar's snapshot, after confirming
  await lab.snapshotRow(fromToolbar).locator('.jp-CkptSnapshot-delete').click();
  await page.locator('.jp-Dialog', { hasText: 'Delete kernel snapshot' }).waitFor();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Delete' }).click();
  await lab.waitNotification(/Deleted snapshot/);
  await lab.snapshotRow(fromToolbar).waitFor({ state: 'detached' });
  assert.equal(await lab.snapshotItems().count(), 3);
  const remaining = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  assert.equal(remaining.length, 3);
  assert.ok(!remaining.some(s => s.id === fromToolbar), 'deleted on the server');

  // and from the notebook's record: saved, its file no longer has it
  await saveNotebook();
  await waitRecordedOnDisk([labelled, fromShortcut, fromPanel]);

  // for the record: the notebook with x back and the panel with the snapshot
  await lab.runCell(2, 'print("restored: x =", x)', 'restored: x = 42');
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
  const item = lab.snapshotItems().last();
  const id = await item.getAttribute('data-snapshot-id');
  damageSnapshot(id);
  await item.locator('.jp-CkptSnapshot-restore').click();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  const damaged = await lab.waitNotification(/Restoring ".*" failed: /, { errorsExpected: true });
  console.log(`${damaged.split('\n')[0]}`);
  await lab.dismissNotifications();
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
  const failed = await lab.waitNotification(/Restoring ".*" failed: /, { errorsExpected: true });
  assert.match(failed, new RegExp(`Restoring ".*" failed: .*${id}`));
  console.log(`${failed.split('\n')[0]}`);
  await lab.dismissNotifications();

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
  await lab.open(NOTEBOOK);
  await lab.openPanel(NOTEBOOK);

  // what the server has can be restored; what only the notebook remembers is listed as not
  // available here; newest first
  const ids = [...onServer, deleted, FOREIGN];
  await lab.snapshotItems().nth(ids.length - 1).waitFor({ timeout: SLOW });
  assert.equal(await lab.snapshotItems().count(), ids.length);
  for (const [index, id] of ids.entries()) {
    const item = lab.snapshotItems().nth(index);
    assert.equal(await item.getAttribute('data-snapshot-id'), id);
    const available = onServer.includes(id);
    assert.equal(await item.locator('.jp-CkptSnapshot-restore').count(), available ? 1 : 0);
    assert.equal(await item.locator('.jp-CkptSnapshot-unavailable').count(), available ? 0 : 1);
  }
  const row = lab.snapshotItems().nth(ids.length - 1);
  assert.equal(await row.locator('.jp-CkptSnapshot-label').innerText(), 'on another machine');
  assert.equal(await row.locator('.jp-CkptSnapshot-count').innerText(), 'In [3]');
  assert.match(await row.locator('.jp-CkptSnapshot-meta').innerText(), /not available here/);
  assert.equal(await dirtyTab().count(), 0, 'opening does not change the notebook');

  // a new checkpoint is recorded, which makes the notebook dirty (of a fresh kernel: the
  // restored one runs in a pid namespace of its own, which the engine cannot checkpoint)
  await lab.restartKernel();
  await lab.toolbarButton('jupyter-ckpt:checkpoint').click();
  await lab.waitNotification(/Snapshot .*saved/);
  await lab.dismissNotifications();
  const fresh = await newSnapshot(ids.length);
  await dirtyTab().waitFor();

  // Forget removes one the server does not have from the notebook
  await lab.snapshotRow(deleted).locator('.jp-CkptSnapshot-forget').click();
  await page.locator('.jp-Dialog', { hasText: 'Forget kernel snapshot' }).waitFor();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Forget' }).click();
  await lab.snapshotRow(deleted).waitFor({ state: 'detached' });
  assert.equal(await lab.snapshotItems().count(), ids.length);

  // saved: the new snapshot is there, the forgotten one is not, the other keys are kept
  await saveNotebook();
  const saved = await waitRecordedOnDisk([FOREIGN, ...kept, fresh]);
  assert.deepEqual(saved.metadata.jupyter_ckpt.snapshots[0], foreign);
  assert.equal(saved.metadata.jupyter_ckpt.note, 'kept');
});

test('a double click takes one snapshot', async () => {
  const before = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).length;
  const shown = await lab.snapshotItems().count();
  await lab.toolbarButton('jupyter-ckpt:checkpoint').dblclick();
  await lab.waitNotification(/Snapshot saved/);
  await lab.dismissNotifications();
  await newSnapshot(shown);
  // give a second request every chance to arrive
  await page.waitForTimeout(1500);
  const after = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  assert.equal(after.length, before + 1);
  assert.equal(await api('GET', 'api/ckpt/operations').then(ops => ops.length), 0);
});

test('a snapshot taken elsewhere appears in the panel by itself', async () => {
  // as %checkpoint in the kernel, or another browser tab, would: straight through the API
  const shown = await lab.snapshotItems().count();
  const session = (await api('GET', 'api/sessions')).find(s => s.path === NOTEBOOK);
  const made = await api('POST', `api/ckpt/kernels/${session.kernel.id}/snapshots`, {
    label: 'from elsewhere'
  });
  // no click on Refresh: the panel polls while it is visible
  await lab.snapshotRow(made.id).waitFor({ timeout: 15_000 });
  assert.equal(await lab.snapshotItems().count(), shown + 1);
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
  const consoleMark = lab.consoleErrors.length; // the refused requests are logged: expected here
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
  lab.consoleErrors.splice(consoleMark);
});

test('no errors in the browser console from the extension', () => {
  const ours = lab.consoleErrors.filter(text => /ckpt/i.test(text));
  assert.deepEqual(ours, []);
});
