"""A/B of process-wide settings (environment variables read when TensorFlow starts, such as
`TF_CPU_ALLOCATOR_USE_BFC` or `TF_ENABLE_ONEDNN_OPTS`) on one row of `keras-seg benchmark
peers`: each sample is a fresh process, the candidates alternate (A, B, A, B, ...), and the
report gives per candidate the median step time and the median peak RSS.

Each process builds the row's keras_seg model, runs `--warmup` untimed calls of the user
path (`train_on_batch` at 256 batch 4 for `train`, `predict_on_batch` at 512 batch 1 (or
`--batch`) for `infer`, `keras_seg.inference.Predictor(model).logits` at 512 batch 1 for `predictor`, with
the time of `Predictor()` and its first call as `setup_s`), times `--steps` more and
reports its peak RSS.

With `--config` the process builds a zoo config's model instead (random weights, compiled
by `keras_seg.training.trainer.compile_for_training` as `keras-seg train` compiles it) and
times `train_on_batch` at `--size` batch `--batch`: the per-model A/B behind
`keras_seg.machine.EIGEN_TRAINS_FASTER` (bench_results/ab_onednn_zoo/, one JSON per config):
    python tools/ab_process_env.py --config zoo_configs/segnet_camvid.yaml --rounds 3 \\
        --steps 2 --warmup 1 --candidate eigen TF_ENABLE_ONEDNN_OPTS=0 \\
        --candidate onednn TF_ENABLE_ONEDNN_OPTS=1 \\
        --output bench_results/ab_onednn_zoo/segnet_camvid.json

`AB_PREDICTOR_FREEZE=1` in a candidate's environment runs `Predictor(model, freeze=True)`;
`AB_KERAS_PREDICT=1` makes `infer` call Keras' own `predict_step` (the model's layers one by
one) instead of `SegmentationModel`'s, which folds BatchNorm into the convolutions:
    python tools/ab_process_env.py --row deeplabv3plus_resnet50 --phase infer \\
        --precision bf16 --rounds 3 --steps 8 --warmup 3 --candidate keras AB_KERAS_PREDICT=1 \\
        --candidate folded --output bench_results/ab_predict_fold_deeplabv3plus_bf16.json
`AB_FLOAT32_LOGITS=1` computes the `logits` convolution in float32 (as before it followed
the policy, see `keras_seg.layers.logits_head`):
    python tools/ab_process_env.py --row unet_resnet34 --phase infer --precision bf16 \
        --rounds 3 --steps 8 --warmup 3 --candidate float32 AB_FLOAT32_LOGITS=1 \
        --candidate policy --output bench_results/ab_logits_bf16_unet_infer.json
`AB_FOLD_EARLY=1` computes every folded kernel of a model's own predict at the start of the
call (as before #13's memory work; see `keras_seg.fold.DEFERRED_FOLD_DTYPES`):
    python tools/ab_process_env.py --row deeplabv3plus_resnet50 --phase infer --batch 4 \
        --rounds 3 --steps 3 --warmup 2 --candidate early AB_FOLD_EARLY=1 \
        --candidate deferred --output bench_results/ab_fold_deferred_deeplabv3plus_bs4.json
`AB_KEEP_BUILD_GARBAGE=1` skips the garbage collection at the end of `keras_seg.build` (the
discarded backbone of the atrous surgery then waits for Python's collector):
    python tools/ab_process_env.py --row deeplabv3plus_resnet50 --phase infer --batch 4 \
        --rounds 3 --steps 3 --warmup 2 --candidate kept AB_KEEP_BUILD_GARBAGE=1 \
        --candidate collected --output bench_results/ab_build_gc_deeplabv3plus_bs4.json
`AB_COPY_OUTPUT=1` copies `predict_on_batch`'s output as Keras' does (`Tensor.numpy()`; the
model's own returns a read-only view of the tensor):
    python tools/ab_process_env.py --row deeplabv3plus_resnet50 --phase infer --batch 4 \
        --rounds 3 --steps 3 --warmup 2 --candidate copy AB_COPY_OUTPUT=1 \
        --candidate view --output bench_results/ab_output_view_deeplabv3plus_bs4.json
`AB_RELAXED_PREDICT=1` runs `predict_on_batch` through Keras' relaxed predict function (an
unknown batch dimension, as before `keras_seg.tracing`) instead of the exact-shape traces:
    python tools/ab_process_env.py --row deeplabv3plus_resnet50 --phase infer \
        --precision bf16 --rounds 4 --steps 6 --warmup 3 --candidate relaxed \
        AB_RELAXED_PREDICT=1 --candidate exact --output bench_results/ab_exact_shapes_deeplabv3plus_bf16.json
`AB_PREDICTOR_COPY=1` makes `Predictor` run its folded copy also where it would run the
model's own predict step (a bfloat16 model in a process whose weights are frozen):
    python tools/ab_process_env.py --row unet_resnet34 --phase predictor --precision bf16 \
        --rounds 3 --steps 5 --warmup 3 \
        --candidate copy TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 AB_PREDICTOR_COPY=1 \
        --candidate own TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 \
        --output bench_results/ab_predictor_own_unet_resnet34_bf16.json
`AB_FOLD_EACH_CALL=1` folds BatchNorm into the kernels on every call also where the weights
are declared frozen (`keras_seg.fold.FOLD_ONCE_DTYPES` empty); `--also-batch 4` runs batch 4
in the same process, as the peers worker does:
    python tools/ab_process_env.py --row deeplabv3plus_resnet50 --phase infer \
        --precision bf16 --batch 1 --also-batch 4 --rounds 3 --steps 4 --warmup 2 \
        --candidate each TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 AB_FOLD_EACH_CALL=1 \
        --candidate once TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 \
        --output bench_results/ab_fold_once_deeplabv3plus_bf16.json
`AB_FOLD_ONCE_FLOAT32=1` keeps float32 folded kernels too (`ab_fold_once_*_f32.json`: the
same command without `--precision`, candidates `each` (the default) and `once` with it).
`AB_DEPTHWISE_FOLD=1` runs every dilated depthwise step of inference as Keras' space-to-batch
fold (no `keras_seg.layers.convolution.banded_taps`):
    python tools/ab_process_env.py --row deeplabv3plus_resnet50 --phase infer --batch 1 \
        --also-batch 4 --rounds 3 --steps 4 --warmup 2 \
        --candidate fold TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 AB_DEPTHWISE_FOLD=1 \
        --candidate banded TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 \
        --output bench_results/ab_banded_deeplabv3plus_f32.json
`AB_BANDED_ABOVE=3` sets `BANDED_TAPS_ABOVE` (3: rate 12 on that map banded too).
The environment variable `AB_KERAS_SGD=1` trains with Keras's own SGD instead of keras_seg's
(`keras_seg.training.optimizers.SGD`), for the optimizer A/B in bench_results/perf.md.

Example (the README's BFC A/B):
    python tools/ab_process_env.py --row unet_resnet34 --phase train --rounds 3 \\
        --candidate malloc TF_CPU_ALLOCATOR_USE_BFC=false \\
        --candidate bfc TF_CPU_ALLOCATOR_USE_BFC=true --output /tmp/ab_env.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
import keras_seg, keras
from keras_seg.benchmarks.common import numpy_batch, peak_rss_mib
from keras_seg.benchmarks.peers import ROWS, _build_keras, compile_like_peers
job = json.loads(sys.argv[1])
keras.utils.set_random_seed(0)
keras.mixed_precision.set_global_policy("mixed_bfloat16" if job["precision"] == "bf16" else "float32")
if os.environ.get("AB_KERAS_PREDICT") == "1":
    from keras_seg.models.base import SegmentationModel
    SegmentationModel.predict_step = keras.Model.predict_step
if os.environ.get("AB_FOLD_EARLY") == "1":  # every folded kernel computed at the call's start
    import keras_seg.fold
    keras_seg.fold.DEFERRED_FOLD_DTYPES = frozenset()
if os.environ.get("AB_RELAXED_PREDICT") == "1":  # every shape to the unknown-batch trace
    import keras_seg.tracing
    keras_seg.tracing.ExactShapes.for_inputs = lambda self, *args: self.relaxed
if os.environ.get("AB_PREDICTOR_COPY") == "1":  # Predictor runs its folded copy everywhere
    from keras_seg.inference import Predictor
    Predictor._runs_own_predict = lambda self, model: False
if os.environ.get("AB_FOLD_EACH_CALL") == "1":  # no folded kernels kept in a frozen process
    import keras_seg.fold
    keras_seg.fold.FOLD_ONCE_DTYPES = frozenset()
if os.environ.get("AB_FOLD_ONCE_FLOAT32") == "1":  # float32 folded kernels kept too
    import keras_seg.fold
    keras_seg.fold.FOLD_ONCE_DTYPES = keras_seg.fold.FOLD_ONCE_DTYPES | {"float32"}
if os.environ.get("AB_DEPTHWISE_FOLD") == "1":  # no banded_taps: Keras' space-to-batch fold
    import keras_seg.layers.convolution
    keras_seg.layers.convolution.BANDED_TAPS_ABOVE = float("inf")
if os.environ.get("AB_BANDED_ABOVE"):  # another threshold for banded_taps
    import keras_seg.layers.convolution
    keras_seg.layers.convolution.BANDED_TAPS_ABOVE = float(os.environ["AB_BANDED_ABOVE"])
if os.environ.get("AB_KEEP_BUILD_GARBAGE") == "1":  # build() without its gc.collect()
    import keras_seg.registry
    keras_seg.registry._without_build_garbage = lambda model: model
if job["config"]:  # a zoo config's model, compiled as `keras-seg train` compiles it
    from keras_seg import runs
    from keras_seg.config import load_config
    from keras_seg.training.trainer import compile_for_training
    cfg = load_config(job["config"], ["model.weights=null"])
    # Not runs.class_info(cfg): a folder data set reads classes.txt from data that the A/B
    # does not need; compiling uses only the class count and the ignore label.
    info = runs.ClassInfo(cfg.model.num_classes, (), None)
    model = runs.build_model(cfg)
    _, targets = compile_for_training(cfg, model, info, None)
    x, y = numpy_batch(job["batch"] or 2, job["size"], cfg.model.num_classes, seed=1)
    x = x[..., : cfg.model.input_channels]
    if targets:  # deep supervision (pspnet's aux_head): one mask per output
        x, y = targets(x, y)
    call = lambda: model.train_on_batch(x, y)
else:
    spec = ROWS[job["row"]]["keras_seg"]
    model = _build_keras({"library": "keras_seg", "spec": spec, "num_classes": 21})
    if os.environ.get("AB_FLOAT32_LOGITS") == "1":  # the logits convolution as before #13
        model.get_layer("logits").dtype_policy = "float32"
    if job["phase"] == "train":
        compile_like_peers(model, keras_seg_sgd=not os.environ.get("AB_KERAS_SGD"))
        x, y = numpy_batch(4, 256, 21, seed=1)
        call = lambda: model.train_on_batch(x, y)
    elif job["phase"] == "predictor":  # keras_seg.inference.Predictor: evaluate/predict's path
        from keras_seg.inference import Predictor
        x, _ = numpy_batch(1, 512, 21, seed=1)
        setup = time.perf_counter()
        predictor = Predictor(model, freeze=os.environ.get("AB_PREDICTOR_FREEZE") == "1")
        predictor.logits(x)
        setup = time.perf_counter() - setup
        call = lambda: predictor.logits(x)
    else:
        x, _ = numpy_batch(job["batch"] or 1, 512, 21, seed=1)
        call = lambda: model.predict_on_batch(x)
        if os.environ.get("AB_COPY_OUTPUT") == "1":  # as Keras' own, whose Tensor.numpy() copies
            call = lambda: model.predict_on_batch(x).copy()
        if job["also_batch"]:  # a second batch size in the same process, as the peers worker
            x2, _ = numpy_batch(job["also_batch"], 512, 21, seed=2)
            also = lambda: model.predict_on_batch(x2)
for _ in range(job["warmup"]):
    call()
    if job["also_batch"]:
        also()
times, also_times = [], []
for _ in range(job["steps"]):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
    if job["also_batch"]:
        start = time.perf_counter()
        also()
        also_times.append(time.perf_counter() - start)
out = {"step_s": statistics.median(times), "peak_rss_mib": peak_rss_mib()}
if also_times:
    out["also_step_s"] = statistics.median(also_times)
if not job["config"] and job["phase"] == "predictor":  # Predictor() and its first call
    out |= {"setup_s": setup, "frozen": predictor.frozen}
print(json.dumps(out))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", default="unet_resnet34")
    p.add_argument(
        "--config",
        help="a zoo config instead of --row: its model (random weights) compiled as "
        "`keras-seg train` compiles it, trained with train_on_batch at --size batch --batch",
    )
    p.add_argument("--size", type=int, default=256, help="--config's square crop")
    p.add_argument("--batch", type=int, help="--config's batch size (2), or `infer`'s (1) at 512")
    p.add_argument(
        "--also-batch",
        type=int,
        help="`infer` also calls predict_on_batch at this batch size in the same process "
        "(warmed and timed alternately with --batch), as the peers worker does",
    )
    p.add_argument("--phase", choices=("train", "infer", "predictor"), default="train")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="timed calls per process")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per process")
    p.add_argument(
        "--candidate",
        nargs="+",
        action="append",
        required=True,
        metavar="NAME [VAR=VALUE ...]",
        help="a name and the environment it runs under (repeat for each candidate)",
    )
    p.add_argument("--output", help="JSON report path")
    args = p.parse_args()
    job = json.dumps(
        {
            "row": args.row,
            "phase": args.phase,
            "precision": args.precision,
            "steps": args.steps,
            "warmup": args.warmup,
            "config": args.config,
            "size": args.size,
            "batch": args.batch,
            "also_batch": args.also_batch if args.phase == "infer" else None,
        }
    )
    samples: dict[str, list[dict]] = {c[0]: [] for c in args.candidate}
    for round_ in range(args.rounds):
        for name, *assignments in args.candidate:
            env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
            env.update(a.split("=", 1) for a in assignments)
            done = subprocess.run(
                [sys.executable, "-c", _WORKER, job], env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                print(f"ab_process_env: candidate {name} failed: {last}", file=sys.stderr)
                return 1
            sample = json.loads(done.stdout.strip().splitlines()[-1])
            samples[name].append(sample)
            print(
                f"round {round_ + 1} {name}: step {sample['step_s']:.3f} s, "
                f"peak RSS {sample['peak_rss_mib']:.0f} MiB"
                + (
                    f", batch {args.also_batch} {sample['also_step_s']:.3f} s"
                    if "also_step_s" in sample
                    else ""
                )
                + (f", setup {sample['setup_s']:.2f} s" if "setup_s" in sample else ""),
                flush=True,
            )
    summary = {
        name: {
            "median_step_s": statistics.median(s["step_s"] for s in runs),
            "median_peak_rss_mib": statistics.median(s["peak_rss_mib"] for s in runs),
            **(
                {"median_also_step_s": statistics.median(s["also_step_s"] for s in runs)}
                if "also_step_s" in runs[0]
                else {}
            ),
            "samples": runs,
        }
        for name, runs in samples.items()
    }
    for name, row in summary.items():
        print(
            f"{name}: median step {row['median_step_s']:.3f} s, "
            f"median peak RSS {row['median_peak_rss_mib']:.0f} MiB"
            + (
                f", batch {args.also_batch} {row['median_also_step_s']:.3f} s"
                if "median_also_step_s" in row
                else ""
            )
        )
    if args.output:
        report = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "python tools/ab_process_env.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(),
            "versions": versions(),
            "candidates": {c[0]: c[1:] for c in args.candidate},
            "results": summary,
        }
        Path(args.output).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
