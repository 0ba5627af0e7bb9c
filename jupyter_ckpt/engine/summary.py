"""A summary of what an image holds, for people (`inspect`) and tools (`inspect --json`)."""
from __future__ import annotations

from collections import Counter
from typing import Any

from .image import ImageReader


def summarize(path: str) -> dict[str, Any]:
    image = ImageReader(path, verify_blobs=False)
    m = image.manifest
    kinds = {f["id"]: f["kind"] for f in m["files"]}
    processes = []
    for proc in m["processes"]:
        mem_by_kind: Counter[str] = Counter()
        saved_by_kind: Counter[str] = Counter()
        for v in proc["memory"]["vmas"]:
            mem_by_kind[v["kind"]] += v["end"] - v["start"]
            saved_by_kind[v["kind"]] += sum(run[1] for run in v["pages"])
        fd_kinds = Counter(kinds[f["file"]] for f in proc["fds"])
        processes.append({
            "pid": proc["pid"], "cmdline": proc["process"].get("cmdline", ""),
            "threads": [t["tid"] for t in proc["threads"]],
            "mappings": len(proc["memory"]["vmas"]),
            "memory_mapped_bytes": dict(mem_by_kind), "memory_saved_bytes": dict(saved_by_kind),
            "fds": len(proc["fds"]), "fds_by_kind": dict(fd_kinds),
        })
    blob_bytes = sum(b["size"] for b in m["blobs"].values())
    all_fd_kinds: Counter[str] = Counter()
    for p in processes:
        all_fd_kinds.update(p["fds_by_kind"])
    memory = {"mapped_bytes": sum(sum(p["memory_mapped_bytes"].values()) for p in processes),
              "saved_bytes": sum(sum(p["memory_saved_bytes"].values()) for p in processes)}
    return {"path": path, "format_version": m["version"], "created": m["created"],
            "tool_version": m["tool_version"], "owner_uid": m["owner_uid"], "root_pid": m["root_pid"],
            "host": {k: v for k, v in m["host"].items() if k != "cpu_flags"},
            "image_bytes": blob_bytes, **m["stats"], "memory": memory,
            "fds_by_kind": dict(all_fd_kinds), "processes": processes}


def render(summary: dict[str, Any]) -> str:
    lines = [f"image {summary['path']} (format v{summary['format_version']}, "
             f"jupyter-ckpt {summary['tool_version']})",
             f"  created {summary['created']} on {summary['host']['hostname']} "
             f"({summary['host']['machine']}, Linux {summary['host']['kernel']})",
             f"  {_size(summary['image_bytes'])} stored; froze the tree for {summary.get('freeze_ms', '?')} ms"]
    for p in summary["processes"]:
        lines.append(f"  pid {p['pid']}: {p['cmdline'][:70]}")
        lines.append(f"    threads: {len(p['threads'])} ({', '.join(map(str, p['threads'][:8]))}"
                     f"{', ...' if len(p['threads']) > 8 else ''})")
        lines.append(f"    memory: {p['mappings']} mappings")
        for kind, size in sorted(p["memory_mapped_bytes"].items()):
            lines.append(f"      {kind:<12} {_size(size):>10} mapped, "
                         f"{_size(p['memory_saved_bytes'].get(kind, 0)):>10} saved")
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(p["fds_by_kind"].items()))
        lines.append(f"    fds: {p['fds']} ({kinds})")
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
