// Browser test: a notebook and its kernel restored together (started by ../run-ui-tests.sh,
// which passes LAB_URL, LAB_TOKEN and NOTEBOOK_DIR).
//
// A user runs a cell that waits (for a file the test creates) and snapshots the kernel
// meanwhile: the panel marks the snapshot "taken during In [2]" and "+ cells" (the notebook
// was stored with it). The cell ends, the user runs another cell (x = 99). Restoring the
// snapshot, the dialog says the cell resumes and offers "kernel and notebook": the cells
// and outputs come back as they were (the later cell is gone), the panel says which
// snapshot the kernel came from, the resumed cell's output appears in that cell once it
// ends, the kernel becomes idle and x is 1 again; Undo Cell Operation (Z) brings the cells
// from before the restore back. Restored again "kernel only" with "interrupt", the cells stay
// and the resumed cell shows its KeyboardInterrupt. Screenshots of the dialog and the panel
// go to the folder of $SCREENSHOT (docs/).

import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  Lab, NOTEBOOK_DIR, SCREENSHOT, SLOW, api, codeCell, kernelOf, requireEnv, until
} from './lab-helpers.mjs';

const NOTEBOOK = 'ckpt-notebook-restore.ipynb';
const GATE = 'ckpt-ui-gate'; // the waiting cell ends once this file exists

requireEnv('LAB_URL', 'NOTEBOOK_DIR');

let lab;
let page;

/** Type `code` into cell `index` and run it (as a user does, from its editor). */
async function run(index, code) {
  const cell = lab.cells().nth(index);
  const prompt = cell.locator('.jp-InputPrompt');
  await cell.locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.type(code);
  await lab.waitIdle();
  await page.keyboard.press('Control+Enter'); // run, stay on the cell
  await until(async () => /\[(\*|\d+)\]/.test(await prompt.innerText()), `cell ${index} to run`, 30_000);
}

/** Wait until cell `index` shows execution count `count`. */
async function ranAs(index, count) {
  const prompt = lab.cells().nth(index).locator('.jp-InputPrompt');
  await until(async () => (await prompt.innerText()) === `[${count}]:`, `In [${count}]`);
}

/** The outputs of cell `index`. */
function outputs(index) {
  return lab.cells().nth(index).locator('.jp-OutputArea-output');
}

before(async () => {
  rmSync(join(NOTEBOOK_DIR, GATE), { force: true });
  lab = await Lab.start(NOTEBOOK, {
    cells: [codeCell('set-x'), codeCell('waits'), codeCell('later')]
  });
  page = lab.page;
});

after(async () => {
  rmSync(join(NOTEBOOK_DIR, GATE), { force: true });
  await lab?.close();
});

