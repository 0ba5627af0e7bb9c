// Browser test of the extension with a kernel that is not ipykernel, and of a refused
// snapshot (started by ../run-ui-tests.sh with LAB_URL and LAB_TOKEN, like lab.test.mjs).
//
// An R notebook (IRkernel) sets x, is snapshotted from the toolbar button, changes x and is
// restored from the panel: x is back. Nothing Python-only (magics) is offered or inserted.
// Then a Python kernel holding an io_uring is snapshotted: the notification says what holds
// it and offers "What to do", a dialog with the advice and, folded, the technical line.
//
// Run with node's test runner: node --test ui-tests/*.test.mjs

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Lab, PYTHON3, SLOW, api, newNotebook, requireEnv } from './lab-helpers.mjs';

const R_NOTEBOOK = 'ckpt-r-test.ipynb';
const PY_NOTEBOOK = 'ckpt-refusal-test.ipynb';

requireEnv('LAB_URL');

let lab;
let page;

function snapshotButton() {
  return lab.toolbarButton('jupyter-ckpt:checkpoint');
}

before(async () => {
  await newNotebook(R_NOTEBOOK, { kernelspec: { name: 'ir', display_name: 'R', language: 'R' } });
  await newNotebook(PY_NOTEBOOK, { kernelspec: PYTHON3 });
  lab = await Lab.launch();
  page = lab.page;
});

after(async () => {
  await lab?.close();
  // their kernels (the restored R one too) would only weigh on the tests that follow
  for (const session of await api('GET', 'api/sessions')) {
    if ([R_NOTEBOOK, PY_NOTEBOOK].includes(session.path)) {
      await api('DELETE', `api/sessions/${session.id}`);
    }
  }
});

test('an R kernel is snapshotted and restored from the button and the panel', { timeout: 600_000 }, async () => {
  await lab.open(R_NOTEBOOK);
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
  await lab.waitIdle();
  await lab.runCell(0, 'x <- 41 + 1; cat("x =", x)', 'x = 42');

  await snapshotButton().click();
  await lab.waitNotification(/Snapshot saved: [\d.]+ [kMG]?B of kernel state in /);
  await lab.dismissNotifications();
  const panel = await lab.openPanel();
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

  await lab.runCell(0, 'x <- 0; cat("x =", x)', 'x = 0');
  await item.locator('.jp-CkptSnapshot-restore').click();
  await page.locator('.jp-Dialog .jp-Dialog-button', { hasText: 'Restore' }).click();
  await lab.waitNotification(/Restored .* into /);
  await lab.dismissNotifications();
  await lab.waitIdle();
  await lab.runCell(1, 'cat("restored: x =", x)', 'restored: x = 42');
});

test('a refused snapshot says what to do, with the technical line in details', { timeout: 300_000 }, async () => {
  await lab.open(PY_NOTEBOOK);
  const ring = await lab.runCell(
    0,
    'import ctypes\nparams = ctypes.create_string_buffer(120)\n' +
      'ring = ctypes.CDLL(None).syscall(425, 4, params)\nprint("ring", ring)',
    /ring \d+/
  );
  const fd = ring.match(/ring (\d+)/)[1];
  await snapshotButton().click();
  const shown = await lab.waitNotification(/cannot be snapshotted now: it holds io_uring/, {
    errorsExpected: true
  });
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
  await lab.dismissNotifications();
  // the advice works: with the ring closed, the snapshot is taken
  await lab.runCell(1, 'import os; os.close(ring); print("closed")', 'closed');
  await snapshotButton().click();
  await lab.waitNotification(/Snapshot saved/);
  await lab.dismissNotifications();
});
