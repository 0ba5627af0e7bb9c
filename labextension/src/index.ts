// jupyter-ckpt for JupyterLab 4: take a snapshot of the kernel of a notebook (toolbar button,
// Kernel menu, command palette, Accel Alt K), list its snapshots in a side panel, restore one
// into the notebook (from the panel, or the newest one from the palette) or delete it. The
// names say "snapshot", never "checkpoint", which in JupyterLab means a saved notebook file. The toolbar button, menu entries and shortcut are declared in
// schema/plugin.json, so users can move, hide or rebind them in the settings.

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { CkptActions } from './actions';
import { CkptClient } from './api';
import { snapshotIcon } from './icons';
import { SnapshotsPanel } from './panel';
import { activateUndoCell } from './undoCell';

export { CkptActions } from './actions';
export { CkptApiError, CkptClient, IOperation, IRestoreResult, ISnapshot } from './api';
export {
  ISnapshotEntry,
  METADATA_KEY,
  forgetSnapshot,
  mergeSnapshots,
  recordSnapshot,
  rememberedSnapshots
} from './metadata';

const PLUGIN_ID = 'jupyter-ckpt:plugin';

export namespace CommandIDs {
  export const checkpoint = 'jupyter-ckpt:checkpoint';
  export const checkpointWithLabel = 'jupyter-ckpt:checkpoint-with-label';
  export const showSnapshots = 'jupyter-ckpt:show-snapshots';
  export const restoreLatest = 'jupyter-ckpt:restore-latest';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Checkpoint and restore the live kernel of a notebook (jupyter-ckpt).',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const { commands, shell } = app;
    const client = new CkptClient({ serverSettings: app.serviceManager.serverSettings });
    const actions = new CkptActions({
      client,
      showSnapshots: () => void commands.execute(CommandIDs.showSnapshots)
    });
    const panel = new SnapshotsPanel({
      actions,
      tracker,
      contents: app.serviceManager.contents,
      commands
    });
    shell.add(panel, 'right', { rank: 800 });
    restorer?.add(panel, panel.id);

    let askForLabel = false;
    const loaded = settingRegistry?.load(PLUGIN_ID) ?? null;
    activateUndoCell(app, tracker, client, loaded, palette);
    if (loaded) {
      loaded
        .then(settings => {
          const read = () => {
            askForLabel = settings.get('askForLabel').composite === true;
          };
          read();
          settings.changed.connect(read);
        })
        .catch(reason => console.error('jupyter-ckpt: could not load settings', reason));
    }

    const askLabel = async (): Promise<string | null> => {
      const answer = await InputDialog.getText({
        title: 'Snapshot kernel',
        label: 'Label for the snapshot (optional)',
        placeholder: 'e.g. data loaded',
        okLabel: 'Snapshot'
      });
      return answer.button.accept ? (answer.value ?? '').trim() : null;
    };

    commands.addCommand(CommandIDs.checkpoint, {
      label: 'Snapshot Kernel',
      caption: 'Save a snapshot of the kernel’s whole live state',
      icon: snapshotIcon,
      isEnabled: () => tracker.currentWidget !== null,
      execute: async args => {
        const notebook = tracker.currentWidget;
        if (!notebook) {
          return null;
        }
        let label = typeof args.label === 'string' ? args.label : '';
        if (askForLabel && typeof args.label !== 'string') {
          const answer = await askLabel();
          if (answer === null) {
            return null;
          }
          label = answer;
        }
        return actions.checkpoint(notebook, label);
      }
    });

    commands.addCommand(CommandIDs.checkpointWithLabel, {
      label: 'Snapshot Kernel with Label…',
      caption: 'Name a snapshot of the kernel, then save it',
      isEnabled: () => tracker.currentWidget !== null,
      execute: async () => {
        const notebook = tracker.currentWidget;
        if (!notebook) {
          return null;
        }
        const label = await askLabel();
        return label === null ? null : actions.checkpoint(notebook, label);
      }
    });

    commands.addCommand(CommandIDs.showSnapshots, {
      label: 'Kernel Snapshots',
      caption: 'Show the snapshots of this notebook’s kernel: restore or delete them',
      icon: args => (args.isPalette ? undefined : snapshotIcon),
      execute: () => {
        shell.activateById(panel.id);
        panel.focusPanel();
        void panel.refresh();
      }
    });

    commands.addCommand(CommandIDs.restoreLatest, {
      label: 'Restore Latest Kernel Snapshot…',
      caption: 'Restore the newest snapshot of this notebook’s kernel (asks first)',
      isEnabled: () => tracker.currentWidget !== null,
      execute: async () => {
        const notebook = tracker.currentWidget;
        if (!notebook) {
          return null;
        }
        const snapshots = await client.listSnapshots(notebook.context.path).catch(() => null);
        if (!snapshots?.length) {
          Notification.info(
            snapshots ? 'This notebook has no kernel snapshot to restore.' : 'The Jupyter server cannot be reached.',
            { autoClose: 5000 }
          );
          return null;
        }
        return actions.restore(notebook, snapshots[0]);
      }
    });

    tracker.currentChanged.connect(() => {
      commands.notifyCommandChanged(CommandIDs.checkpoint);
      commands.notifyCommandChanged(CommandIDs.checkpointWithLabel);
      commands.notifyCommandChanged(CommandIDs.restoreLatest);
    });

    if (palette) {
      const category = 'Kernel Snapshots';
      palette.addItem({ command: CommandIDs.checkpoint, category });
      palette.addItem({ command: CommandIDs.checkpointWithLabel, category });
      palette.addItem({ command: CommandIDs.showSnapshots, category });
      palette.addItem({ command: CommandIDs.restoreLatest, category });
    }
  }
};

export default plugin;
