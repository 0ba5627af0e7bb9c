// Browser test: automatic snapshots before each cell and "Undo Last Cell" (started by
// ../run-ui-tests.sh, which passes LAB_URL and LAB_TOKEN).
//
// The user turns the setting "Automatic snapshot before each cell" on; the server then
// snapshots the kernel before each cell run from the notebook, storing the notebook as it
// was. Accel Alt Z restores the kernel to just before the last cell and puts the cells and
// outputs back as they were then (the notebook's own undo takes that back); the kernel's
// state is checked by running the undone cell again. At the end the setting is put back,
// so that the browser tests after this one see the server's default (off).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Lab, api, codeCell, kernelOf, newNotebook, requireEnv, until } from './lab-helpers.mjs';

const NOTEBOOK = 'ckpt-undo-cell.ipynb';
const SETTINGS = 'lab/api/settings/jupyter-ckpt:plugin';

requireEnv('LAB_URL');

let lab;
let page;

/** Run cell `index` as it is, from its editor, then wait until it shows In [`count`]. */
async function runAsIs(index, count, idleFirst = true) {
  const cell = lab.cells().nth(index);
  if (idleFirst) {
    await lab.waitIdle();
  }
  await cell.locator('.cm-content').click();
  await page.keyboard.press('Control+Enter'); // run, stay on the cell
  const prompt = cell.locator('.jp-InputPrompt');
  await until(async () => (await prompt.innerText()) === `[${count}]:`, `In [${count}]`);
  await lab.waitIdle();
}

async function output(index) {
  return (await lab.cells().nth(index).locator('.jp-OutputArea').innerText()).trim();
}

async function prompt(index) {
  return (await lab.cells().nth(index).locator('.jp-InputPrompt').innerText()).trim();
}

before(async () => {
  await newNotebook(NOTEBOOK, {
    cells: [
      codeCell('set-one', 'x = 1'),
      codeCell('set-two', "x = 2\nprint('two')"),
      codeCell('times-ten', "x = x * 10\nprint('x is', x)")
    ]
  });
  // the user's setting, as the Settings Editor saves it
  await api('PUT', SETTINGS, { raw: '{"autoSnapshots": "on"}' });
  lab = await Lab.launch();
  page = lab.page;
  await lab.open(NOTEBOOK, { idle: false });
});

after(async () => {
  await lab?.close();
  await api('PUT', SETTINGS, { raw: '{}' }).catch(() => {});
  await api('PUT', 'api/ckpt/auto', { enabled: null }).catch(() => {});
});

test('Undo Last Cell takes the kernel and the notebook back to before it', { timeout: 400_000 }, async () => {
  // the page applied the user's setting to the server (its default is off)
  await until(async () => (await api('GET', 'api/ckpt/auto')).enabled, 'automatic snapshots on');
  const kernel = await until(() => kernelOf(NOTEBOOK), 'the notebook kernel');
  await runAsIs(0, 1);
  await runAsIs(1, 2);
  assert.equal(await output(1), 'two');
  await runAsIs(2, 3);
  assert.equal(await output(2), 'x is 20');

  // a snapshot before each cell, naming it; the last one holds the notebook as it was
  const autos = await until(async () => {
    const listed = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`))
      .filter(s => s.auto);
    return listed.length === 3 && (await api('GET', 'api/ckpt/operations')).length === 0
      ? listed : null;
  }, 'three automatic snapshots stored');
  assert.deepEqual(autos.map(s => s.auto.cell_id), ['times-ten', 'set-two', 'set-one']);
  assert.ok(autos[0].has_notebook);
  const stored = await api('GET', `api/ckpt/snapshots/${autos[0].id}/notebook`);
  assert.deepEqual(stored.cells.map(c => c.execution_count), [1, 2, null]);

  // Accel Alt Z, in the notebook (command mode), once the command knows its snapshot
  await until(async () => (await api('GET', `api/ckpt/kernels/${kernel}/undo`)).snapshot?.id === autos[0].id,
    'the server to name the snapshot to undo to');
  await page.keyboard.press('Escape');
  await until(async () => {
    await page.keyboard.press('Control+Alt+z');
    return (await page.locator('.Toastify__toast').allInnerTexts()).some(t => /Undoing|Undid/.test(t));
  }, 'Undo Last Cell to start', 30_000);
  await lab.waitNotification(/Undid In \[3\]: the kernel and the notebook are back to just before it ran/);
  // the notebook: the last cell as before it ran, the others as they were
  await until(async () => (await prompt(2)) === '[ ]:', 'the last cell without its count');
  assert.equal(await output(2), '');
  assert.equal(await prompt(1), '[2]:');
  assert.equal(await output(1), 'two');
  // the notebook's own undo takes that back, and redo again
  await lab.cells().nth(1).locator('.jp-InputPrompt').click();
  await page.keyboard.press('z');
  await until(async () => (await output(2)) === 'x is 20', 'the notebook undo');
  await page.keyboard.press('Shift+z');
  await until(async () => (await output(2)) === '', 'the notebook redo');

  // the kernel: x is 2 again (not 20), the same kernel id, and the cell runs on it again
  assert.equal(await kernelOf(NOTEBOOK), kernel);
  // (not waiting for "idle" first: the page shows the restored kernel's status only once
  // the kernel publishes one, here as this cell runs)
  await runAsIs(2, 3, false);
  assert.equal(await output(2), 'x is 20');
  assert.deepEqual(lab.consoleErrors.filter(text => !text.includes('404')), []);
});
