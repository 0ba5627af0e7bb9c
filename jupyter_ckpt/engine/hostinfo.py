"""Facts about a host that decide whether an image taken on one can run on another."""
from __future__ import annotations

import os
from typing import Any


def cpu_flags() -> list[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return sorted(line.split(":", 1)[1].split())
    return []


def host_facts() -> dict[str, Any]:
    uname = os.uname()  # (what platform.node/machine/release return, without importing it)
    return {
        "hostname": uname.nodename,
        "machine": uname.machine,
        "kernel": uname.release,
        "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "cpu_flags": cpu_flags(),
    }


def incompatibilities(image_host: dict[str, Any]) -> list[str]:
    """Why a process checkpointed on `image_host` cannot run here (empty when it can)."""
    here = host_facts()
    problems = []
    if image_host["machine"] != here["machine"]:
        problems.append(f"image is for {image_host['machine']}, this host is {here['machine']}")
    if image_host["page_size"] != here["page_size"]:
        problems.append(f"page size {image_host['page_size']} != {here['page_size']}")
    missing = sorted(set(image_host["cpu_flags"]) - set(here["cpu_flags"]))
    if missing:
        problems.append("this CPU lacks features the process may use: " + " ".join(missing[:12])
                        + (" ..." if len(missing) > 12 else ""))
    return problems