test('a snapshot taken during a cell restores kernel and notebook together', { timeout: 600_000 }, async () => {
  await run(0, 'x = 1');
  await ranAs(0, 1);
  await lab.waitIdle();
  await run(
    1,
    `import os, time\nwhile not os.path.exists(${JSON.stringify(GATE)}): time.sleep(0.05)\n` +
      'print("resumed, x =", x)'
  );
  const original = await until(() => kernelOf(NOTEBOOK), 'the notebook kernel');
  const running = await until(
    async () => (await api('GET', `api/ckpt/kernels/${original}`)).running_cell,
    'the kernel to run the waiting cell'
  );
  assert.equal(running.execution_count, 2);

  // a snapshot meanwhile, from the toolbar: marked, with the notebook
  await lab.toolbarButton('jupyter-ckpt:checkpoint').click();
  await lab.waitNotification(/Snapshot saved/);
  await lab.dismissNotifications();
  const [snapshot] = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  assert.deepEqual(snapshot.running_cell, { ...running, cell_id: 'waits' });
  assert.equal(snapshot.has_notebook, true);
  const stored = await api('GET', `api/ckpt/snapshots/${snapshot.id}/notebook`);
  assert.deepEqual(stored.cells.map(c => c.id), ['set-x', 'waits', 'later']);

  await lab.openPanel();
  const row = lab.snapshotRow(snapshot.id);
  await row.waitFor({ timeout: SLOW });
  assert.equal(await row.locator('.jp-CkptSnapshot-running').innerText(), 'taken during In [2]');
  assert.equal(await row.locator('.jp-CkptSnapshot-withNotebook').innerText(), '+ cells');

  // the cell ends in the original kernel; a later cell changes x: the notebook moves on
  writeFileSync(join(NOTEBOOK_DIR, GATE), '');
  await outputs(1).filter({ hasText: 'resumed, x = 1' }).waitFor({ timeout: SLOW });
  await lab.waitIdle();
  rmSync(join(NOTEBOOK_DIR, GATE));
  await run(2, 'x = 99\nprint("later, x =", x)');
  await ranAs(2, 3);
  await outputs(2).filter({ hasText: 'later, x = 99' }).waitFor({ timeout: SLOW });
  await lab.waitIdle();

  // restore: the dialog says the cell resumes and offers the notebook too
  await row.locator('.jp-CkptSnapshot-restore').click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' });
  await dialog.waitFor();
  assert.match(await dialog.innerText(), /taken during In \[2\]: the cell resumes/);
  await dialog.locator('input[type="radio"][value="notebook"]').check();
  if (SCREENSHOT) {
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: join(dirname(SCREENSHOT), 'screenshot-restore-dialog.png') });
  }
  await dialog.locator('.jp-Dialog-button', { hasText: 'Restore' }).click();

  // the cells and outputs are those of the snapshot: the later cell is empty again (it was
  // typed after), the waiting one has no output yet and shows it runs
  await until(async () => (await outputs(2).count()) === 0, 'the snapshot’s cells');
  assert.equal(await lab.cells().count(), 3);
  assert.equal((await lab.cells().nth(2).locator('.cm-content').innerText()).trim(), '');
  assert.equal(await outputs(1).count(), 0);
  assert.equal(await lab.cells().nth(1).locator('.jp-InputPrompt').innerText(), '[*]:');

  // the panel says where the kernel came from
  const panel = page.locator('#jupyter-ckpt-snapshots');
  await panel
    .locator('.jp-CkptPanel-origin', { hasText: 'Kernel restored from the snapshot at In [2]' })
    .waitFor({ timeout: 15_000 });
  await panel.locator(`.jp-CkptSnapshot.jp-mod-current[data-snapshot-id="${snapshot.id}"]`).waitFor();

  // the notebook is connected to the restored kernel (not "Connecting") while it resumes
  // the cell; once the cell ends, its output appears in it, and the kernel is idle
  const fork = await until(async () => {
    const id = await kernelOf(NOTEBOOK);
    return id && id !== original ? id : null;
  }, 'the notebook to use the restored kernel');
  await until(
    async () => (await api('GET', `api/kernels/${fork}`)).connections > 0,
    'the notebook to connect to the restored kernel',
    30_000
  );
  writeFileSync(join(NOTEBOOK_DIR, GATE), '');
  await outputs(1).filter({ hasText: 'resumed, x = 1' }).waitFor({ timeout: SLOW });
  await lab.waitIdle();
  assert.equal(await lab.cells().nth(1).locator('.jp-InputPrompt').innerText(), '[2]:');
  if (SCREENSHOT) {
    await page.screenshot({ path: join(dirname(SCREENSHOT), 'screenshot-notebook-restore.png') });
  }

  // Undo Cell Operation (Z, in command mode) brings back the cells from before the restore
  await lab.cells().nth(0).locator('.jp-InputPrompt').click();
  await page.keyboard.press('z');
  await outputs(2).filter({ hasText: 'later, x = 99' }).waitFor();
  // the kernel is the snapshot's: x is 1, whatever the notebook shows
  await page.keyboard.press('Shift+z');
  await until(async () => (await outputs(2).count()) === 0, 'the snapshot’s cells again');
  await run(2, 'print("now, x =", x)');
  await outputs(2).filter({ hasText: 'now, x = 1' }).waitFor({ timeout: SLOW });
  assert.equal(await lab.cells().nth(2).locator('.jp-InputPrompt').innerText(), '[3]:');
});

test('kernel only, interrupting the resumed cell: the cells stay, the interrupt shows in that cell', { timeout: 300_000 }, async () => {
  rmSync(join(NOTEBOOK_DIR, GATE), { force: true }); // the resumed cell would wait forever
  const before = await kernelOf(NOTEBOOK);
  const [snapshot] = await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`);
  const row = lab.snapshotRow(snapshot.id);
  await row.locator('.jp-CkptSnapshot-restore').click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' });
  await dialog.waitFor();
  assert.ok(await dialog.locator('input[type="radio"][value="kernel"]').isChecked(), 'kernel only by default');
  await dialog.locator('.jp-CkptRestoreOptions-interrupt').check();
  await dialog.locator('.jp-Dialog-button', { hasText: 'Restore' }).click();

  // the kernel is a new one, the cells are as they were (the last cell's output stays), and
  // the interrupted cell shows its KeyboardInterrupt; then the kernel is idle
  await until(async () => {
    const id = await kernelOf(NOTEBOOK);
    return id && id !== before;
  }, 'the notebook to use the restored kernel');
  await outputs(1).filter({ hasText: 'KeyboardInterrupt' }).waitFor({ timeout: SLOW });
  await lab.waitIdle();
  await outputs(2).filter({ hasText: 'now, x = 1' }).waitFor();
  assert.equal(await lab.cells().count(), 3);
  await run(0, 'print("x is", x)');
  await outputs(0).filter({ hasText: 'x is 1' }).waitFor({ timeout: SLOW });
});

test('no errors in the browser console from the extension', () => {
  assert.deepEqual(lab.consoleErrors.filter(text => /ckpt/i.test(text)), []);
});
