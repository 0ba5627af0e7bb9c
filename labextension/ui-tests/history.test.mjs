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

import { Lab, SCREENSHOT, SLOW, api, codeCell, kernelOf, requireEnv, until } from './lab-helpers.mjs';

const NOTEBOOK = 'ckpt-history.ipynb';

requireEnv('LAB_URL', 'NOTEBOOK_DIR');

let lab;
let page;
const ids = {}; // label -> snapshot id

/** Snapshot the kernel from the panel with `label`; its id once the panel lists it. */
async function snapshotFromPanel(label) {
  const before = new Set(
    (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).map(s => s.id)
  );
  await lab.panel().locator('.jp-CkptPanel-labelInput').fill(label);
  await lab.panel().locator('.jp-CkptPanel-checkpoint:enabled').click();
  await lab.waitNotification(new RegExp(`Snapshot "${label}" saved`));
  await lab.dismissNotifications();
  const made = (await api('GET', `api/ckpt/snapshots?notebook_path=${NOTEBOOK}`)).filter(
    s => !before.has(s.id)
  );
  assert.equal(made.length, 1);
  ids[label] = made[0].id;
  return made[0].id;
}

function treeItem(id) {
  return lab.panel().locator(`[role="tree"] [role="treeitem"][data-snapshot-id="${id}"]`);
}

/** The tree as [id, level, id of the tree item it is in] for each item, in order. */
async function treeShape() {
  return lab.panel()
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
  return lab.panel()
    .locator('[role="tree"] [role="treeitem"][aria-current="location"]')
    .evaluateAll(items => items.map(item => item.dataset.snapshotId));
}

async function showHistory() {
  await lab.panel().locator('.jp-CkptPanel-view-history').click();
  assert.equal(
    await lab.panel().locator('.jp-CkptPanel-view-history').getAttribute('aria-pressed'),
    'true'
  );
  await lab.panel().locator('[role="tree"]').waitFor();
}

before(async () => {
  lab = await Lab.start(NOTEBOOK, { cells: [codeCell('a'), codeCell('b')] });
  page = lab.page;
});

after(() => lab?.close());

test('the history tree branches after a restore and marks where the kernel is', { timeout: 600_000 }, async () => {
  await until(() => kernelOf(NOTEBOOK), 'the notebook kernel');
  await lab.openPanel(NOTEBOOK);
  // no snapshots yet: the status says so, no tree and no actions
  await lab.panel().locator('.jp-CkptPanel-view-history').click();
  await lab.panel()
    .locator('.jp-CkptPanel-status', { hasText: 'No snapshots of this notebook yet' })
    .waitFor({ timeout: SLOW });
  assert.ok(!(await lab.panel().locator('.jp-CkptHistory-actions').isVisible()));
  assert.ok(!(await lab.panel().locator('[role="tree"]').isVisible()));
  await lab.runCell(0, 'x = 1');
  const one = await snapshotFromPanel('one');
  await lab.runCell(0, 'x = 2');
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
  await lab.panel().getByRole('button', { name: 'Restore snapshot one' }).click();
  const dialog = page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' });
  await dialog.waitFor();
  await dialog.locator('.jp-Dialog-button', { hasText: 'Restore' }).click();
  await lab.waitNotification(/Restored "one"/);
  await lab.dismissNotifications();
  await until(async () => (await currentInTree())[0] === one, 'the kernel marked at "one"');
  assert.equal((await api('GET', `api/ckpt/kernels/${await kernelOf(NOTEBOOK)}`)).position, one);
  assert.equal(await lab.runCell(1, 'print("x is", x)', 'x is 1'), 'x is 1');

  // the kernel's next snapshot branches off "one"
  await lab.runCell(0, 'x = 3');
  const three = await snapshotFromPanel('three');
  await until(async () => (await treeShape()).length === 3, 'the branch in the tree');
  assert.deepEqual(await treeShape(), [[one, 1, null], [two, 2, one], [three, 2, one]]);
  await until(async () => (await currentInTree())[0] === three, 'the kernel marked at "three"');
  assert.equal((await api('GET', `api/ckpt/snapshots/${three}`)).parent, one);

  // the keyboard: one tab stop, arrows move, Left folds and goes up, Home and End
  await treeItem(one).locator(':scope > .jp-CkptHistory-row').click();
  const focused = () => page.evaluate(() => document.activeElement?.dataset?.snapshotId ?? null);
  assert.equal(await focused(), one);
  assert.equal(await lab.panel().locator('[role="treeitem"][tabindex="0"]').count(), 1);
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
    await lab.dismissNotifications();
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
  const field = lab.panel().getByRole('textbox', { name: 'New label of snapshot two' });
  await field.fill('two, renamed');
  await field.press('Enter');
  await treeItem(two).locator(':scope > .jp-CkptHistory-row > .jp-CkptHistory-label', { hasText: 'two, renamed' }).waitFor();
  assert.equal((await api('GET', `api/ckpt/snapshots/${two}`)).label, 'two, renamed');

  // in the list: its Rename button; Escape leaves the label as it was
  await lab.panel().locator('.jp-CkptPanel-view-list').click();
  const row = lab.panel().locator(`.jp-CkptSnapshot[data-snapshot-id="${three}"]`);
  await row.getByRole('button', { name: 'Rename snapshot three' }).click();
  let edit = lab.panel().getByRole('textbox', { name: 'New label of snapshot three' });
  await edit.fill('not kept');
  await edit.press('Escape');
  await edit.waitFor({ state: 'detached' });
  await row.getByRole('button', { name: 'Rename snapshot three' }).click();
  edit = lab.panel().getByRole('textbox', { name: 'New label of snapshot three' });
  await edit.fill('three: x is 3');
  await edit.press('Enter');
  await row.locator('.jp-CkptSnapshot-label', { hasText: 'three: x is 3' }).waitFor();
  assert.equal((await api('GET', `api/ckpt/snapshots/${three}`)).label, 'three: x is 3');

  await lab.open(NOTEBOOK);
  await lab.openPanel(NOTEBOOK);
  await lab.panel()
    .locator(`.jp-CkptSnapshot[data-snapshot-id="${three}"] .jp-CkptSnapshot-label`, {
      hasText: 'three: x is 3'
    })
    .waitFor({ timeout: SLOW });
  await showHistory();
  await treeItem(two).locator(':scope > .jp-CkptHistory-row > .jp-CkptHistory-label', { hasText: 'two, renamed' }).waitFor();
});

