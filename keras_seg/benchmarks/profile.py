"""`keras-seg benchmark profile`: where a zoo model's CPU time goes, op by op.

Runs the model's inference (and with `--train` one training step) under the TensorFlow
profiler (`tf.profiler.experimental.start/stop`) and reads the trace with TensorFlow's own
converter (`_pywrap_profiler_plugin.xspace_to_tools_data(..., "framework_op_stats")`, the
table TensorBoard's profile plugin shows), so no extra package is needed on TF 2.21. Each op
is attributed to the Keras layer that made it (its name scope), which gives a category
(conv, batch_norm, activation, concat, resize, ...). `--torch CLASS` also profiles the
segmentation_models.pytorch model under `torch.profiler` in its own interpreter (PyTorch and
TensorFlow do not share a process; `--train` profiles its training step too, `--precision
bf16` puts both sides in their bfloat16 setting), with aten ops mapped to the same categories, so the two
read side by side: "batch_norm costs X ms in TensorFlow, Y ms in PyTorch".

Times are per step (the profiled steps' total self time / steps). Profiling adds a little
overhead per op; `step_ms_unprofiled` is the median of the same steps without it.

Example:
    keras-seg benchmark profile --model unet:resnet34 --torch Unet \\
        --torch-kwargs '{"encoder_name": "resnet34"}' --output bench_results/profile_unet.json
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_seg.benchmarks.common import time_median
from keras_seg.benchmarks.common import write_report

# Keras layer class -> category; the PyTorch side maps aten ops to the same names.
LAYER_CATEGORIES = {
    "conv": ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose"),
    "batch_norm": ("BatchNormalization", "FusedBatchNorm", "FoldedBatchNorm"),
    "activation": ("Activation", "ReLU"),
    "concat": ("Concatenate",),
    "resize": ("UpSampling2D", "ResizeToMatch", "Resizing"),
    "pooling": ("MaxPooling2D", "GlobalAveragePooling2D", "AdaptiveAveragePooling2D"),
    "add": ("Add",),
    "pad/crop": ("PadToMultiple", "CropToMatch", "ZeroPadding2D"),
    "normalize": ("Normalize",),
}
KERAS_POLICY = {"float32": "float32", "bf16": "mixed_bfloat16"}
_CATEGORY_OF = {cls: cat for cat, classes in LAYER_CATEGORIES.items() for cls in classes}


def layer_classes(model) -> dict[str, str]:
    """Layer name -> class name, nested models included."""
    from keras_seg.fold import walk_layers

    return {layer.name: type(layer).__name__ for layer in walk_layers(model)}


def op_category(op_name: str, classes: dict[str, str], op_type: str = "") -> tuple[str | None, str]:
    """The layer (innermost name scope that is a layer) and category of a TF op.

    A convolution is "conv" whatever layer names it: Grappler's fused convolution
    (`_MklNativeFusedConv2D`: conv + bias + ReLU, or + residual add) takes the name of the
    last op it absorbed, e.g. `.../decoder1_1_relu_1/Relu`.
    """
    for scope in reversed(op_name.split("/")[:-1]):
        name = scope if scope in classes else re.sub(r"_\d+$", "", scope)
        cls = classes.get(name)
        if cls is not None and cls not in ("Functional", "Model"):
            return name, "conv" if "Conv" in op_type else _CATEGORY_OF.get(cls, "other")
    return None, "conv" if "Conv" in op_type else "other"


def framework_op_stats(logdir: str) -> list[dict[str, Any]]:
    """Host ops of the trace in `logdir`: `{type, operation, occurrences, self_us}`."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

    paths = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
    data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"TensorFlow could not convert the trace {paths}")
    table = json.loads(data)[0]  # [0] includes IDLE, [1] excludes it; both hold the same ops
    cols = [c["id"] for c in table["cols"]]
    rows = [
        dict(zip(cols, [c["v"] if c else None for c in r["c"]], strict=True)) for r in table["rows"]
    ]
    return [
        {
            "type": r["type"],
            "operation": r["operation"],
            "occurrences": int(r["occurrences"]),
            "self_us": float(r["total_self_time"]),
        }
        for r in rows
        if r["type"] != "IDLE"
    ]


def summarize(ops: list[dict[str, Any]], classes: dict[str, str], steps: int, top: int) -> dict:
    """Per-step self ms by op, by op type and by category, with shares of the total."""
    total = sum(op["self_us"] for op in ops) / 1e3 / steps
    rows, by_type, by_category = [], {}, {}
    for op in ops:
        ms = op["self_us"] / 1e3 / steps
        layer, category = op_category(op["operation"], classes, op["type"])
        rows.append({"type": op["type"], "operation": op["operation"], "layer": layer,
                     "category": category, "self_ms": ms, "share": ms / total})  # fmt: skip
        by_type[op["type"]] = by_type.get(op["type"], 0.0) + ms
        by_category[category] = by_category.get(category, 0.0) + ms
    rows.sort(key=lambda r: -r["self_ms"])

    def ranked(d):
        return {
            k: {"self_ms": v, "share": v / total}
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])
        }

    return {
        "profiled_self_ms": total,
        "categories": ranked(by_category),
        "op_types": ranked(by_type),
        "top_ops": rows[:top],
    }


