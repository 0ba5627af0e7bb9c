"""The tool's version, recorded in every image (`tool_version`), and the image format's name
and version (the manifest's `format` and `version`: schema.py checks them, image.py writes
them). It lives in the engine, which imports nothing above itself; the package's
`__version__` is this one."""
VERSION = "0.1.0"
IMAGE_FORMAT = "jupyter-ckpt-image"
IMAGE_VERSION = 3
