// jupyter-ckpt for JupyterLab 4: checkpoint the kernel of a notebook (toolbar button, Kernel
// menu, command palette, Accel Alt K), list its snapshots in a side panel, restore one into
// the notebook or delete it. The toolbar button, menu entries and shortcut are declared in
// schema/plugin.json, so users can move, hide or rebind them in the settings.

import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { CkptActions } from './actions';
import { CkptClient } from './api';
import { snapshotIcon } from './icons';
import { SnapshotsPanel } from './panel';

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
    const panel = new SnapshotsPanel({ actions, tracker });
    shell.add(panel, 'right', { rank: 800 });
    restorer?.add(panel, panel.id);

    let askForLabel = false;
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
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
        title: 'Checkpoint kernel',
        label: 'Label for the snapshot (empty: the time)',
        placeholder: 'e.g. after loading the data',
        okLabel: 'Checkpoint'
      });
      return answer.button.accept ? (answer.value ?? '').trim() : null;
    };

    commands.addCommand(CommandIDs.checkpoint, {
      label: 'Checkpoint Kernel',
      caption: 'Checkpoint kernel: save a snapshot of its whole live state',
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
      label: 'Checkpoint Kernel with Label…',
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
        void panel.refresh();
      }
    });

    tracker.currentChanged.connect(() => {
      commands.notifyCommandChanged(CommandIDs.checkpoint);
      commands.notifyCommandChanged(CommandIDs.checkpointWithLabel);
    });

    if (palette) {
      const category = 'Kernel Snapshots';
      palette.addItem({ command: CommandIDs.checkpoint, category });
      palette.addItem({ command: CommandIDs.checkpointWithLabel, category });
      palette.addItem({ command: CommandIDs.showSnapshots, category });
    }
  }
};

export default plugin;