def profile_tf(fn, steps: int) -> tuple[list[dict[str, Any]], float]:
    """Warm `fn` up, time `steps` calls, then trace `steps` calls; (ops, median step ms)."""
    import tensorflow as tf

    timing = time_median(fn, repeats=steps, warmup=2)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            fn()
        tf.profiler.experimental.stop()
        ops = framework_op_stats(logdir)
    return ops, 1e3 * timing["median_s"]


def profile_torch(args) -> dict[str, Any]:
    """`profile_torch.py` in a fresh interpreter (no TensorFlow in it)."""
    job = {
        "class": args.torch,
        "kwargs": args.torch_kwargs,
        "num_classes": args.num_classes,
        "size": args.size,
        "batch": args.batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "top": args.top,
        "precision": args.precision,
        "train": args.train,
        "train_size": args.train_size,
        "train_batch": args.train_batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        script = Path(__file__).with_name("profile_torch.py")
        # -P: the script's folder holds this `profile.py`, which would shadow the stdlib's.
        subprocess.run([sys.executable, "-P", str(script), str(job_path)], check=True)
        return json.loads((Path(tmp) / "torch_profile.json").read_text())


def build_model(args):
    import keras_seg

    name, _, backbone = args.model.partition(":")
    kwargs = dict(args.model_kwargs)
    if backbone:
        kwargs["backbone"] = backbone
    return keras_seg.build(name, num_classes=args.num_classes, **kwargs)


def profile_keras(args) -> dict[str, Any]:
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_seg.fold import fold_batch_norm

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.mixed_precision.set_global_policy(KERAS_POLICY[args.precision])
    model = build_model(args)
    run_model = fold_batch_norm(model) if args.fold else model
    classes = layer_classes(run_model)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (args.batch_size, args.size, args.size, 3)), tf.float32)
    forward = tf.function(lambda x: run_model(x, training=False), jit_compile=args.jit)
    ops, step_ms = profile_tf(lambda: forward(x).numpy(), args.steps)
    result = {
        "inference": {
            "step_ms_unprofiled": step_ms,
            **summarize(ops, classes, args.steps, args.top),
        }
    }
    if args.train:
        size = args.train_size
        xt = tf.constant(rng.uniform(0, 255, (args.train_batch_size, size, size, 3)), tf.float32)
        yt = tf.constant(rng.integers(0, args.num_classes, (args.train_batch_size, size, size)))
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
            jit_compile=args.jit,
        )
        ops, step_ms = profile_tf(lambda: model.train_on_batch(xt, yt), args.steps)
        classes = layer_classes(model)
        result["training"] = {
            "step_ms_unprofiled": step_ms,
            **summarize(ops, classes, args.steps, args.top),
        }
    return result


def _print_table(title: str, categories: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    for name, row in categories.items():
        print(f"  {name:12s} {row['self_ms']:9.1f} ms  {100 * row['share']:5.1f}%")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark profile", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", default="unet:resnet34", help="`name` or `name:backbone`")
    p.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON builder arguments")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="profiled (and timed) steps")
    p.add_argument(
        "--fold",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNorm into the convolutions, as keras_seg's inference does",
    )
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False, help="XLA")
    p.add_argument(
        "--precision",
        choices=tuple(KERAS_POLICY),
        default="float32",
        help="bf16: keras_seg's mixed_bfloat16 policy; PyTorch's bfloat16 autocast with "
        "channels_last (as `keras-seg benchmark peers`)",
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF's default)")
    p.add_argument("--train", action="store_true", help="also profile one training step")
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--train-batch-size", type=int, default=2)
    p.add_argument("--torch", help="also profile segmentation_models_pytorch.<CLASS>")
    p.add_argument("--torch-kwargs", type=json.loads, default={}, help="JSON SMP arguments")
    p.add_argument("--top", type=int, default=10, help="ops listed")
    p.add_argument("--output", default="bench_results/profile.json", help="JSON report path")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for option in ("num_classes", "size", "batch_size", "steps", "top"):
        if getattr(args, option) < 1:
            raise SystemExit(
                f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}"
            )
    # The PyTorch worker runs first: its interpreter never sees TensorFlow's thread pools.
    results = {"torch": profile_torch(args)} if args.torch else {}
    results = {"keras_seg": profile_keras(args), **results}
    settings = {k: v for k, v in vars(args).items() if k != "output"}
    write_report(args.output, "profile", settings, results)
    for phase, res in results["keras_seg"].items():
        title = (
            f"keras_seg {args.model} {phase}: {res['step_ms_unprofiled']:.1f} ms/step "
            f"({res['profiled_self_ms']:.1f} ms profiled self time)"
        )
        _print_table(title, res["categories"])
        for op in res["top_ops"]:
            share = f"{op['self_ms']:8.1f} ms {100 * op['share']:5.1f}%"
            print(f"    {share}  {op['type']:28s} {op['operation']}")
    for phase, res in results.get("torch", {}).get("phases", {}).items():
        title = f"{results['torch']['model']} {phase}: {res['step_ms_unprofiled']:.1f} ms/step"
        _print_table(title, res["categories"])
        for op in res["top_ops"]:
            print(f"    {op['self_ms']:8.1f} ms {100 * op['share']:5.1f}%  {op['type']}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
