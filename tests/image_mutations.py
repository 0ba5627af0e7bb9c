"""Mutations of a real image, as an attacker or a broken disk would make them: the manifest
edited (a field dropped, given another type, pushed out of range, an unknown field added,
a reference left dangling) with its checksum recomputed so that the edit reaches the
reader, or the image's files replaced (a blob swapped for another, a symlink, a FIFO).

Used by tests/test_image_fuzz.py, whose example count JUPYTER_CKPT_FUZZ_EXAMPLES raises
for a long run (scripts/fuzz-images)."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from jupyter_ckpt.engine.image import manifest_checksum

# Fields nothing restores from: editing them must not stop a restore.
INFORMATIONAL = {"created", "tool_version", "stats", "cmdline", "restart", "was", "zero_bytes"}
HUGE = 1 << 70
NEST = "<nested 100000 lists deep>"


@dataclass
class Mutation:
    what: str
    must_refuse: bool  # a restore of it must fail with one line, creating nothing
    informational: bool = False  # it must restore as if untouched


def nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every value below the top of a JSON document (but its own checksum, which
    `reseal` writes anew)."""
    found = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return found
    for key, item in items:
        if path + (key,) == ("manifest_xxh3_128",):
            continue
        found.append(path + (key,))
        found.extend(nodes(item, path + (key,)))
    return found


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _name(path: tuple) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


def _other_type(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return "7"
    if isinstance(value, str):
        return 7
    if isinstance(value, list):
        return {"0": value[:1]}
    return [value]


def mutate_manifest(manifest: dict[str, Any], path: tuple, how: str) -> Mutation:
    """Edit `manifest` in place at `path` in the way `how` names."""
    parent, key = _get(manifest, path[:-1]), path[-1]
    value = parent[key]
    informational = any(k in INFORMATIONAL for k in path if isinstance(k, str))
    label = f"{how} {_name(path)}"
    if how == "drop":
        if isinstance(parent, list):
            del parent[key]
            # one entry fewer can still describe a process, only another one
            return Mutation(label, False)
        del parent[key]
        return Mutation(label, not informational and _required(path))
    if how == "retype":
        parent[key] = _other_type(value)
        return Mutation(label, not informational)
    if how == "huge":
        parent[key] = HUGE if not isinstance(value, str) else value + "x" * (2 << 20)
        return Mutation(label, not informational)
    if how == "negative":
        parent[key] = -HUGE
        return Mutation(label, not informational)
    if how == "nul":
        parent[key] = (value if isinstance(value, str) else "x") + "\0"
        return Mutation(label, not informational and path[-1] != "cmdline")
    if how == "unknown-field":
        target = value if isinstance(value, dict) else parent
        if key == "vdso_symbols":  # a map of names: a new name is one more symbol, not a field
            return Mutation(label + " (a map)", False, informational)
        if not isinstance(target, dict):
            return Mutation(label + " (no record)", False, informational)
        target["bogus_field"] = 1
        return Mutation(label, not informational)
    if how == "nest":
        parent[key] = NEST  # written out by `reseal`: too deep for json.dumps itself
        return Mutation(label, True)
    if how == "set-none":
        parent[key] = None
        return Mutation(label, False, informational)
    raise ValueError(how)


def _required(path: tuple) -> bool:
    """Whether the record field at `path` is one a restore needs (optional ones may be
    missing in a genuine image)."""
    optional = {"vdso_xxh3_128", "data_blob", "unlinked", "backlog", "peer", "peer_name",
                "bases", "offset", "file", "shmem", "shmid", "flags", "build_id", "xxh3_128",
                "blob", "dev", "tid", "was", "dir", "pending", "senders", "creds", "vdso_symbols",
                "vdso_getrandom", "cow", "child_subreaper", "thp_disable", "membarrier", "times", "loginuid",
                "sockopts", "filter", "device", "linger", "rcvtimeo", "sndtimeo", "congestion", "shutdown",
                "peercred", "protocol", "multicast"}
    key = path[-1]
    if isinstance(key, int):
        return False
    parent = path[-2] if len(path) > 1 else None
    if (parent, key) == ("unlinked", "data"):
        return False  # (an image of an older version has none: its blob is the whole file)
    if parent in ("shmem", "ptys", "sysv", "actions", "itimers", "thread_pending", "rlimits",
                  "blobs", "precopy_rounds", "vdso_symbols"):
        return False  # a key of a dictionary, not a field
    return key not in optional


MANIFEST_MUTATIONS = ("drop", "retype", "huge", "negative", "nul", "unknown-field", "nest",
                      "set-none")
FILE_MUTATIONS = ("manifest-fifo", "manifest-to-dev-zero", "blob-symlink", "blob-swap",
                  "blob-foreign-owner", "blob-fifo")


def reseal(image: Path, manifest: dict[str, Any]) -> None:
    """Write `manifest` with its own checksum recomputed, as anyone who read the format could."""
    manifest["manifest_xxh3_128"] = manifest_checksum(manifest)
    depth = 100_000
    text = json.dumps(manifest).replace(json.dumps(NEST), "[" * depth + "0" + "]" * depth)
    (image / "manifest.json").write_text(text)


def mutate_files(image: Path, how: str, pick: int) -> Mutation:
    """Replace one of the image's files; `pick` chooses which blob."""
    manifest = json.loads((image / "manifest.json").read_text())
    blobs = sorted(manifest["blobs"])
    name = blobs[pick % len(blobs)]
    blob = image / name
    if how == "manifest-fifo":
        (image / "manifest.json").unlink()
        os.mkfifo(image / "manifest.json")
    elif how == "manifest-to-dev-zero":
        (image / "manifest.json").unlink()
        (image / "manifest.json").symlink_to("/dev/zero")
    elif how == "blob-symlink":
        target = image.parent / f"elsewhere-{name}"
        shutil.copy(blob, target)
        blob.unlink()
        blob.symlink_to(target)
    elif how == "blob-fifo":
        blob.unlink()
        os.mkfifo(blob)
    elif how == "blob-foreign-owner":
        os.chown(blob, 65534, 65534)
    elif how == "blob-swap":
        # two blobs exchanged, and the blob table told so, checksums and all
        other = blobs[(pick + 1) % len(blobs)]
        if other == name:
            return Mutation(f"{how} (one blob only)", False)
        a, b = blob.read_bytes(), (image / other).read_bytes()
        blob.write_bytes(b)
        (image / other).write_bytes(a)
        for n, data in ((name, b), (other, a)):
            manifest["blobs"][n] = {"size": len(data), "xxh3_128": xxhash.xxh3_128_hexdigest(data)}
        reseal(image, manifest)
        # the records now point into the wrong bytes: refused where sizes disagree, and
        # otherwise a different but well-formed image
        return Mutation(f"{how} {name} {other}", False)
    else:
        raise ValueError(how)
    return Mutation(f"{how} {name}", True)
