"""The tool's version, recorded in every image (`tool_version`). It lives in the engine,
which imports nothing above itself; the package's `__version__` is this one."""
VERSION = "0.1.0"
