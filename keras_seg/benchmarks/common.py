"""What every benchmark records: the machine, the versions, and medians of repeated timings.

Standard library only (numpy is imported inside `numpy_batch`): PyTorch workers load this file
by path, without the keras_seg package and so without TensorFlow. `serve_worker` is the loop
of the long-lived workers of `keras-seg benchmark peers`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
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


# Environment variables that change which kernels or allocator a run used, with the value
# keras_seg itself gives them on import (None: TensorFlow's own default).
_SETTING_VARIABLES = {
    "TF_ENABLE_ONEDNN_OPTS": None,
    "TF_CPU_ALLOCATOR_USE_BFC": "true",
    "TF_NUM_INTRAOP_THREADS": None,
    "TF_NUM_INTEROP_THREADS": None,
    "OMP_NUM_THREADS": None,
}


def command_line(kind: str, argv: list[str]) -> str:
    """How to run this benchmark again: `keras-seg benchmark <kind> ...`, prefixed by the
    environment variables that were set to other than keras_seg's defaults."""
    prefix = [
        f"{name}={os.environ[name]}"
        for name, default in _SETTING_VARIABLES.items()
        if name in os.environ and os.environ[name] != default
    ]
    return " ".join([*prefix, "keras-seg", "benchmark", kind, *argv])


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
    path: str | os.PathLike,
    kind: str,
    settings: dict[str, Any],
    results: Any,
    extra_versions: dict[str, Any] | None = None,
) -> dict:
    """Write a benchmark JSON with machine, versions, settings and results; returns the payload.

    `extra_versions` adds what other processes measured with (e.g. a PyTorch worker's torch).
    """
    payload = {
        "benchmark": kind,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {**versions(), **(extra_versions or {})},
        "settings": settings,
        "results": results,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return payload


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def numpy_batch(batch: int, size: int, num_classes: int, seed: int = 0):
    """NHWC float32 pixels 0..255 and int64 labels with ~5% ignore pixels (255)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, num_classes, (batch, size, size))
    y[rng.random(y.shape) < 0.05] = 255
    return x, y


def run_worker(command: list[str], env: dict[str, str], failure: str) -> str:
    """Run a benchmark worker process; its stdout, or SystemExit with `failure: <its last
    stderr line>` when it fails."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"{failure}: {last}")
    return done.stdout


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


# A call the worker can time: (function, images per call, calls per sample or None for --iters).
Call = tuple[Callable[[], Any], int, "int | None"]


def serve_worker(
    setup: Callable[[], tuple[dict[str, Any], dict[str, Call]]],
    warmup: int,
    user_path: str | None = None,
    rss_calls: int = 0,
) -> int:
    """Serve timing requests as JSON lines on stdin/stdout until `{"op": "quit"}`.

    `setup()` builds the model and returns (info, calls); every call is then run `warmup`
    times, in the order of `calls` (those whose key ends in `/user_path`:
    `max(warmup, rss_calls)` times, so that their peak RSS is that of a process that has made
    as many calls: a training step's RSS grows over its first three or four). The worker
    answers `{"ready": true, "info": ..., "peak_rss_warm_mib", "peak_rss_warm_by_key_mib":
    {key: peak RSS after warming up the calls up to that one}, "warm_calls_by_key"}` (so the
    calls a setup puts first are measured alone), and each
    `{"op": "measure", "key": K, "iters": N}` runs call K N times (or its own count) and
    answers `{"key", "start" (time.time()), "elapsed_s", "calls", "images_per_s"}`;
    `{"op": "rss"}` answers the peak RSS so far. An exception answers `{"error": one line}`
    (the traceback goes to stderr) and ends the worker with exit code 1. Whatever the
    libraries print goes to stderr: stdout carries only the answers.
    """
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    try:
        info, calls = setup()
        by_key, counts = {}, {}
        for key, (fn, _, _) in calls.items():
            user = user_path is not None and key.endswith("/" + user_path)
            counts[key] = max(warmup, rss_calls) if user else warmup
            for _ in range(counts[key]):
                fn()
            by_key[key] = peak_rss_mib()
        answer(
            {
                "ready": True,
                "info": info,
                "peak_rss_warm_mib": peak_rss_mib(),
                "peak_rss_warm_by_key_mib": by_key,
                "warm_calls_by_key": counts,
            }
        )
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "quit":
                return 0
            if request["op"] == "rss":
                answer({"peak_rss_mib": peak_rss_mib()})
                continue
            fn, images, own_count = calls[request["key"]]
            count = own_count or request["iters"]
            start = time.time()
            tick = time.perf_counter()
            for _ in range(count):
                fn()
            elapsed = time.perf_counter() - tick
            answer(
                {
                    "key": request["key"],
                    "start": start,
                    "elapsed_s": elapsed,
                    "calls": count,
                    "images_per_s": images * count / elapsed,
                }
            )
        return 0
    except BaseException as error:  # noqa: B036 (the parent must hear of any failure)
        traceback.print_exc()
        answer({"error": one_line(error)})
        return 1
