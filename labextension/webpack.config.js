// Merged into JupyterLab's extension build. Module ids by name (paths relative to the
// build's context) instead of hashes of identifiers, which hold the checkout's absolute
// path for the federation entry: the prebuilt extension then is the same wherever built.
module.exports = {
  optimization: { moduleIds: 'named' }
};
