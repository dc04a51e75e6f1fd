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


# Where a training step ran faster on TensorFlow's Eigen kernels than on oneDNN's on an
# AVX2-only CPU: model name -> {backbone (`ANY`: every one) -> the step size, in pixels
# (batch x crop height x crop width), from which it did; 0 for every size}. Wide convolutions
# at high resolution are what oneDNN does worst there: it runs them with variable filters as
# im2col + GEMM (`x64:gemm:jit`) and computes their NHWC weight gradients slowly, so its lead
# shrinks as the step grows and turns for some models (bench_results/perf.md, "oneDNN per zoo
# model"; bench_results/ab_onednn_zoo/*.json). Eigen's step against oneDNN's: plain U-Net
# 1.48x at 256 batch 2 and 12 s against over 250 s at 512 batch 1, SegNet 1.33x, FCN-8s
# 1.27x, HRNet-W48 1.07x (256 batch 2); MobileNetV2 DeepLabV3+ 0.57x at 256 batch 2 but
# 1.15x at 512 batch 2, PSPNet-R50 0.90x and 1.10x. ResNet (U-Net, DeepLabV3+) and
# transformer encoders kept oneDNN's lead at every size measured. Sizes between two measured
# ones are not known; a threshold is the smallest step measured faster on Eigen.
ANY = "*"
EIGEN_TRAINS_FASTER: dict[str, dict[str | None, int]] = {
    "unet": {None: 0},  # the paper's encoder; with a ResNet backbone oneDNN is faster
    "fcn8s": {ANY: 0},
    "fcn16s": {ANY: 0},
    "fcn32s": {ANY: 0},
    "segnet": {ANY: 0},
    "hrnet": {ANY: 0},
    "deeplabv3plus": {"mobilenet_v2": 512 * 512 * 2},
    "pspnet": {ANY: 512 * 512 * 2},
}


def onednn_trains_faster(model: str, backbone: str | None, step_pixels: int | None = None) -> bool:
    """Whether `model` with `backbone` trained faster on oneDNN's kernels than on Eigen's on an
    AVX2-only CPU at steps of `step_pixels` (batch x crop height x crop width; None: not
    known, then only the models that train faster on Eigen at every size say no).
    `EIGEN_TRAINS_FASTER` lists the exceptions."""
    sizes = EIGEN_TRAINS_FASTER.get(model, {})
    from_pixels = sizes.get(backbone, sizes.get(ANY))
    if from_pixels is None:
        return True
    if step_pixels is None:
        return from_pixels > 0
    return step_pixels < from_pixels


def pixels_per_step(batch_size: int, crop_size) -> int | None:
    """A training step's size for `onednn_trains_faster`: batch x crop height x crop width
    (None where the crop is not a known [height, width])."""
    if not crop_size or len(crop_size) != 2:
        return None
    return int(batch_size) * int(crop_size[0]) * int(crop_size[1])


def training_environment(
    model: str, backbone: str | None, step_pixels: int | None = None
) -> dict[str, str]:
    """The process settings `keras-seg train` restarts itself with before it trains `model`
    with `backbone` at steps of `step_pixels` (`pixels_per_step()`; None: not known).

    `TF_ENABLE_ONEDNN_OPTS=1` where TensorFlow chose its Eigen CPU kernels itself (an x86
    CPU with AVX2 but without AVX-512 VNNI/BF16 or AMX, no GPU, the variable unset) and the
    model trains faster on oneDNN's at that step size (`onednn_trains_faster`). On an
    AVX2-only EPYC oneDNN's convolution gradients made the peers table's training steps 1.17x
    (U-Net ResNet-34) and 1.19x (DeepLabV3+ ResNet-50) as fast, at 7% lower and 2% higher
    peak RSS (bench_results/ab_onednn_*_train.json), and tools/onednn_gradient_check.py has
    every zoo model's gradients agree with Eigen's. Inference keeps TensorFlow's choice: there
    oneDNN's batch-1 convolutions are 1.3-3.1x slower (README, "On a CPU without AVX-512";
    with the weights in variables oneDNN runs them as im2col + GEMM, see `Predictor`'s
    `freeze`). TensorFlow reads the variable when it starts, hence a restart; a user's own
    setting (`TF_ENABLE_ONEDNN_OPTS=0`) wins.
    """
    if "TF_ENABLE_ONEDNN_OPTS" in os.environ or onednn_enabled() or gpu_available():
        return {}
    if "avx2" not in cpu_flags():
        return {}  # not measured there (older x86, or not x86: Linux lists no avx2)
    if not onednn_trains_faster(model, backbone, step_pixels):
        return {}
    return {"TF_ENABLE_ONEDNN_OPTS": "1"}


