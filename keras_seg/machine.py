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


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where unreadable)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return frozenset(flags)


def cpu_has_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU lists AVX512-BF16 or AMX-BF16 (Linux; False where unreadable)."""
    return any(flag in cpu_flags(cpuinfo) for flag in NATIVE_BF16_FLAGS)


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


# Models whose training steps ran faster on TensorFlow's Eigen kernels than on oneDNN's on an
# AVX2-only CPU (model name -> its backbones that did, None for all): wide convolutions at
# high resolution, which oneDNN runs with variable filters as im2col + GEMM (`x64:gemm:jit`)
# and whose NHWC weight gradients it computes slowly (bench_results/perf.md, "oneDNN per
# zoo model"). Eigen's step against oneDNN's, zoo configs at 256 batch 2: plain U-Net 1.48x,
# SegNet 1.33x, FCN-8s 1.27x, HRNet-W48 1.07x as fast; unet_isbi2012 at its own 512 crop
# 12 s against over 250 s. ResNet, depthwise and transformer encoders went the other way.
EIGEN_TRAINS_FASTER: dict[str, tuple | None] = {
    "unet": (None,),  # the paper's encoder; with a ResNet backbone oneDNN is faster
    "fcn8s": None,
    "fcn16s": None,
    "fcn32s": None,
    "segnet": None,
    "hrnet": None,
}


def onednn_trains_faster(model: str, backbone: str | None) -> bool:
    """Whether `model` with `backbone` trained faster on oneDNN's kernels than on Eigen's on an
    AVX2-only CPU (`EIGEN_TRAINS_FASTER` lists the exceptions; None there: any backbone)."""
    if model not in EIGEN_TRAINS_FASTER:
        return True
    backbones = EIGEN_TRAINS_FASTER[model]
    return backbones is not None and backbone not in backbones


def training_environment(model: str, backbone: str | None) -> dict[str, str]:
    """The process settings `keras-seg train` restarts itself with before it trains `model`
    with `backbone`.

    `TF_ENABLE_ONEDNN_OPTS=1` where TensorFlow chose its Eigen CPU kernels itself (an x86
    CPU with AVX2 but without AVX-512 VNNI/BF16 or AMX, no GPU, the variable unset) and the
    model trains faster on oneDNN's (`onednn_trains_faster`). On an AVX2-only EPYC oneDNN's
    convolution gradients made the peers table's training steps 1.17x (U-Net ResNet-34) and
    1.19x (DeepLabV3+ ResNet-50) as fast, at 7% lower and 2% higher peak RSS
    (bench_results/ab_onednn_*_train.json), and tools/onednn_gradient_check.py has every zoo
    model's gradients agree with Eigen's. Inference keeps TensorFlow's choice: there oneDNN's
    batch-1 convolutions are 1.3-3.1x slower (README, "On a CPU without AVX-512"; with the
    weights in variables oneDNN runs them as im2col + GEMM, see `Predictor`'s `freeze`).
    TensorFlow reads the variable when it starts, hence a restart; a user's own setting
    (`TF_ENABLE_ONEDNN_OPTS=0`) wins.
    """
    if "TF_ENABLE_ONEDNN_OPTS" in os.environ or onednn_enabled() or gpu_available():
        return {}
    if "avx2" not in cpu_flags():
        return {}  # not measured there (older x86, or not x86: Linux lists no avx2)
    if not onednn_trains_faster(model, backbone):
        return {}
    return {"TF_ENABLE_ONEDNN_OPTS": "1"}


def eigen_kernels_note(model: str, backbone: str | None) -> str | None:
    """A line for a training run in a process that `training_environment` would have
    started differently (Python's `keras_seg.training.train` rather than `keras-seg
    train`); None elsewhere."""
    if not training_environment(model, backbone):
        return None
    return (
        f"note: TensorFlow runs its Eigen CPU kernels here; on an AVX2-only CPU {model} "
        "trains faster with TF_ENABLE_ONEDNN_OPTS=1 set before Python starts (keras-seg "
        'train sets it; README: "On a CPU without AVX-512")'
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
