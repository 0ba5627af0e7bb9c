// Browser test: snapshots made on another host (started by ../run-ui-tests.sh, which passes
// LAB_URL, LAB_TOKEN, NOTEBOOK_DIR and STORE_DIR).
//
// Two snapshots of a real process that mapped a copy of libm are put into the Lab's store
// for a notebook (made_elsewhere.py): one on this host, one in a UTS namespace named
// "elsewhere", as another host sharing the store makes them. The panel marks only the second
// "made on elsewhere"; its restore dialog shows the server's host verdict ("made on host
// elsewhere", Restore enabled). Once the library copy is deleted, the dialog names it as
// refused, in red, and Restore is disabled (Enter does not accept either).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { Lab, NOTEBOOK_DIR, SLOW, STORE_DIR, api, requireEnv } from './lab-helpers.mjs';

const NOTEBOOK = 'ckpt-host-verdict.ipynb';
const HELPER = join(dirname(fileURLToPath(import.meta.url)), 'made_elsewhere.py');

requireEnv('LAB_URL', 'NOTEBOOK_DIR', 'STORE_DIR');

/** A snapshot of a process that mapped `library`, made on `host` (null: this host). */
function snapshotMadeOn(host, library, label) {
  const run = ['python3', HELPER, STORE_DIR, NOTEBOOK, library, label];
  const argv = host ? ['unshare', '--uts', '--', 'sh', '-c', 'hostname "$0" && exec "$@"', host, ...run] : run;
  return execFileSync(argv[0], argv.slice(1), { encoding: 'utf8' }).trim();
}

let lab;

before(async () => {
  lab = await Lab.start(NOTEBOOK, { idle: false });
});

after(() => lab?.close());

test('a snapshot made on another host is marked and its restore dialog gives the verdict', { timeout: 300_000 }, async () => {
  const library = join(NOTEBOOK_DIR, 'libm-elsewhere.so');
  const local = snapshotMadeOn(null, join(NOTEBOOK_DIR, 'libm-here.so'), 'made here');
  const foreign = snapshotMadeOn('elsewhere', library, 'made elsewhere');
  const here = (await api('GET', 'api/ckpt/host')).hostname;
  assert.notEqual(here, 'elsewhere');

  await lab.openPanel();
  await lab.snapshotRow(foreign).locator('.jp-CkptSnapshot-host').waitFor({ timeout: SLOW });
  assert.equal(await lab.snapshotRow(foreign).locator('.jp-CkptSnapshot-host').innerText(), 'made on elsewhere');
  await lab.snapshotRow(local).waitFor();
  assert.equal(await lab.snapshotRow(local).locator('.jp-CkptSnapshot-host').count(), 0);

  // restorable: the differences are listed, Restore stays enabled
  const dialog = lab.page.locator('.jp-Dialog', { hasText: 'Restore kernel snapshot' });
  const accept = dialog.locator('.jp-Dialog-footer .jp-mod-accept');
  await lab.snapshotRow(foreign).locator('.jp-CkptSnapshot-restore').click();
  await dialog.locator('.jp-CkptVerdict').waitFor({ timeout: SLOW });
  const lines = await dialog.locator('.jp-CkptVerdict-line').allInnerTexts();
  assert.ok(lines.includes(`made on host elsewhere (this is ${here})`), lines.join(' | '));
  assert.equal(await dialog.locator('.jp-CkptVerdict-line.jp-mod-error').count(), 0);
  assert.equal(await accept.isDisabled(), false);
  await dialog.locator('.jp-Dialog-footer .jp-mod-reject').click();
  await dialog.waitFor({ state: 'detached' });

  // the library it mapped is gone: refused by name, Restore disabled, Enter does nothing
  rmSync(library);
  await lab.snapshotRow(foreign).locator('.jp-CkptSnapshot-restore').click();
  const refused = dialog.locator('.jp-CkptVerdict-line.jp-mod-error');
  await refused.first().waitFor({ timeout: SLOW });
  assert.match(await refused.first().innerText(), new RegExp(`^refused: mapped file ${library}`));
  assert.match(await dialog.locator('.jp-CkptVerdict-summary').innerText(), /cannot be restored/);
  await lab.page.waitForFunction(
    () => document.querySelector('.jp-Dialog .jp-Dialog-footer .jp-mod-accept')?.disabled === true
  );
  await lab.page.keyboard.press('Enter');
  await dialog.locator('.jp-Dialog-footer .jp-mod-reject').click({ timeout: 5000 });
  await dialog.waitFor({ state: 'detached' });
  assert.deepEqual(lab.consoleErrors, []);
});