def eigen_kernels_note(
    model: str, backbone: str | None, step_pixels: int | None = None
) -> str | None:
    """A line for a training run in a process that `training_environment` would have
    started differently (Python's `keras_seg.training.train` rather than `keras-seg
    train`); None elsewhere."""
    if not training_environment(model, backbone, step_pixels):
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


# TensorFlow's oneDNN convolutions (and fused matmuls) reorder their filter into oneDNN's
# blocked layout on every call unless the filter is a graph constant; with this variable set
# they treat every filter as constant: each kernel keeps the filter it saw first, reordered,
# for the life of the process. TensorFlow reads it once, at the first such kernel, and only
# under oneDNN (it changes nothing on Eigen's kernels).
FROZEN_WEIGHTS_VARIABLE = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"


def weights_assumed_frozen() -> bool:
    """Whether this process has `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS` on, read as TensorFlow reads
    it ("1"/"true" on, unset or "0"/"false" off, any case). TensorFlow aborts the process on
    any other value at its first oneDNN convolution; this raises ValueError instead."""
    value = os.environ.get(FROZEN_WEIGHTS_VARIABLE)
    if value is None:
        return False
    if value.lower() in ("1", "true"):
        return True
    if value.lower() in ("0", "false"):
        return False
    raise ValueError(f"{FROZEN_WEIGHTS_VARIABLE}={value!r}: TensorFlow accepts 1, true, 0 or false")


def inference_environment() -> dict[str, str]:
    """The process settings of `keras-seg predict` and `evaluate` (`inference_only()`), for a
    process started to predict only (the peers benchmark's inference workers).

    `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`: oneDNN reorders each filter once instead of on every
    call, and in float32 picks its kernel for a blocked filter rather than TensorFlow's HWIO
    one. On the 2-core AMX Xeon (2026-12-03, `predict_on_batch` at 512, fresh processes
    alternating, bench_results/ab_frozen_weights_*.json), batch 1: U-Net ResNet-34 float32
    0.286 -> 0.230 s, bfloat16 0.084 -> 0.067 s; DeepLabV3+ ResNet-50 float32 0.376 -> 0.307
    s, bfloat16 0.112 -> 0.099 s; peak RSS +24 to +97 MiB (the reordered copies). Batch 4,
    where the reorders are shared by four images, 1-6% faster. Logits equal to float32
    round-off on every zoo model, bfloat16 identical (a one-off check, perf.md;
    tests/test_inference_process.py checks four models). A user's own setting wins.
    """
    if FROZEN_WEIGHTS_VARIABLE in os.environ:
        weights_assumed_frozen()  # an invalid value fails here, not in TensorFlow
        return {}
    return {FROZEN_WEIGHTS_VARIABLE: "1"}


def inference_only() -> bool:
    """Declare this process one that only predicts: TensorFlow's oneDNN kernels then reorder
    each convolution's filter once, at its first call, and keep it (see
    `inference_environment` for what that saves). Call it before the first prediction;
    later it changes nothing (TensorFlow has read the setting by then). Returns whether it
    is in force: True where TensorFlow runs oneDNN (x86 CPUs with AVX-512 VNNI/BF16 or AMX
    by default, or `TF_ENABLE_ONEDNN_OPTS=1`) and the variable is on.

    Memory: each traced graph's kernels keep their own reordered filters, so a process
    holds one such copy of the weights per input shape it traces (up to five,
    `keras_seg.tracing`): +24 to +97 MiB for one shape at 512 on U-Net ResNet-34 and
    DeepLabV3+ ResNet-50, +98 to +206 MiB for DeepLabV3+ float32 at batch 1 and 4 (the
    peers command's inference worker; bench_results/perf.md).

    keras_seg's models read it too: in bfloat16 their predict folds BatchNorm into the
    kernels and casts them once, not on every call (`keras_seg.fold.FOLD_ONCE_DTYPES`).

    The weights must not change afterwards: a kernel would keep computing with the filter
    it saw first. So load or set the weights before predicting, and train elsewhere:
    keras_seg models refuse to train in such a process (`refuse_training_if_frozen`).
    `keras-seg predict` and `keras-seg evaluate` call this; training, the demo and the
    export commands do not.
    """
    os.environ.update(inference_environment())
    return weights_assumed_frozen() and onednn_enabled()


def refuse_training_if_frozen() -> None:
    """Raise ValueError where `TF_ONEDNN_ASSUME_FROZEN_WEIGHTS` is on: oneDNN's forward
    convolutions would keep the first weights they saw while the optimizer changes them, so
    training would silently compute wrong gradients."""
    if weights_assumed_frozen():
        raise ValueError(
            f"{FROZEN_WEIGHTS_VARIABLE} is on in this process (keras_seg.machine.inference_only "
            "or the environment): oneDNN would keep the first weights it saw; train in a "
            f"process without it (unset {FROZEN_WEIGHTS_VARIABLE})"
        )
