// Browser test: the history view of the snapshots panel (started by ../run-ui-tests.sh, which
// passes LAB_URL, LAB_TOKEN and NOTEBOOK_DIR).
//
// Two snapshots of a notebook's kernel ("one", x = 1; "two", x = 2) make a chain in the
// History tree, the kernel marked at "two". Restoring "one" from the tree moves the mark;
// the next snapshot ("three") branches off "one". The tree is driven by the keyboard too.
// Labels are edited in place (tree: F2; list: Rename) and are still there after the page is
// loaded again. "Restore as a new notebook" opens a second notebook with the snapshot's cells,
// whose own kernel has the snapshot's state while the first notebook's kernel runs on. A long
// snapshot is cancelled from its notification: nothing is stored, the same kernel process
// runs on with its state. A screenshot of the tree goes to the folder of $SCREENSHOT (docs/).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

const LAB_URL = process.env.LAB_URL;
const TOKEN = process.env.LAB_TOKEN ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const NOTEBOOK_DIR = process.env.NOTEBOOK_DIR ?? '';
const SCREENSHOT = process.env.SCREENSHOT ?? ''; // its folder gets this test's screenshot
const FAILURE_SHOT = process.env.FAILURE_SCREENSHOT ?? '';
const NOTEBOOK = 'ckpt-history.ipynb';
const SLOW = 120_000;

if (!LAB_URL || !NOTEBOOK_DIR) {
  throw new Error('LAB_URL or NOTEBOOK_DIR is not set: run this through labextension/run-ui-tests.sh');
}

let browser;
let page;
const consoleErrors = [];
const ids = {}; // label -> snapshot id

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

async function kernelOf(path) {
  return (await api('GET', 'api/sessions')).find(s => s.path === path)?.kernel?.id;
}

/** The notebook in view (the other one's tab is hidden). */
function notebook() {
  return page.locator('.jp-NotebookPanel:not(.lm-mod-hidden)');
}

async function waitIdle(timeout = SLOW) {
  await notebook()
    .locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    .waitFor({ timeout });
}

/** Type `code` into cell `index` of the notebook in view, run it, and wait for `expected`
 * in its output (or, without, for its prompt to show a count); the output's text. */
async function run(index, code, expected = null) {
  const cells = notebook().locator('.jp-Notebook .jp-Cell');
  const cell = cells.nth(index);
  const prompt = cell.locator('.jp-InputPrompt');
  await cell.locator('.cm-content').click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.type(code);
  await waitIdle();
  await page.keyboard.press('Control+Enter'); // run, stay on the cell
  await until(async () => /\[\d+\]/.test(await prompt.innerText()), `cell ${index} to run`);
  const output = cell.locator('.jp-OutputArea-output');
  if (expected !== null) {
    await output.filter({ hasText: expected }).first().waitFor({ timeout: SLOW });
  }
  await waitIdle();
  return (await output.allInnerTexts()).join('\n').trim();
}

async function waitNotification(pattern, timeout = SLOW) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const texts = await page.locator('.Toastify__toast').allInnerTexts();
    const hit = texts.find(text => pattern.test(text));
    if (hit) {
      return hit;
    }
    const errors = await page.locator('.Toastify__toast--error').allInnerTexts();
    if (errors.length) {
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

function panel() {
  return page.locator('#jupyter-ckpt-snapshots');
}

async function openPanel() {
  if (!(await panel().isVisible())) {
    await page.locator('.jp-SideBar.jp-mod-right [data-id="jupyter-ckpt-snapshots"]').click();
  }
  await panel().locator('.jp-CkptPanel-notebook', { hasText: NOTEBOOK }).waitFor({ timeout: SLOW });
}

/** Snapshot the kernel from the panel with `label`; its id once the panel lists it. */
async function snapshotFromPanel(label) {
  const before = new Set(
    (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).map(s => s.id)
  );
  await panel().locator('.jp-CkptPanel-labelInput').fill(label);
  await panel().locator('.jp-CkptPanel-checkpoint:enabled').click();
  await waitNotification(new RegExp(`Snapshot "${label}" saved`));
  await dismissNotifications();
  const made = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).filter(
    s => !before.has(s.id)
  );
  assert.equal(made.length, 1);
  ids[label] = made[0].id;
  return made[0].id;
}

