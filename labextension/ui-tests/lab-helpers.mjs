// What every browser test of the extension shares: the environment ../run-ui-tests.sh passes,
// the REST API of the Lab under test, a fresh notebook file, and a chromium page driven as a
// user drives JupyterLab (open a notebook, run a cell, wait for a notification, open the
// snapshots panel...). One place, so that a change of JupyterLab's markup is one change here.
//
// This module is not a test: run-ui-tests.sh runs only ui-tests/*.test.mjs (one file per
// subject, each with a notebook of its own, as they share one JupyterLab). A new test file
// uses it like this:
//
//   import assert from 'node:assert/strict';
//   import { after, before, test } from 'node:test';
//   import { Lab, SLOW, api, requireEnv } from './lab-helpers.mjs';
//
//   requireEnv('LAB_URL'); // and 'NOTEBOOK_DIR', 'STORE_DIR' if the test uses them
//   const NOTEBOOK = 'ckpt-my-subject.ipynb';
//   let lab; // lab.page is the playwright page, lab.consoleErrors what the browser logged
//
//   // the notebook written afresh (empty, Python 3, no session or snapshot of it left),
//   // opened in a new chromium, its kernel idle (newNotebook, Lab.launch, lab.open apart)
//   before(async () => {
//     lab = await Lab.start(NOTEBOOK);
//   });
//   after(() => lab?.close()); // a screenshot to $FAILURE_SCREENSHOT, then the browser closes
//
//   test('...', async () => {
//     await lab.runCell(0, 'x = 42\nprint(x)', '42');
//     await lab.toolbarButton('jupyter-ckpt:checkpoint').click();
//     await lab.waitNotification(/Snapshot saved/);
//     await lab.dismissNotifications();
//   });
//
// The rest (until, kernelOf, lab.openPanel, lab.snapshotRow, lab.restartKernel...) is below,
// each with a line on what it does; the test files here show them in use. A helper that a
// second test file would copy belongs here.

import { chromium } from 'playwright-core';

