// Browser test of the extension with a kernel that is not ipykernel, and of a refused
// snapshot (started by ../run-ui-tests.sh with LAB_URL and LAB_TOKEN, like lab.test.mjs).
//
// An R notebook (IRkernel) sets x, is snapshotted from the toolbar button, changes x and is
// restored from the panel: x is back. Nothing Python-only (magics) is offered or inserted.
// Then a Python kernel holding an io_uring is snapshotted: the notification says what holds
// it and offers "What to do", a dialog with the advice and, folded, the technical line.
//
// Run with node's test runner: node --test ui-tests/

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const LAB_URL = process.env.LAB_URL;
const TOKEN = process.env.LAB_TOKEN ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const R_NOTEBOOK = 'ckpt-r-test.ipynb';
const PY_NOTEBOOK = 'ckpt-refusal-test.ipynb';
const SLOW = 120_000;

if (!LAB_URL) {
  throw new Error('LAB_URL is not set: run this through labextension/run-ui-tests.sh');
}

let browser;
let page;

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

async function newNotebook(path, kernelspec) {
  for (const session of await api('GET', 'api/sessions')) {
    if ([session.path, session.name, session.notebook?.path].includes(path)) {
      await api('DELETE', `api/sessions/${session.id}`);
    }
  }
  for (const old of await api('GET', `api/ckpt/snapshots?notebook_path=${path}`)) {
    await api('DELETE', `api/ckpt/snapshots/${old.id}`);
  }
  await api('PUT', `api/contents/${path}`, {
    type: 'notebook',
    content: { cells: [], metadata: { kernelspec }, nbformat: 4, nbformat_minor: 5 }
  });
}

async function open(path) {
  await page.goto(`${LAB_URL}lab/tree/${path}?reset&token=${TOKEN}`);
  await page.locator('.jp-NotebookPanel').waitFor({ timeout: SLOW });
  await waitIdle();
}

async function waitIdle(timeout = SLOW) {
  await page
    .locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
    .waitFor({ timeout });
}

/** Type `code` into cell `index` (creating cells as needed), run it, wait for `expected`. */
async function runCell(index, code, expected) {
  const cells = page.locator('.jp-NotebookPanel .jp-Notebook .jp-Cell');
  while ((await cells.count()) <= index) {
    await page
      .locator('.jp-NotebookPanel-toolbar jp-button[data-command="notebook:insert-cell-below"]')
      .click();
  }
  const cell = cells.nth(index);
  await cell.locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.type(code);
  await waitIdle();
  await page.keyboard.press('Control+Enter');
  const output = cell.locator('.jp-OutputArea-output');
  await output.filter({ hasText: expected }).first().waitFor({ timeout: SLOW });
  await waitIdle();
  return (await output.allInnerTexts()).join('\n');
}

