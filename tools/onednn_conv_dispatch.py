"""Which oneDNN convolution TensorFlow runs per batch size, and how fast against Eigen.

On an AVX2-only CPU TensorFlow leaves oneDNN off; turned on (`TF_ENABLE_ONEDNN_OPTS=1`) it
speeds U-Net's batch-4 inference and training but slows batch-1 inference (README, "On a CPU
without AVX-512"). This tool times the 3x3 convolutions of U-Net ResNet-34 at 512x512 (each
as TensorFlow runs them at inference: convolution, bias and ReLU in one `_FusedConv2D`) at
batch 1 and 4, once in a process with Eigen's kernels and once with oneDNN's, and in a third
process (with `ONEDNN_VERBOSE=1`, so not timed) records the oneDNN implementation each
convolution dispatched to. Writes JSON (machine, versions, per shape and batch: median ms,
GFLOP/s, implementation).

Example (the README's figures):
    python tools/onednn_conv_dispatch.py --output bench_results/onednn_conv_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

from keras_seg.benchmarks.common import run_worker  # noqa: E402  (standard library only)
from keras_seg.benchmarks.common import write_report  # noqa: E402

# (name, height=width, input channels, output channels): U-Net ResNet-34's 3x3 convolutions
# at 512x512 input, one per stage (the encoder's BasicBlocks, the decoder's first conv after
# the skip concatenation).
SHAPES = (
    ("encoder_stage1", 128, 64, 64),
    ("encoder_stage2", 64, 128, 128),
    ("encoder_stage3", 32, 256, 256),
    ("encoder_stage4", 16, 512, 512),
    ("decoder1", 32, 768, 256),
    ("decoder2", 64, 384, 128),
    ("decoder3", 128, 192, 64),
    ("decoder4", 256, 128, 32),
    ("decoder5", 512, 32, 16),
)

_WORKER = """
import json, statistics, sys, time
import tensorflow as tf
job = json.loads(sys.argv[1])
out = {}
for name, hw, cin, cout in job["shapes"]:
    for batch in job["batches"]:
        x = tf.random.normal([batch, hw, hw, cin])
        k = tf.random.normal([3, 3, cin, cout])
        b = tf.zeros([cout])
        f = tf.function(lambda x: tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, k, 1, "SAME"), b)))
        f(x)
        times = []
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            f(x)[0, 0, 0, 0].numpy()
            times.append(time.perf_counter() - start)
        if job["verbose"]:
            print(f"@@ {name} {batch}", flush=True)
        out[f"{name}/bs{batch}"] = statistics.median(times) * 1000
print("@@RESULT " + json.dumps(out), flush=True)
"""


def _run(job: dict, env: dict[str, str]) -> tuple[dict[str, float], str]:
    out = run_worker(
        [sys.executable, "-c", _WORKER, json.dumps(job)],
        {**os.environ, **env},
        "onednn_conv_dispatch: worker failed",
    )
    for line in out.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[len("@@RESULT ") :]), out
    raise SystemExit("onednn_conv_dispatch: the worker printed no result")


def implementations(verbose_stdout: str) -> dict[str, list[str]]:
    """The convolution implementations oneDNN executed per `@@ name batch` marker: each
    marker line follows the verbose lines of its shape's calls."""
    found: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in verbose_stdout.splitlines():
        fields = line.split(",")
        if line.startswith("onednn_verbose") and "exec" in fields and "convolution" in fields:
            impl = fields[fields.index("convolution") + 1]
            if impl not in pending:
                pending.append(impl)
        elif line.startswith("@@ "):
            _, name, batch = line.split()
            found[f"{name}/bs{batch}"] = pending
            pending = []
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="onednn_conv_dispatch.json")
    args = parser.parse_args()
    job = {"shapes": SHAPES, "batches": args.batches, "repeats": args.repeats, "verbose": False}
    eigen, _ = _run(job, {"TF_ENABLE_ONEDNN_OPTS": "0"})
    onednn, _ = _run(job, {"TF_ENABLE_ONEDNN_OPTS": "1"})
    _, log = _run(
        job | {"repeats": 1, "verbose": True},
        {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_VERBOSE": "1"},
    )
    impls = implementations(log)
    rows = []
    for name, hw, cin, cout in SHAPES:
        for batch in args.batches:
            key = f"{name}/bs{batch}"
            gflop = 2 * batch * hw * hw * 9 * cin * cout / 1e9
            rows.append(
                {
                    "conv": name,
                    "batch": batch,
                    "input": [batch, hw, hw, cin],
                    "filters": cout,
                    "eigen_ms": eigen[key],
                    "onednn_ms": onednn[key],
                    "eigen_gflops": gflop / eigen[key] * 1000,
                    "onednn_gflops": gflop / onednn[key] * 1000,
                    "onednn_implementation": impls.get(key, []),
                }
            )
            print(
                f"{key:22s} eigen {eigen[key]:7.1f} ms  onednn {onednn[key]:7.1f} ms  "
                f"{', '.join(impls.get(key, []))}"
            )
    command = " ".join(["python", "tools/onednn_conv_dispatch.py", *sys.argv[1:]])
    settings = {"command": command, "repeats": args.repeats, "batches": args.batches}
    write_report(Path(args.output), "onednn_conv_dispatch", settings, rows)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