export const LAB_URL = process.env.LAB_URL ?? ''; // e.g. http://127.0.0.1:8888/lab-test/
export const TOKEN = process.env.LAB_TOKEN ?? '';
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** The server's root directory, to read or write files beside the notebooks. */
export const NOTEBOOK_DIR = process.env.NOTEBOOK_DIR ?? '';
/** The server's snapshot store (a local directory). */
export const STORE_DIR = process.env.STORE_DIR ?? '';
/** Where screenshots for the documentation go (empty: none). */
export const SCREENSHOT = process.env.SCREENSHOT ?? '';
const FAILURE_SHOT = process.env.FAILURE_SCREENSHOT ?? '';
/** A checkpoint or restore of a real kernel: seconds, not minutes. */
export const SLOW = 120_000;
export const PYTHON3 = { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' };

/** Fail at once, by name, when run other than through run-ui-tests.sh. */
export function requireEnv(...names) {
  const missing = names.filter(name => !process.env[name]);
  if (missing.length) {
    throw new Error(
      `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} not set: ` +
        'run this through labextension/run-ui-tests.sh'
    );
  }
}

/** A request to the Lab's REST API with the token; the JSON answer (null if empty). */
export async function api(method, path, body) {
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
export async function until(probe, what, timeout = SLOW) {
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

/** The id of the kernel of the notebook at `path` (undefined: it has none). */
export async function kernelOf(path) {
  return (await api('GET', 'api/sessions')).find(s => s.path === path)?.kernel?.id;
}

/** A code cell not run yet, for the `cells` of newNotebook (`id`: the cell's id). */
export function codeCell(id, source = '') {
  return { id, cell_type: 'code', source, metadata: {}, outputs: [], execution_count: null };
}

/**
 * Write the notebook file `path` afresh, after shutting its kernel down and deleting its
 * snapshots: a rerun against the same server starts as the first run did.
 */
export async function newNotebook(path, { kernelspec = PYTHON3, cells = [] } = {}) {
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
    content: { cells, metadata: { kernelspec }, nbformat: 4, nbformat_minor: 5 }
  });
}

/** A headless chromium page on the Lab under test, and what a user does there. */
export class Lab {
  constructor(browser, page) {
    this.browser = browser;
    this.page = page;
    /** The errors the page logged (console and uncaught), for the tests to judge. */
    this.consoleErrors = [];
  }

  static async launch() {
    const browser = await chromium.launch({
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
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    const lab = new Lab(browser, page);
    page.on('console', message => {
      if (message.type() === 'error') {
        lab.consoleErrors.push(message.text());
        console.log(`browser console: ${message.text()}`);
      }
    });
    page.on('pageerror', error => lab.consoleErrors.push(String(error)));
    // leaving the page (to load a notebook again) must not be held up by "unsaved changes"
    page.on('dialog', dialog =>
      dialog.type() === 'beforeunload' ? dialog.accept() : dialog.dismiss()
    );
    return lab;
  }

  /**
   * The usual start of a test file: the notebook `path` written afresh (`cells`,
   * `kernelspec`: see newNotebook), then opened in a new browser (`idle`: see open).
   */
  static async start(path, { cells, kernelspec, idle } = {}) {
    await newNotebook(path, { cells, kernelspec });
    const lab = await Lab.launch();
    await lab.open(path, { idle });
    return lab;
  }

  /** The page as it is at the end goes to $FAILURE_SCREENSHOT; then the browser closes. */
  async close() {
    if (FAILURE_SHOT) {
      await this.page.screenshot({ path: FAILURE_SHOT }).catch(() => {});
    }
    await this.browser.close();
  }

  /** Load the notebook at `path` in a new page (?reset: the default layout), its kernel idle. */
  async open(path, { idle = true } = {}) {
    await this.page.goto(`${LAB_URL}lab/tree/${path}?reset&token=${TOKEN}`);
    await this.notebook().waitFor({ timeout: SLOW });
    if (idle) {
      await this.waitIdle();
    }
  }

  /** The notebook in view (with two open, the other one's tab is hidden). */
  notebook() {
    return this.page.locator('.jp-NotebookPanel:not(.lm-mod-hidden)');
  }

  /** The notebook's kernel is connected and idle (toolbar indicator). */
  async waitIdle(timeout = SLOW) {
    await this.notebook()
      .locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
      .waitFor({ timeout });
  }

  /** The notebook's button for `command` (e.g. jupyter-ckpt:checkpoint) in its toolbar. */
  toolbarButton(command) {
    return this.notebook().locator(`.jp-NotebookPanel-toolbar jp-button[data-command="${command}"]`);
  }

  cells() {
    return this.notebook().locator('.jp-Notebook .jp-Cell');
  }

  /**
   * Type `code` into cell `index` (creating cells as needed), run it, wait until its prompt
   * shows a count and (if given) `expected` is in its output; return the output's text.
   */
  async runCell(index, code, expected = null) {
    const cells = this.cells();
    while ((await cells.count()) <= index) {
      await this.toolbarButton('notebook:insert-cell-below').click();
    }
    const cell = cells.nth(index);
    await cell.locator('.cm-content').click();
    await this.page.keyboard.press('ControlOrMeta+a');
    await this.page.keyboard.type(code);
    await this.waitIdle();
    await this.page.keyboard.press('Control+Enter'); // run, stay on the cell
    const prompt = cell.locator('.jp-InputPrompt');
    await until(async () => /\[\d+\]/.test(await prompt.innerText()), `cell ${index} to run`);
    const output = cell.locator('.jp-OutputArea-output');
    if (expected !== null) {
      await output.filter({ hasText: expected }).first().waitFor({ timeout: SLOW });
    }
    await this.waitIdle();
    return (await output.allInnerTexts()).join('\n').trim();
  }

  /** Restart the kernel from the toolbar, confirmed, and wait until it is idle. */
  async restartKernel() {
    await this.toolbarButton('notebook:restart-kernel').click();
    await this.page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept').click();
    await this.page.waitForTimeout(500);
    await this.waitIdle();
  }

  /** Wait for a notification whose text matches; fail at once on an error notification. */
  async waitNotification(pattern, { timeout = SLOW, errorsExpected = false } = {}) {
    const page = this.page;
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

  async dismissNotifications() {
    const close = this.page.locator('.Toastify__toast .jp-Notification-Toast-Close');
    for (const button of await close.all()) {
      await button.click({ timeout: 2000 }).catch(() => {});
    }
  }

  /**
   * Open the snapshots panel in the right sidebar, unless it is open; with `notebook`, wait
   * until it lists that notebook's snapshots.
   */
  async openPanel(notebook) {
    const panel = this.panel();
    if (!(await panel.isVisible())) {
      await this.page.locator('.jp-SideBar.jp-mod-right [data-id="jupyter-ckpt-snapshots"]').click();
    }
    await panel.waitFor();
    if (notebook) {
      await panel.locator('.jp-CkptPanel-notebook', { hasText: notebook }).waitFor({ timeout: SLOW });
    }
    return panel;
  }

  /** The snapshots panel (open or not). */
  panel() {
    return this.page.locator('#jupyter-ckpt-snapshots');
  }

  /** The snapshots the panel lists, newest first. */
  snapshotItems() {
    return this.panel().locator('.jp-CkptSnapshot');
  }

  /** The panel's row of snapshot `id`. */
  snapshotRow(id) {
    return this.panel().locator(`.jp-CkptSnapshot[data-snapshot-id="${id}"]`);
  }
}