test('while the server cannot be reached, the tree stays and its actions are disabled', async () => {
  const consoleMark = lab.consoleErrors.length; // the refused requests are logged: expected here
  const actions = lab.panel().locator('.jp-CkptHistory-actions button');
  await treeItem(ids.one).locator(':scope > .jp-CkptHistory-row').click();
  assert.equal(await actions.count(), 3);
  for (const button of await actions.all()) {
    assert.ok(!(await button.isDisabled()));
  }
  await page.route('**/api/ckpt/**', route => route.abort('connectionrefused'));
  try {
    await lab.panel()
      .locator('.jp-CkptPanel-status', { hasText: 'cannot be reached' })
      .waitFor({ timeout: 15_000 });
    assert.equal((await treeShape()).length, 3, 'the tree stays in view');
    for (const button of await actions.all()) {
      assert.ok(await button.isDisabled(), `${await button.innerText()} is disabled while offline`);
    }
  } finally {
    await page.unroute('**/api/ckpt/**');
  }
  await lab.panel()
    .locator('.jp-CkptPanel-status', { hasText: 'cannot be reached' })
    .waitFor({ state: 'detached', timeout: 15_000 });
  await lab.panel().locator('.jp-CkptHistory-fork:enabled').waitFor({ timeout: 15_000 });
  lab.consoleErrors.splice(consoleMark);
});

test('restore as a new notebook: a second notebook whose own kernel has the snapshot', { timeout: 600_000 }, async () => {
  const { two } = ids;
  const original = await kernelOf(NOTEBOOK);
  await treeItem(two).locator(':scope > .jp-CkptHistory-row').click();
  await lab.panel().getByRole('button', { name: 'Restore as a new notebook: snapshot two, renamed' }).click();
  await lab.waitNotification(/as ckpt-history \(two, renamed\)\.ipynb/);
  await lab.dismissNotifications();
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
    async () => (await lab.notebook().locator('.jp-Cell').first().locator('.cm-content').innerText()) === 'x = 2',
    'the snapshot’s cells in the new notebook'
  );
  await lab.waitIdle();
  assert.equal(await lab.runCell(1, 'print("x is", x)', 'x is 2'), 'x is 2');

  // and the first notebook's kernel runs on with its own state
  await page
    .locator('.lm-DockPanel-tabBar .lm-TabBar-tab', { hasText: NOTEBOOK })
    .filter({ hasNotText: path })
    .click();
  await lab.notebook().locator('.jp-Cell').first().waitFor();
  assert.equal(await lab.runCell(1, 'print("x is", x)', 'x is 3'), 'x is 3');
});

test('a long snapshot is cancelled from its notification: nothing is stored, the kernel runs on', { timeout: 600_000 }, async () => {
  const kernel = await kernelOf(NOTEBOOK);
  const pid = await lab.runCell(1, 'import os\nbig = os.urandom(512 << 20)\nprint(os.getpid())', /\d+/);
  const before = (await api('GET', 'api/ckpt/snapshots')).map(s => s.id).sort();
  await lab.openPanel(NOTEBOOK);
  await lab.panel().locator('.jp-CkptPanel-labelInput').fill('cancel me');
  await lab.panel().locator('.jp-CkptPanel-checkpoint:enabled').click();
  const cancel = page.locator('.Toastify__toast').getByRole('button', { name: 'Cancel' });
  await cancel.click({ timeout: SLOW });
  await lab.waitNotification(/Snapshot cancelled: the kernel of ckpt-history\.ipynb runs on unchanged/);
  await lab.dismissNotifications();
  assert.deepEqual((await api('GET', 'api/ckpt/snapshots')).map(s => s.id).sort(), before);
  assert.deepEqual(await api('GET', 'api/ckpt/operations'), []);
  assert.equal(await kernelOf(NOTEBOOK), kernel);
  const after = await lab.runCell(1, 'print(os.getpid(), len(big), x)', /\d+ \d+ 3/);
  assert.equal(after, `${pid} ${512 << 20} 3`);
  await lab.runCell(1, 'del big\nprint("freed")', 'freed');
  assert.equal(await lab.panel().locator('.jp-CkptSnapshot', { hasText: 'cancel me' }).count(), 0);
});

test('no errors in the browser console from the extension', () => {
  assert.deepEqual(lab.consoleErrors.filter(text => /ckpt/i.test(text)), []);
});
