"""jupyter-ckpt: process-level snapshots of Jupyter kernels."""
__version__ = "0.1.0"
