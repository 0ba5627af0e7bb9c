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

import { chromium } from 'playwright-core';

const LAB_URL = process.env.LAB_URL;
const TOKEN = process.env.LAB_TOKEN ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const FAILURE_SHOT = process.env.FAILURE_SCREENSHOT ?? '';
const NOTEBOOK = 'ckpt-undo-cell.ipynb';
const SETTINGS = 'lab/api/settings/jupyter-ckpt:plugin';
const SLOW = 120_000;

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

function cells() {
  return page.locator('.jp-NotebookPanel .jp-Notebook .jp-Cell');
}

async function waitIdle() {
  await page
    .locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
    .waitFor({ timeout: SLOW });
}

/** Run cell `index` from its editor, then wait until it shows In [`count`]. */
async function runCell(index, count, idleFirst = true) {
  const cell = cells().nth(index);
  if (idleFirst) {
    await waitIdle();
  }
  await cell.locator('.cm-content').click();
  await page.keyboard.press('Control+Enter'); // run, stay on the cell
  const prompt = cell.locator('.jp-InputPrompt');
  await until(async () => (await prompt.innerText()) === `[${count}]:`, `In [${count}]`);
  await waitIdle();
}

async function output(index) {
  return (await cells().nth(index).locator('.jp-OutputArea').innerText()).trim();
}

async function prompt(index) {
  return (await cells().nth(index).locator('.jp-InputPrompt').innerText()).trim();
}

async function waitNotification(pattern) {
  await until(async () => {
    const errors = await page.locator('.Toastify__toast--error').allInnerTexts();
    if (errors.length) {
      throw new Error(`error notification: ${errors.join(' | ')}`);
    }
    return (await page.locator('.Toastify__toast').allInnerTexts()).find(t => pattern.test(t));
  }, `a notification matching ${pattern}`);
}

function code(id, source) {
  return { id, cell_type: 'code', source, metadata: {}, outputs: [], execution_count: null };
}

before(async () => {
  await api('PUT', `api/contents/${NOTEBOOK}`, {
    type: 'notebook',
    content: {
      cells: [
        code('set-one', 'x = 1'),
        code('set-two', "x = 2\nprint('two')"),
        code('times-ten', "x = x * 10\nprint('x is', x)")
      ],
      metadata: {
        kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' }
      },
      nbformat: 4,
      nbformat_minor: 5
    }
  });
  // the user's setting, as the Settings Editor saves it
  await api('PUT', SETTINGS, { raw: '{"autoSnapshots": "on"}' });
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
  await api('PUT', SETTINGS, { raw: '{}' }).catch(() => {});
  await api('PUT', 'api/ckpt/auto', { enabled: null }).catch(() => {});
});

test('Undo Last Cell takes the kernel and the notebook back to before it', { timeout: 400_000 }, async () => {
  // the page applied the user's setting to the server (its default is off)
  await until(async () => (await api('GET', 'api/ckpt/auto')).enabled, 'automatic snapshots on');
  const kernel = await until(
    async () => (await api('GET', 'api/sessions')).find(s => s.path === NOTEBOOK)?.kernel?.id,
    'the notebook kernel'
  );
  await runCell(0, 1);
  await runCell(1, 2);
  assert.equal(await output(1), 'two');
  await runCell(2, 3);
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
  await waitNotification(/Undid In \[3\]: the kernel and the notebook are back to just before it ran/);
  // the notebook: the last cell as before it ran, the others as they were
  await until(async () => (await prompt(2)) === '[ ]:', 'the last cell without its count');
  assert.equal(await output(2), '');
  assert.equal(await prompt(1), '[2]:');
  assert.equal(await output(1), 'two');
  // the notebook's own undo takes that back, and redo again
  await cells().nth(1).locator('.jp-InputPrompt').click();
  await page.keyboard.press('z');
  await until(async () => (await output(2)) === 'x is 20', 'the notebook undo');
  await page.keyboard.press('Shift+z');
  await until(async () => (await output(2)) === '', 'the notebook redo');

  // the kernel: x is 2 again (not 20), the same kernel id, and the cell runs on it again
  assert.equal((await api('GET', 'api/sessions')).find(s => s.path === NOTEBOOK).kernel.id, kernel);
  // (not waiting for "idle" first: the page shows the restored kernel's status only once
  // the kernel publishes one, here as this cell runs)
  await runCell(2, 3, false);
  assert.equal(await output(2), 'x is 20');
  assert.deepEqual(consoleErrors.filter(text => !text.includes('404')), []);
});
