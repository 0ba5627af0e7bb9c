"""Architecture layer: everything that depends on the CPU lives below this package.

The rest of the engine uses only the names exported here (syscall numbers, register
access, restart fix-ups, extended FPU state), so a new architecture is one new module.
"""
import os

from ..errors import Unsupported

_MACHINE = os.uname().machine

if _MACHINE == "x86_64":
    from .x86_64 import *  # noqa: F401,F403
    from .x86_64 import __all__  # noqa: F401
else:  # pragma: no cover - only x86_64 exists so far
    raise Unsupported("host", _MACHINE, "only x86_64 is supported")