function treeItem(id) {
  return panel().locator(`[role="tree"] [role="treeitem"][data-snapshot-id="${id}"]`);
}

/** The tree as [id, level, id of the tree item it is in] for each item, in order. */
async function treeShape() {
  return panel()
    .locator('[role="tree"] [role="treeitem"]')
    .evaluateAll(items =>
      items.map(item => [
        item.dataset.snapshotId,
        Number(item.getAttribute('aria-level')),
        item.parentElement.closest('[role="treeitem"]')?.dataset.snapshotId ?? null
      ])
    );
}

async function currentInTree() {
  return panel()
    .locator('[role="tree"] [role="treeitem"][aria-current="location"]')
    .evaluateAll(items => items.map(item => item.dataset.snapshotId));
}

async function showHistory() {
  await panel().locator('.jp-CkptPanel-view-history').click();
  assert.equal(
    await panel().locator('.jp-CkptPanel-view-history').getAttribute('aria-pressed'),
    'true'
  );
  await panel().locator('[role="tree"]').waitFor();
}

before(async () => {
  await api('PUT', `api/contents/${NOTEBOOK}`, {
    type: 'notebook',
    content: {
      cells: ['a', 'b'].map(id => ({
        id,
        cell_type: 'code',
        source: '',
        metadata: {},
        outputs: [],
        execution_count: null
      })),
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
  await notebook().waitFor({ timeout: SLOW });
  await waitIdle();
});

after(async () => {
  if (page && FAILURE_SHOT) {
    await page.screenshot({ path: FAILURE_SHOT }).catch(() => {});
  }
  await browser?.close();
});

test('the history tree branches after a restore and marks where the kernel is', { timeout: 600_000 }, async () => {
  await until(() => kernelOf(NOTEBOOK), 'the notebook kernel');
  await openPanel();
  // no snapshots yet: the status says so, no tree and no actions
  await panel().locator('.jp-CkptPanel-view-history').click();
  await panel()
    .locator('.jp-CkptPanel-status', { hasText: 'No snapshots of this notebook yet' })
    .waitFor({ timeout: SLOW });
  assert.ok(!(await panel().locator('.jp-CkptHistory-actions').isVisible()));
  assert.ok(!(await panel().locator('[role="tree"]').isVisible()));
  await run(0, 'x = 1');
  const one = await snapshotFromPanel('one');
  await run(0, 'x = 2');
  const two = await snapshotFromPanel('two');

  await showHistory();
  await until(async () => (await treeShape()).length === 2, 'both snapshots in the tree');
  assert.deepEqual(await treeShape(), [[one, 1, null], [two, 2, one]]);
  await until(async () => (await currentInTree())[0] === two, 'the kernel marked at "two"');
  assert.equal(await treeItem(two).getAttribute('aria-expanded'), null); // a leaf
  assert.equal(await treeItem(one).getAttribute('aria-expanded'), 'true');

  // back to "one" from the tree (kernel only): the mark moves there
  await treeItem(one).locator(':scope > .jp-CkptHistory-row').click();
  assert.equal(await treeItem(one).getAttribute('aria-selected'), 'true');
  await panel().getByRole('button', { name: 'Restore snapshot one' }).click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' });
  await dialog.waitFor();
  await dialog.locator('.jp-Dialog-button', { hasText: 'Restore' }).click();
  await waitNotification(/Restored "one"/);
  await dismissNotifications();
  await until(async () => (await currentInTree())[0] === one, 'the kernel marked at "one"');
  assert.equal((await api('GET', `api/ckpt/kernels/${await kernelOf(NOTEBOOK)}`)).position, one);
  assert.equal(await run(1, 'print("x is", x)', 'x is 1'), 'x is 1');

  // the kernel's next snapshot branches off "one"
  await run(0, 'x = 3');
  const three = await snapshotFromPanel('three');
  await until(async () => (await treeShape()).length === 3, 'the branch in the tree');
  assert.deepEqual(await treeShape(), [[one, 1, null], [two, 2, one], [three, 2, one]]);
  await until(async () => (await currentInTree())[0] === three, 'the kernel marked at "three"');
  assert.equal((await api('GET', `api/ckpt/snapshots/${three}`)).parent, one);

  // the keyboard: one tab stop, arrows move, Left folds and goes up, Home and End
  await treeItem(one).locator(':scope > .jp-CkptHistory-row').click();
  const focused = () => page.evaluate(() => document.activeElement?.dataset?.snapshotId ?? null);
  assert.equal(await focused(), one);
  assert.equal(await panel().locator('[role="treeitem"][tabindex="0"]').count(), 1);
  await page.keyboard.press('ArrowDown');
  assert.equal(await focused(), two);
  await page.keyboard.press('End');
  assert.equal(await focused(), three);
  await page.keyboard.press('ArrowLeft'); // a leaf: to its parent
  assert.equal(await focused(), one);
  await page.keyboard.press('ArrowLeft'); // folds it
  assert.equal(await treeItem(one).getAttribute('aria-expanded'), 'false');
  await page.keyboard.press('ArrowDown'); // nothing below a folded root
  assert.equal(await focused(), one);
  await page.keyboard.press('ArrowRight');
  assert.equal(await treeItem(one).getAttribute('aria-expanded'), 'true');
  await page.keyboard.press('ArrowRight'); // into its first child
  assert.equal(await focused(), two);
  await page.keyboard.press('Home');
  assert.equal(await focused(), one);
  assert.equal(await treeItem(one).getAttribute('aria-selected'), 'true');

  if (SCREENSHOT) {
    await dismissNotifications();
    await page.locator('.Toastify__toast').first().waitFor({ state: 'detached' });
    await treeItem(two).locator(':scope > .jp-CkptHistory-row').click();
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    const shot = join(dirname(SCREENSHOT), 'screenshot-history.png');
    await page.screenshot({ path: shot });
    console.log(`screenshot: ${shot}`);
  }
});

test('labels are edited in place and kept after the page is loaded again', { timeout: 300_000 }, async () => {
  const { two, three } = ids;
  // in the tree: F2 on the selected snapshot
  await treeItem(two).locator(':scope > .jp-CkptHistory-row').click();
  await page.keyboard.press('F2');
  const field = panel().getByRole('textbox', { name: 'New label of snapshot two' });
  await field.fill('two, renamed');
  await field.press('Enter');
  await treeItem(two).locator(':scope > .jp-CkptHistory-row > .jp-CkptHistory-label', { hasText: 'two, renamed' }).waitFor();
  assert.equal((await api('GET', `api/ckpt/snapshots/${two}`)).label, 'two, renamed');

  // in the list: its Rename button; Escape leaves the label as it was
  await panel().locator('.jp-CkptPanel-view-list').click();
  const row = panel().locator(`.jp-CkptSnapshot[data-snapshot-id="${three}"]`);
  await row.getByRole('button', { name: 'Rename snapshot three' }).click();
  let edit = panel().getByRole('textbox', { name: 'New label of snapshot three' });
  await edit.fill('not kept');
  await edit.press('Escape');
  await edit.waitFor({ state: 'detached' });
  await row.getByRole('button', { name: 'Rename snapshot three' }).click();
  edit = panel().getByRole('textbox', { name: 'New label of snapshot three' });
  await edit.fill('three: x is 3');
  await edit.press('Enter');
  await row.locator('.jp-CkptSnapshot-label', { hasText: 'three: x is 3' }).waitFor();
  assert.equal((await api('GET', `api/ckpt/snapshots/${three}`)).label, 'three: x is 3');

  await page.goto(`${LAB_URL}lab/tree/${NOTEBOOK}?token=${TOKEN}`);
  await notebook().waitFor({ timeout: SLOW });
  await waitIdle();
  await openPanel();
  await panel()
    .locator(`.jp-CkptSnapshot[data-snapshot-id="${three}"] .jp-CkptSnapshot-label`, {
      hasText: 'three: x is 3'
    })
    .waitFor({ timeout: SLOW });
  await showHistory();
  await treeItem(two).locator(':scope > .jp-CkptHistory-row > .jp-CkptHistory-label', { hasText: 'two, renamed' }).waitFor();
});

test('while the server cannot be reached, the tree stays and its actions are disabled', async () => {
  const consoleMark = consoleErrors.length; // the refused requests are logged: expected here
  const actions = panel().locator('.jp-CkptHistory-actions button');
  await treeItem(ids.one).locator(':scope > .jp-CkptHistory-row').click();
  assert.equal(await actions.count(), 3);
  for (const button of await actions.all()) {
    assert.ok(!(await button.isDisabled()));
  }
  await page.route('**/api/ckpt/**', route => route.abort('connectionrefused'));
  try {
    await panel()
      .locator('.jp-CkptPanel-status', { hasText: 'cannot be reached' })
      .waitFor({ timeout: 15_000 });
    assert.equal((await treeShape()).length, 3, 'the tree stays in view');
    for (const button of await actions.all()) {
      assert.ok(await button.isDisabled(), `${await button.innerText()} is disabled while offline`);
    }
  } finally {
    await page.unroute('**/api/ckpt/**');
  }
  await panel()
    .locator('.jp-CkptPanel-status', { hasText: 'cannot be reached' })
    .waitFor({ state: 'detached', timeout: 15_000 });
  await panel().locator('.jp-CkptHistory-fork:enabled').waitFor({ timeout: 15_000 });
  consoleErrors.splice(consoleMark);
});

test('restore as a new notebook: a second notebook whose own kernel has the snapshot', { timeout: 600_000 }, async () => {
  const { two } = ids;
  const original = await kernelOf(NOTEBOOK);
  await treeItem(two).locator(':scope > .jp-CkptHistory-row').click();
  await panel().getByRole('button', { name: 'Restore as a new notebook: snapshot two, renamed' }).click();
  await waitNotification(/as ckpt-history \(two, renamed\)\.ipynb/);
  await dismissNotifications();
  const path = 'ckpt-history (two, renamed).ipynb';
  const fork = await until(() => kernelOf(path), 'the new notebook’s kernel');
  assert.notEqual(fork, original);
  assert.equal(await kernelOf(NOTEBOOK), original); // the first notebook keeps its kernel
  assert.equal((await api('GET', `api/ckpt/kernels/${fork}`)).restored_from, two);

  // in view: the new notebook, with the cells as they were at "two"
  await page
    .locator('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current', { hasText: path })
    .waitFor({ timeout: SLOW });
  await until(
    async () => (await notebook().locator('.jp-Cell').first().locator('.cm-content').innerText()) === 'x = 2',
    'the snapshot’s cells in the new notebook'
  );
  await waitIdle();
  assert.equal(await run(1, 'print("x is", x)', 'x is 2'), 'x is 2');

  // and the first notebook's kernel runs on with its own state
  await page
    .locator('.lm-DockPanel-tabBar .lm-TabBar-tab', { hasText: NOTEBOOK })
    .filter({ hasNotText: path })
    .click();
  await notebook().locator('.jp-Cell').first().waitFor();
  assert.equal(await run(1, 'print("x is", x)', 'x is 3'), 'x is 3');
});

test('a long snapshot is cancelled from its notification: nothing is stored, the kernel runs on', { timeout: 600_000 }, async () => {
  const kernel = await kernelOf(NOTEBOOK);
  const pid = await run(1, 'import os\nbig = os.urandom(512 << 20)\nprint(os.getpid())', /\d+/);
  const before = (await api('GET', 'api/ckpt/snapshots')).map(s => s.id).sort();
  await openPanel();
  await panel().locator('.jp-CkptPanel-labelInput').fill('cancel me');
  await panel().locator('.jp-CkptPanel-checkpoint:enabled').click();
  const cancel = page.locator('.Toastify__toast').getByRole('button', { name: 'Cancel' });
  await cancel.click({ timeout: SLOW });
  await waitNotification(/Snapshot cancelled: the kernel of ckpt-history\.ipynb runs on unchanged/);
  await dismissNotifications();
  assert.deepEqual((await api('GET', 'api/ckpt/snapshots')).map(s => s.id).sort(), before);
  assert.deepEqual(await api('GET', 'api/ckpt/operations'), []);
  assert.equal(await kernelOf(NOTEBOOK), kernel);
  const after = await run(1, 'print(os.getpid(), len(big), x)', /\d+ \d+ 3/);
  assert.equal(after, `${pid} ${512 << 20} 3`);
  await run(1, 'del big\nprint("freed")', 'freed');
  assert.equal(await panel().locator('.jp-CkptSnapshot', { hasText: 'cancel me' }).count(), 0);
});

test('no errors in the browser console from the extension', () => {
  assert.deepEqual(consoleErrors.filter(text => /ckpt/i.test(text)), []);
});
