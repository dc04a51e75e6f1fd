"""A/B timings of keras_seg inference settings, interleaved (A, B, C, A, B, C, ...) in one
process so machine load hits every candidate alike; medians and minima per candidate.

In-process candidates: Keras `predict_on_batch`, a cached `tf.function`, the same with
BatchNorm folded (`keras_seg.fold.fold_batch_norm`), and each with XLA (`jit_compile=True`);
`train` / `train_jit`: one `train_on_batch` step (SGD momentum, cross-entropy ignoring 255)
at `--train-size` with `--train-batch-size`, without and with XLA.
Process-wide settings (oneDNN, thread pools) need one process each: run this script
alternately with `--candidates tf.function folded` under each setting, e.g.
`TF_ENABLE_ONEDNN_OPTS=0`, `--intra 1`, `--inter 1`.

Example:
    python tools/ab_inference.py --model unet:resnet34 --rounds 7 --output /tmp/ab.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

MODELS = {
    "unet:resnet34": ("unet", {"backbone": "resnet34"}),
    "deeplabv3plus:resnet50": (
        "deeplabv3plus",
        {"backbone": "resnet50", "output_stride": 16, "separable": True},
    ),
}
CANDIDATES = (
    "predict_on_batch", "tf.function", "folded", "folded_predict_on_batch", "jit", "folded_jit",
    "train", "train_jit",
)  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="unet:resnet34")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--train-batch-size", type=int, default=2)
    p.add_argument("--candidates", nargs="+", choices=CANDIDATES, default=list(CANDIDATES))
    p.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TF default)")
    p.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TF default)")
    p.add_argument("--label", default="", help="tag stored with the results (e.g. the env)")
    p.add_argument("--output", help="append one JSON line here")
    args = p.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    import keras_seg
    from keras_seg.fold import fold_batch_norm

    name, kwargs = MODELS[args.model]
    model = keras_seg.build(name, num_classes=21, **kwargs)
    folded = fold_batch_norm(model)
    x = np.random.default_rng(0).uniform(0, 255, (args.batch_size, args.size, args.size, 3))
    x = x.astype("float32")
    xt = tf.constant(x)

    def train_step(jit):
        import keras

        m = keras_seg.build(name, num_classes=21, **kwargs)
        m.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
            jit_compile=jit,
        )
        rng = np.random.default_rng(1)
        shape = (args.train_batch_size, args.train_size, args.train_size)
        xs = tf.constant(rng.uniform(0, 255, (*shape, 3)), tf.float32)
        ys = tf.constant(rng.integers(0, 21, shape))
        return lambda: m.train_on_batch(xs, ys)

    def compiled(m, jit):
        f = tf.function(lambda t: m(t, training=False), jit_compile=jit)
        return lambda: f(xt).numpy()

    fns = {
        "predict_on_batch": lambda: model.predict_on_batch(x),
        "tf.function": compiled(model, False),
        "folded": compiled(folded, False),
        "folded_predict_on_batch": lambda: folded.predict_on_batch(x),
        "jit": compiled(model, True),
        "folded_jit": compiled(folded, True),
        "train": lambda: train_step(False),
        "train_jit": lambda: train_step(True),
    }
    fns = {k: fns[k]() if k.startswith("train") else fns[k] for k in args.candidates}
    for fn in fns.values():
        fn()
        fn()
    # Wall time, and this process's CPU time (all its threads): on a machine shared with
    # other jobs the CPU time moves far less with their load than the wall time does.
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[k].append(1e3 * (time.perf_counter() - start))
            cpu[k].append(1e3 * (time.process_time() - start_cpu))
    rows = {
        k: {"median_ms": statistics.median(v), "min_ms": min(v),
            "cpu_median_ms": statistics.median(cpu[k]), "times_ms": v, "cpu_ms": cpu[k]}
        for k, v in times.items()
    }  # fmt: skip
    for k, row in rows.items():
        print(
            f"{args.model} {args.label} {k:24s} median {row['median_ms']:7.1f} ms"
            f"  min {row['min_ms']:7.1f} ms  cpu median {row['cpu_median_ms']:7.1f} ms"
        )
    if args.output:
        with open(args.output, "a") as f:
            record = {"model": args.model, "label": args.label, "size": args.size,
                      "intra": args.intra, "inter": args.inter, "results": rows}  # fmt: skip
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
