"""What the numbers were measured on: CPU, cores, OS, Python and library versions, load at start."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mb": _mem_total_mb(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("digitspot", "onnxruntime", "numpy", "soxr", "soundfile", "paho-mqtt", "webrtcvad-wheels",
                      "torch", "pocketsphinx", "matplotlib")},
        "loadavg_at_start": [round(x, 2) for x in load if x is not None],
    }


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def cpu_times() -> list[int] | None:
    """The system-wide ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def machine_busy(start: list[int] | None, end: list[int] | None) -> dict[str, float] | None:
    """How busy the whole machine was between two :func:`cpu_times` readings (all processes, ours too)."""
    if not start or not end:
        return None
    delta = [b - a for a, b in zip(start, end)]
    total = sum(delta[:8]) or 1
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
    steal = delta[7] if len(delta) > 7 else 0
    return {"busy_percent": round(100 * (1 - idle / total), 1), "steal_percent": round(100 * steal / total, 1)}
