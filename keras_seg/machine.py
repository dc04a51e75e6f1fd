"""What this machine's TensorFlow runs natively: one place for the facts that pick a precision
and a kernel path (`precision: auto`, the inference precision, `AtrousConv2D`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import tensorflow as tf

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic, which oneDNN uses for
# bfloat16 convolutions and matmuls; without them bfloat16 is emulated and slower than float32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU lists AVX512-BF16 or AMX-BF16 (Linux; False where unreadable)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


@functools.cache
def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs oneDNN CPU kernels.

    TensorFlow decides per CPU (on by default with AVX-512 VNNI/BF16 or AMX, off on e.g.
    AVX2-only CPUs) and by `TF_ENABLE_ONEDNN_OPTS`. It has no public query; its build-util
    one is private, so any failure to ask means False.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return False


def eigen_kernels_note() -> str | None:
    """A line for `keras-seg train` where TensorFlow chose its Eigen CPU kernels itself (no
    GPU, oneDNN off, `TF_ENABLE_ONEDNN_OPTS` unset): on an AVX2-only EPYC oneDNN trained
    DeepLabV3+ faster and U-Net ResNet-34 (through `fit`) slower (bench_results/perf.md,
    "oneDNN for training only"). The variable is read when TensorFlow starts, so the user
    sets it before the command; None elsewhere."""
    if "TF_ENABLE_ONEDNN_OPTS" in os.environ or onednn_enabled() or gpu_available():
        return None
    return (
        "note: TensorFlow runs its Eigen CPU kernels here; TF_ENABLE_ONEDNN_OPTS=1 set before "
        "the command trained DeepLabV3+ 1.19x as fast on an AVX2-only CPU but U-Net ResNet-34 "
        'through fit 1.6x slower: measure yours (README: "On a CPU without AVX-512")'
    )


def runs_natively(policy: str) -> bool:
    """Whether a Keras dtype policy computes at hardware speed here: float32 everywhere,
    mixed_float16 on a GPU, mixed_bfloat16 on a GPU or a CPU with native bfloat16 (elsewhere
    TensorFlow emulates them: no faster than float32, with reduced precision's rounding)."""
    if policy == "mixed_float16":
        return gpu_available()
    if policy == "mixed_bfloat16":
        return gpu_available() or cpu_has_native_bfloat16()
    return True
