"""Dilated depthwise step: space-to-batch fold against `shifted_taps` (training) or
`banded_taps` (`--inference`), per map size.

For each `--case RATE:SIZE` and each form, a fresh process builds an `AtrousSeparableConv2D`
(3x3, 2048 -> 256 channels: DeepLabV3+ ResNet-50's ASPP branch), runs its forward pass and
both gradients on `batch x SIZE x SIZE x 2048` once untimed, then `--repeats` times, and
reports the median time and TensorFlow's allocator peak (BFC allocator) over the timed steps.
The forms alternate per case. `keras_seg.layers.convolution.SHIFTED_TAPS_ABOVE` is set in the
worker to force one form; the ratio of the fold's padded area to the map's is reported, the
figure that threshold is compared with.

With `--inference` each step is the layer's forward pass alone (`training=False`), in
float32 or, with `--dtype bfloat16`, under the `mixed_bfloat16` policy, the fold against
`banded_taps` (`BANDED_TAPS_ABOVE` forced the same way, `BANDED_TAPS_DTYPES` set to the
dtype).

Examples (bench_results/depthwise_fold_vs_shifted.json, depthwise_fold_vs_banded_*.json):
    python tools/depthwise_fold_vs_shifted.py --output bench_results/depthwise_fold_vs_shifted.json
    python tools/depthwise_fold_vs_shifted.py --inference --batch 1 --case 6:32 12:32 18:32 \
        --output bench_results/depthwise_fold_vs_banded_bs1_float32.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

from keras_seg.benchmarks.common import machine_info  # noqa: E402  (standard library only)
from keras_seg.benchmarks.common import versions  # noqa: E402

_WORKER = """
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
import numpy as np
import keras_seg
import tensorflow as tf
from keras_seg.layers import convolution

form, rate, size, batch, repeats = sys.argv[1], *map(int, sys.argv[2:6])
dtype = sys.argv[6]
convolution.SHIFTED_TAPS_ABOVE = 0.0 if form == "shifted" else float("inf")
convolution.BANDED_TAPS_ABOVE = 0.0 if form == "banded" else float("inf")
convolution.BANDED_TAPS_DTYPES = frozenset({dtype})
shape = (batch, size, size, 2048)
x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"), dtype=dtype)
policy = "float32" if dtype == "float32" else "mixed_" + dtype
layer = convolution.AtrousSeparableConv2D(256, 3, padding="same", dilation_rate=rate,
                                          dtype=policy)
layer.build(shape)


@tf.function
def step(x):
    if os.environ.get("INFERENCE") == "1":
        return [layer(x, training=False)]
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    return tape.gradient(y, [x, *layer.trainable_weights])


graph_ops = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
step(x)
tf.config.experimental.reset_memory_stats("CPU:0")
times = []
for _ in range(repeats):
    start = time.perf_counter()
    [g.numpy() for g in step(x)]
    times.append(time.perf_counter() - start)
print(json.dumps({
    "median_ms": 1000 * statistics.median(times),
    "times_ms": [1000 * t for t in times],
    "allocator_peak_mib": tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20,
    "space_to_batch": "SpaceToBatchND" in graph_ops,
}))
"""


def padded_ratio(rate: int, size: int, k: int = 3) -> float:
    padded = -(-(size + (k - 1) * rate) // rate) * rate
    return padded**2 / size**2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", nargs="+", default=["6:16", "12:16", "12:20", "12:32", "18:32"],
                   help="RATE:SIZE")  # fmt: skip
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--inference", action="store_true", help="forward only: fold vs banded")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    results = []
    for case in args.case:
        rate, size = map(int, case.split(":"))
        row = {"rate": rate, "size": size, "padded_ratio": padded_ratio(rate, size)}
        other = "banded" if args.inference else "shifted"
        for form in ("fold", other):
            command = [sys.executable, "-c", _WORKER, form, str(rate), str(size),
                       str(args.batch), str(args.repeats), args.dtype]  # fmt: skip
            env = {**os.environ, "INFERENCE": "1" if args.inference else "0"}
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
            if done.returncode:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise SystemExit(f"depthwise_fold_vs_shifted: {case} {form}: {tail}")
            row[form] = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"rate {rate} @{size} (fold pads {row['padded_ratio']:.1f}x): "
            f"fold {row['fold']['median_ms']:.1f} ms {row['fold']['allocator_peak_mib']:.0f} MiB, "
            f"{other} {row[other]['median_ms']:.1f} ms "
            f"{row[other]['allocator_peak_mib']:.0f} MiB",
            flush=True,
        )
        results.append(row)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python tools/depthwise_fold_vs_shifted.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "versions": versions(),
        "batch": args.batch,
        "step": "inference" if args.inference else "training",
        "dtype": args.dtype,
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
