"""Checks of what REST clients send, made before anything is done with it.

Kernel ids end up in file names (the kernel's connection file), snapshot ids in store keys,
labels in every listing: each is checked against the form its maker gives it, and a
violation is a BadRequest naming the field and why (the handlers answer 400 with it).
"""
from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, Callable, Mapping

# as jupyter_client's MultiKernelManager.new_kernel_id makes them: str(uuid.uuid4())
_KERNEL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_SNAPSHOT_ID = re.compile(r"[0-9a-f]{32}\Z")  # as SnapshotCatalog.new_id makes them
_OPERATION_ID = re.compile(r"[1-9][0-9]{0,17}\Z")  # as EngineWorker numbers them
LABEL_MAX = 200
PATH_MAX = 4096  # PATH_MAX of Linux: no notebook path is longer
EXECUTION_COUNT_MAX = 2**53  # what a JSON number holds exactly (JavaScript's clients)


class BadRequest(ValueError):
    """An input that is refused: `field` names it, `why` says what is wrong."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why


def _shown(value: Any) -> str:
    """A bounded rendering of a rejected value, for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _control_char(text: str) -> str | None:
    return next((c for c in text if unicodedata.category(c) == "Cc"), None)


def kernel_id(value: Any, field: str = "kernel_id") -> str:
    if not isinstance(value, str) or not _KERNEL_ID.match(value):
        raise BadRequest(field, f"{_shown(value)} is not a kernel id (a lowercase UUID such as "
                                "the server gives its kernels)")
    return value


def snapshot_id(value: Any, field: str = "snapshot_id") -> str:
    if not isinstance(value, str) or not _SNAPSHOT_ID.match(value):
        raise BadRequest(field, f"{_shown(value)} is not a snapshot id (32 lowercase hex digits)")
    return value


def operation_id(value: Any, field: str = "operation_id") -> str:
    if not isinstance(value, str) or not _OPERATION_ID.match(value):
        raise BadRequest(field, f"{_shown(value)} is not an operation id (a positive decimal "
                                "number, as GET operations lists them)")
    return value


def label(value: Any, field: str = "label") -> str:
    if value is None:
        return ""
    return _text(value, field, LABEL_MAX)


def execution_count(value: Any, field: str = "execution_count") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(field, f"must be an integer or null, not {type(value).__name__}")
    if not 0 <= value <= EXECUTION_COUNT_MAX:
        raise BadRequest(field, f"{value} is out of range 0..{EXECUTION_COUNT_MAX}")
    return value


def notebook_path(value: Any, field: str = "notebook_path") -> str:
    return _text(value, field, PATH_MAX)


def _text(value: Any, field: str, limit: int) -> str:
    """A string of at most `limit` characters without control characters."""
    if not isinstance(value, str):
        raise BadRequest(field, f"must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise BadRequest(field, f"is {len(value)} characters long; at most {limit} are allowed")
    bad = _control_char(value)
    if bad is not None:
        raise BadRequest(field, f"holds the control character {bad!r}")
    return value


def optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """`check`, letting null (or an absent field) through as None."""
    return lambda value, field: None if value is None else check(value, field)


def json_object(raw: bytes, fields: Mapping[str, Callable[[Any, str], Any]]) -> dict[str, Any]:
    """A request body: a JSON object (an empty body counts as {}) holding only `fields`,
    each checked by its function; absent fields are checked as null."""
    data: Any = {}
    if raw:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadRequest("body", "is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body", f"must be a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadRequest(unknown[0], f"is not a field of this request (known: {', '.join(fields)})")
    return {name: check(data.get(name), name) for name, check in fields.items()}
