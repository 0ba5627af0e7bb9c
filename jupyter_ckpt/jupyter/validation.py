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

import nbformat

# as jupyter_client's MultiKernelManager.new_kernel_id makes them: str(uuid.uuid4())
_KERNEL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_SNAPSHOT_ID = re.compile(r"[0-9a-f]{32}\Z")  # as SnapshotCatalog.new_id makes them
_OPERATION_ID = re.compile(r"[1-9][0-9]{0,17}\Z")  # as EngineWorker numbers them
LABEL_MAX = 200
PATH_MAX = 4096  # PATH_MAX of Linux: no notebook path is longer
EXECUTION_COUNT_MAX = 2**53  # what a JSON number holds exactly (JavaScript's clients)
PENDING_CELLS_MAX = 10_000  # cells a client waits on at once
MSG_ID_MAX = 200
NOTEBOOK_MAX = 64 * 1024 * 1024  # bytes of a notebook stored with a snapshot (as JSON)
BULK_MAX = 10_000  # snapshots named in one bulk delete
AGE_MAX = 100 * 365 * 86400  # seconds: "older than" a century is every snapshot
# nbformat 4.5's cell ids
_CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")


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


def new_label(value: Any, field: str = "label") -> str:
    """A label to give an existing snapshot: unlike a checkpoint's, it must be sent
    ("" removes the label)."""
    if value is None:
        raise BadRequest(field, 'is required: a string ("" for no label)')
    return _text(value, field, LABEL_MAX)


def execution_count(value: Any, field: str = "execution_count") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(field, f"must be an integer or null, not {type(value).__name__}")
    if not 0 <= value <= EXECUTION_COUNT_MAX:
        raise BadRequest(field, f"{value} is out of range 0..{EXECUTION_COUNT_MAX}")
    return value


def cell_id(value: Any, field: str = "cell_id") -> str:
    if not isinstance(value, str) or not _CELL_ID.match(value):
        raise BadRequest(field, f"{_shown(value)} is not a cell id (1 to 64 letters, digits, "
                                "'-' or '_', as nbformat 4.5 makes them)")
    return value


def pending_cells(value: Any, field: str = "pending_cells") -> dict[str, str]:
    """The cells a client waits on: [{"msg_id": its execute_request's, "cell_id"}, ...],
    as a map msg_id -> cell id (empty for null)."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise BadRequest(field, f"must be a list, not {type(value).__name__}")
    if len(value) > PENDING_CELLS_MAX:
        raise BadRequest(field, f"has {len(value)} items; at most {PENDING_CELLS_MAX} are allowed")
    cells = {}
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, dict) or set(item) != {"msg_id", "cell_id"}:
            raise BadRequest(where, 'must be an object with just "msg_id" and "cell_id"')
        cells[_text(item["msg_id"], f"{where}.msg_id", MSG_ID_MAX)] = \
            cell_id(item["cell_id"], f"{where}.cell_id")
    return cells


def notebook(value: Any, field: str = "notebook") -> dict[str, Any] | None:
    """A notebook (nbformat 4, as JupyterLab's model serializes it) to store with a
    snapshot, checked against nbformat's schema, or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(field, f"must be a notebook (a JSON object), not {type(value).__name__}")
    size = len(json.dumps(value))
    if size > NOTEBOOK_MAX:
        raise BadRequest(field, f"is {size} bytes as JSON; at most {NOTEBOOK_MAX} are stored")
    if value.get("nbformat") != 4:
        raise BadRequest(field, "is not an nbformat 4 notebook (its nbformat is "
                                f"{_shown(value.get('nbformat'))})")
    try:
        nbformat.validate(value, version=4)
    except nbformat.ValidationError as err:
        why = " ".join(str(err.message).split())
        raise BadRequest(field, f"is not a valid nbformat 4 notebook: {why[:120]}") from None
    return value


def snapshot_ids(value: Any, field: str = "ids") -> list[str]:
    """A list of distinct snapshot ids (a bulk delete's)."""
    if not isinstance(value, list):
        raise BadRequest(field, f"must be a list of snapshot ids, not {type(value).__name__}")
    if not 0 < len(value) <= BULK_MAX:
        raise BadRequest(field, f"has {len(value)} ids; 1 to {BULK_MAX} are allowed")
    ids = [snapshot_id(item, f"{field}[{index}]") for index, item in enumerate(value)]
    if len(set(ids)) != len(ids):
        raise BadRequest(field, "names a snapshot more than once")
    return ids


def age_seconds(value: Any, field: str = "older_than_seconds") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(field, f"must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value <= AGE_MAX:  # (NaN fails this too)
        raise BadRequest(field, f"{_shown(value)} is out of range 0..{AGE_MAX}")
    return float(value)


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
