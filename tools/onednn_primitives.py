"""Which oneDNN primitives one training step runs in keras_seg (TensorFlow) and in
segmentation_models.pytorch (PyTorch), with their implementations, memory layouts and
times, read from oneDNN's own verbose log: for a training step (`--phase train`) or a
`predict_on_batch` / `inference_mode` forward pass (`--phase infer`), in float32 or in each
library's bfloat16 (`--precision bf16`).

Both libraries call oneDNN for convolutions on the CPU, so its log names the kernel each
side gets and the layout of the tensors it is given (`acdb` is NHWC; `aBcd8b` is PyTorch's
blocked nChw8c). Each library runs in its own process: keras_seg's `--row` model (as
`keras-seg benchmark peers` builds it) compiled like the peers command and trained with
`train_on_batch` under `TF_ENABLE_ONEDNN_OPTS=1` (`keras-seg train`'s kernels on an AVX2
CPU), SMP's model with SGD momentum 0.9 and cross-entropy, 2 threads, both at `--size`
batch `--batch`, with `ONEDNN_VERBOSE=1` (which both libraries' oneDNN reads when it
starts). TensorFlow runs one op at a time (`--serial`, the default; PyTorch's eager
steps do), so that the primitives' logged times do not overlap. After `--warmup` steps, `--steps` steps are timed, then one more step's log is
kept: the report sums its primitive times by (primitive, implementation, propagation kind,
first tensor's layout).

Example (bench_results/perf.md, "TensorFlow gives oneDNN NHWC tensors and variable
filters"):
    python tools/onednn_primitives.py --row unet_resnet34 \\
        --output bench_results/onednn_primitives_unet.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

from keras_seg.benchmarks.common import write_report  # noqa: E402  (standard library only)

MARK = "--- logged step ---"

# Each side is the peers command's own worker set-up (`keras-seg benchmark peers`):
# `peers.keras_setup` and `peers_torch.setup` build, compile and cast as that command does,
# and the step is its user path (predict_on_batch / train_on_batch; SMP's eager call).
_JOB = """
import json, statistics, sys, time
from keras_seg.benchmarks.peers import ROWS
job = json.loads(sys.argv[1])
phase = {"infer": "inference", "train": "training"}[job["phase"]]
worker = {"spec": ROWS[job["row"]][LIBRARY], "library": LIBRARY, "num_classes": 21,
          "precision": job["precision"], "phase": phase, "threads": 2, "tf_threads": 0,
          "iters": 1, "cases": {"case": {"batch": job["batch"], "size": job["size"]}}}
"""

_KERAS = """
import tensorflow as tf
from keras_seg.benchmarks.peers import USER_PATH, keras_setup
if job["serial"]:
    tf.config.threading.set_inter_op_parallelism_threads(1)
_, calls = keras_setup(worker)
step = calls["case/" + USER_PATH[phase]][0]
"""

# SMP (torchvision) first: imported after TensorFlow, which `import keras_seg` loads, it crashes.
_TORCH_FIRST = "import segmentation_models_pytorch\n"
_TORCH = """
from keras_seg.benchmarks import common, peers_torch
_, calls = peers_torch.setup(worker, common)
step = calls["case/eager"][0]
"""

_TIMING = """
for _ in range(job["warmup"]):
    step()
times = []
for _ in range(job["steps"]):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps({"step_s": statistics.median(times)}), flush=True)
print(MARK, flush=True)
"""


def _layout(descriptors: str) -> str:
    """The first tensor's layout tag in a verbose line's memory descriptors."""
    found = re.search(r":blocked:([A-Za-z0-9]+)", descriptors)
    return found.group(1) if found else "?"


def parse(stdout: str) -> tuple[float, list[dict]]:
    """The unlogged median step time and the logged step's primitives, summed by kind."""
    lines = stdout.splitlines()
    cut = lines.index(MARK)
    step_s = json.loads(lines[cut - 1])["step_s"]
    totals: dict[tuple, list[float]] = defaultdict(lambda: [0, 0.0])
    for line in lines[cut + 1 :]:
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields[:4]:
            continue
        at = fields.index("exec")  # "onednn_verbose,[v1,]primitive,exec,cpu,KIND,IMPL,PROP,MDS"
        key = (fields[at + 2], fields[at + 3], fields[at + 4], _layout(fields[at + 5]))
        totals[key][0] += 1
        totals[key][1] += float(fields[-1])
    rows = [
        {"primitive": k[0], "impl": k[1], "prop": k[2], "layout": k[3], "count": n, "ms": ms}
        for k, (n, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])
    ]
    return step_s, rows


def run(library: str, job: dict) -> dict:
    first, side = ("", _KERAS) if library == "keras_seg" else (_TORCH_FIRST, _TORCH)
    code = first + _JOB.replace("LIBRARY", repr(library)) + side
    code += _TIMING.replace("MARK", repr(MARK))
    code += "step()\n"
    # oneDNN reads ONEDNN_VERBOSE once, in both libraries: every step logs (a few ms).
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", ONEDNN_VERBOSE="1")
    if library == "keras_seg":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(job)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0 or MARK not in done.stdout:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"onednn_primitives: the {library} process failed: {last}")
    step_s, rows = parse(done.stdout)
    return {"step_s": step_s, "logged_ms": sum(r["ms"] for r in rows), "primitives": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", default="unet_resnet34")
    p.add_argument("--phase", choices=("train", "infer"), default="train")
    p.add_argument(
        "--precision",
        choices=("float32", "bf16"),
        default="float32",
        help="bf16: keras_seg's mixed_bfloat16 policy, SMP's bfloat16 autocast with "
        "channels_last (the peers command's bf16)",
    )
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--top", type=int, default=8)
    p.add_argument(
        "--serial",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="TensorFlow runs one op at a time, as PyTorch does, so that primitive times "
        "do not overlap (--no-serial: TensorFlow's default inter-op threads)",
    )
    p.add_argument("--output", help="JSON report path")
    args = p.parse_args()
    keys = ("row", "phase", "precision", "size", "batch", "warmup", "steps", "serial")
    job = {k: getattr(args, k) for k in keys}
    results = {library: run(library, job) for library in ("keras_seg", "smp")}
    for library, result in results.items():
        print(
            f"{library}: median step {result['step_s']:.3f} s; "
            f"{result['logged_ms']:.0f} ms in oneDNN primitives in the logged step"
        )
        for r in result["primitives"][: args.top]:
            print(
                f"  {r['ms']:8.1f} ms {r['count']:4d}  {r['primitive']} {r['impl']} "
                f"{r['prop']} ({r['layout']})"
            )
    if args.output:
        command = "python tools/onednn_primitives.py " + " ".join(sys.argv[1:])
        write_report(args.output, "onednn_primitives", job | {"command": command}, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