async function waitNotification(pattern, errorsExpected = false) {
  const deadline = Date.now() + SLOW;
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

function snapshotButton() {
  return page.locator(
    '.jp-NotebookPanel-toolbar jp-button[data-command="jupyter-ckpt:checkpoint"]'
  );
}

before(async () => {
  await newNotebook(R_NOTEBOOK, { name: 'ir', display_name: 'R', language: 'R' });
  await newNotebook(PY_NOTEBOOK, {
    name: 'python3',
    display_name: 'Python 3 (ipykernel)',
    language: 'python'
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync']
  });
  page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on('dialog', dialog =>
    dialog.type() === 'beforeunload' ? dialog.accept() : dialog.dismiss()
  );
});

after(async () => {
  await browser?.close();
  // their kernels (the restored R one too) would only weigh on the tests that follow
  for (const session of await api('GET', 'api/sessions')) {
    if ([R_NOTEBOOK, PY_NOTEBOOK].includes(session.path)) {
      await api('DELETE', `api/sessions/${session.id}`);
    }
  }
});

test('an R kernel is snapshotted and restored from the button and the panel', { timeout: 600_000 }, async () => {
  await open(R_NOTEBOOK);
  let sessions = [];
  const deadline = Date.now() + SLOW;
  while (!sessions.some(s => s.path === R_NOTEBOOK && s.kernel?.name === 'ir')) {
    if (Date.now() > deadline) {
      await page.screenshot({ path: 'ui-tests/output/r-kernel.png' }).catch(() => {});
      assert.fail(`no R kernel for ${R_NOTEBOOK}: sessions ${JSON.stringify(sessions)}`);
    }
    await page.waitForTimeout(250);
    sessions = await api('GET', 'api/sessions');
  }
  await waitIdle();
  await runCell(0, 'x <- 41 + 1; cat("x =", x)', 'x = 42');

  await snapshotButton().click();
  await waitNotification(/Snapshot saved: [\d.]+ [kMG]?B of kernel state in /);
  await dismissNotifications();
  const panel = page.locator('#jupyter-ckpt-snapshots');
  if (!(await panel.isVisible())) {
    await page.locator('.jp-SideBar.jp-mod-right [data-id="jupyter-ckpt-snapshots"]').click();
  }
  const item = panel.locator('.jp-CkptSnapshot').first();
  await item.waitFor({ timeout: SLOW });
  const [snapshot] = await api('GET', `api/ckpt/snapshots?notebook_path=${R_NOTEBOOK}`);
  assert.equal(snapshot.kernel_name, 'ir');
  assert.equal(await item.getAttribute('data-snapshot-id'), snapshot.id);

  // nothing Python-only: no magic went into the notebook, every command offered is the
  // language-neutral button/panel/REST set (Undo Last Cell too: its snapshots are the server's)
  const sources = await page.locator('.jp-NotebookPanel .jp-Cell .cm-content').allInnerTexts();
  assert.equal(sources.length, 1);
  assert.ok(!sources.some(text => text.includes('%')), `a magic was inserted: ${sources}`);
  await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
  const ours = await page
    .locator('.lm-Menu')
    .last()
    .locator('[data-command^="jupyter-ckpt:"]')
    .evaluateAll(items => items.map(el => el.getAttribute('data-command')));
  await page.keyboard.press('Escape');
  assert.deepEqual(
    ours.filter(c => !/^jupyter-ckpt:(checkpoint|checkpoint-with-label|show-snapshots|restore-latest|undo-last-cell)$/.test(c)),
    [],
    `Kernel menu entries: ${ours}`
  );

  await runCell(0, 'x <- 0; cat("x =", x)', 'x = 0');
  await item.locator('.jp-CkptSnapshot-restore').click();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  await waitNotification(/Restored .* into /);
  await dismissNotifications();
  await waitIdle();
  await runCell(1, 'cat("restored: x =", x)', 'restored: x = 42');
});

test('a refused snapshot says what to do, with the technical line in details', { timeout: 300_000 }, async () => {
  await open(PY_NOTEBOOK);
  const ring = await runCell(
    0,
    'import ctypes\nparams = ctypes.create_string_buffer(120)\n' +
      'ring = ctypes.CDLL(None).syscall(425, 4, params)\nprint("ring", ring)',
    /ring \d+/
  );
  const fd = ring.match(/ring (\d+)/)[1];
  await snapshotButton().click();
  const shown = await waitNotification(/cannot be snapshotted now: it holds io_uring/, true);
  assert.ok(!/pid \d+/.test(shown), `the technical line is not the message: ${shown}`);
  await page.locator('.Toastify__toast').getByRole('button', { name: 'What to do' }).click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'cannot be snapshotted' });
  await dialog.locator('.jp-CkptAdvice-text', { hasText: 'liburing' }).waitFor();
  const technical = dialog.locator('.jp-CkptAdvice-technical');
  assert.ok(!(await technical.isVisible()), 'the technical line is folded away');
  await dialog.locator('summary', { hasText: 'Technical details' }).click();
  await technical.waitFor();
  assert.match(await technical.innerText(), new RegExp(`pid \\d+ fd ${fd}: io_uring`));
  await dialog.locator('.jp-Dialog-button', { hasText: 'Close' }).click();
  await dismissNotifications();
  // the advice works: with the ring closed, the snapshot is taken
  await runCell(1, 'import os; os.close(ring); print("closed")', 'closed');
  await snapshotButton().click();
  await waitNotification(/Snapshot saved/);
  await dismissNotifications();
});
