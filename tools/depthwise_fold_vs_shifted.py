"""Dilated depthwise training step: space-to-batch fold against `shifted_taps`, per map size.

For each `--case RATE:SIZE` and each form, a fresh process builds an `AtrousSeparableConv2D`
(3x3, 2048 -> 256 channels: DeepLabV3+ ResNet-50's ASPP branch), runs its forward pass and
both gradients on `batch x SIZE x SIZE x 2048` once untimed, then `--repeats` times, and
reports the median time and TensorFlow's allocator peak (BFC allocator) over the timed steps.
The forms alternate per case. `keras_seg.layers.convolution.SHIFTED_TAPS_ABOVE` is set in the
worker to force one form; the ratio of the fold's padded area to the map's is reported, the
figure that threshold is compared with.

Example (bench_results/depthwise_fold_vs_shifted.json):
    python tools/depthwise_fold_vs_shifted.py --output bench_results/depthwise_fold_vs_shifted.json
"""

from __future__ import annotations

import argparse
import json
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
convolution.SHIFTED_TAPS_ABOVE = 0.0 if form == "shifted" else float("inf")
shape = (batch, size, size, 2048)
x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
layer = convolution.AtrousSeparableConv2D(256, 3, padding="same", dilation_rate=rate)
layer.build(shape)


@tf.function
def step(x):
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
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    results = []
    for case in args.case:
        rate, size = map(int, case.split(":"))
        row = {"rate": rate, "size": size, "padded_ratio": padded_ratio(rate, size)}
        for form in ("fold", "shifted"):
            command = [sys.executable, "-c", _WORKER, form, str(rate), str(size),
                       str(args.batch), str(args.repeats)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise SystemExit(f"depthwise_fold_vs_shifted: {case} {form}: {tail}")
            row[form] = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"rate {rate} @{size} (fold pads {row['padded_ratio']:.1f}x): "
            f"fold {row['fold']['median_ms']:.0f} ms {row['fold']['allocator_peak_mib']:.0f} MiB, "
            f"shifted {row['shifted']['median_ms']:.0f} ms "
            f"{row['shifted']['allocator_peak_mib']:.0f} MiB",
            flush=True,
        )
        results.append(row)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python tools/depthwise_fold_vs_shifted.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "versions": versions(),
        "batch": args.batch,
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
