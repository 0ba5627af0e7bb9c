import { LabIcon } from '@jupyterlab/ui-components';

// A camera: the snapshot of a kernel.
const snapshotSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" fill-rule="evenodd" d="M8.5 4h7l1.5 2H20a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V8a2 2 0 0 1 2-2h3zM12 8.5a4.5 4.5 0 1 0 0 9a4.5 4.5 0 1 0 0-9zM12 10.5a2.5 2.5 0 1 1 0 5a2.5 2.5 0 1 1 0-5z"/>
</svg>`;

export const snapshotIcon = new LabIcon({
  name: 'jupyter-ckpt:snapshot',
  svgstr: snapshotSvg
});
