"""What every benchmark records: the machine, the versions, and medians of repeated timings."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from datetime import timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "tensorflow-datasets",
    "ai-edge-litert",
    "opencv-python-headless",
)


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory and the CPU flags that matter for TF speed."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ]
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in cpuinfo.splitlines()
                if line.startswith("flags")
            ),
            [],
        )
        info["cpu_model"] = model[0] if model else None
        info["cpu_flags"] = sorted(
            f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))
        )
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_gib"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except OSError:
        pass
    return info


def versions() -> dict[str, str | None]:
    """Installed versions of the packages whose speed the figures depend on."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def time_median(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Run `fn` `warmup` times untimed, then `repeats` times; seconds per call (median, min, max)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
    }


def write_report(
    path: str | os.PathLike, kind: str, settings: dict[str, Any], results: Any
) -> dict:
    """Write a benchmark JSON with machine, versions, settings and results; returns the payload."""
    payload = {
        "benchmark": kind,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "settings": settings,
        "results": results,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return payload
