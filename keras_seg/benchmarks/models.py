"""`keras-seg benchmark models`: parameters, GFLOPs, speed and memory of the model zoo.

For each model (and backbone) it records, at one input size and in one precision:
parameters; GFLOPs of one image (`keras_seg.flops.count_flops`); inference images/s of a
compiled `tf.function` per batch size; training images/s of real `train_on_batch` steps
(SparseCategoricalCrossentropy with ignore_class=255, SGD with momentum 0.9) on a fixed batch;
peak resident memory; TFLite latency (builtin ops, `ai_edge_litert` interpreter). Each timing
is the median of `--repeats` passes after warm-up. The same run measures the machine's
matrix-multiply peak (float32 and bfloat16), so every figure also reads as a fraction of what
the machine can do: achieved GFLOP/s = GFLOPs x images/s (training counts ~3x the forward pass).

Each model runs in its own subprocess (`--no-isolate` to run in-process), so its peak RSS
(`ru_maxrss`) is its own and one model's memory does not slow the next.

Example:
    keras-seg benchmark models --models unet:resnet34 deeplabv3plus:resnet50 \\
        --output bench_results/models.json --markdown bench_results/models.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from datetime import timezone
from pathlib import Path
from typing import Any

from keras_seg.benchmarks.common import time_median
from keras_seg.benchmarks.common import write_report

README_BEGIN = "<!-- benchmark:models begin -->"
README_END = "<!-- benchmark:models end -->"


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_batch(batch: int, size: int, num_classes: int, seed: int = 0):
    """Images (float32 0..255) and labels with ~5% ignore pixels (255), as tf constants."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, num_classes, (batch, size, size)).astype("int32")
    y[rng.random(y.shape) < 0.05] = 255
    return tf.constant(x), tf.constant(y)


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a `size` x `size` `tf.matmul`, float32 and bfloat16 (2 n^3 FLOPs each)."""
    import tensorflow as tf

    out = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.random.normal((size, size), dtype=dtype, seed=1)
        b = tf.random.normal((size, size), dtype=dtype, seed=2)

        @tf.function(autograph=False)
        def product(a=a, b=b):
            # Reduce inside the graph so no n x n copy to numpy is timed.
            return tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))

        timing = time_median(lambda f=product: f().numpy(), repeats=repeats, warmup=2)
        out[dtype] = 2 * size**3 / timing["median_s"] / 1e9
    return out


def measure_keras_model(model, settings: dict[str, Any]) -> dict[str, Any]:
    """Inference and training images/s (and peak RSS after each) of a Keras image model.

    Used for keras_seg's models. `settings` needs size, batch_sizes, train_size,
    train_batch_size, repeats, jit, num_classes.
    """
    import keras
    import tensorflow as tf

    repeats, jit = settings["repeats"], settings["jit"]
    infer = tf.function(lambda x: model(x, training=False), jit_compile=jit, autograph=False)
    inference = {}
    for batch in settings["batch_sizes"]:
        x, _ = random_batch(batch, settings["size"], settings["num_classes"])
        timing = time_median(lambda x=x: infer(x).numpy(), repeats=repeats, warmup=2)
        inference[str(batch)] = {**timing, "images_per_s": batch / timing["median_s"]}
    result: dict[str, Any] = {"inference": inference, "peak_rss_inference_mib": _rss_mib()}

    if settings["train_batch_size"]:
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255, from_logits=True),
            metrics=[],  # not None: that would keep the metrics a keras-hub task set itself
            jit_compile=jit,
        )
        batch = settings["train_batch_size"]
        x, y = random_batch(batch, settings["train_size"], settings["num_classes"], seed=1)
        timing = time_median(lambda: model.train_on_batch(x, y), repeats=repeats, warmup=2)
        result["training"] = {**timing, "images_per_s": batch / timing["median_s"]}
        result["peak_rss_training_mib"] = _rss_mib()
    return result


def tflite_latency(model, size: int, threads: int, repeats: int) -> dict[str, Any]:
    """Time the float32 TFLite export (`keras_seg.export`, builtin ops) at (1, size, size)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from keras_seg.export.tflite_export import convert

    # The exporter's flatbuffer, not a converter of our own: it freezes the variables
    # (a concrete function converted directly keeps them as READ_VARIABLE ops, which
    # XNNPACK cannot take) and it is what users ship.
    flatbuffer = convert(model, input_size=(size, size), input_dtype="float32")
    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, random_batch(1, size, 1)[0].numpy().astype(np.float32))
    timing = time_median(interpreter.invoke, repeats=repeats, warmup=1)
    return {**timing, "latency_ms": 1000 * timing["median_s"], "size_mb": len(flatbuffer) / 1e6}


def _build(entry: dict[str, Any], settings: dict[str, Any]):
    import keras_seg

    kwargs = dict(keras_seg.get_spec(entry["model"]).small_config) if settings["small"] else {}
    kwargs.update(entry["kwargs"])
    # A small_config may name its own (cheap) backbone; an explicit one wins.
    backbone = entry["backbone"] or kwargs.get("backbone")
    kwargs.pop("backbone", None)
    return keras_seg.build(
        entry["model"], num_classes=settings["num_classes"], backbone=backbone, **kwargs
    )


def measure_entry(entry: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Every figure for one model: parameters, GFLOPs, speed, memory, TFLite."""
    import keras

    from keras_seg.flops import count_flops

    keras.mixed_precision.set_global_policy(settings["precision"])
    keras.utils.set_random_seed(0)
    model = _build(entry, settings)
    row: dict[str, Any] = {
        **entry,
        "params": model.count_params(),
        "trainable_params": sum(math.prod(v.shape) for v in model.trainable_weights),
        "peak_rss_build_mib": _rss_mib(),
    }
    row.update(measure_keras_model(model, settings))
    if settings["flops"]:
        row["gflops"] = count_flops(model, settings["size"], settings["size"]) / 1e9
    if settings["flops"] and settings["train_batch_size"]:
        train_size = settings["train_size"]
        row["gflops_train_size"] = (
            row["gflops"]
            if train_size == settings["size"]
            else count_flops(model, train_size, train_size) / 1e9
        )
    if settings["tflite"]:
        # TFLite gets a float32 model whatever the precision (same weights).
        keras.mixed_precision.set_global_policy("float32")
        float_model = _build(entry, settings)
        float_model.set_weights(model.get_weights())
        row["tflite"] = tflite_latency(
            float_model, settings["size"], settings["tflite_threads"], settings["repeats"]
        )
    row["peak_rss_mib"] = _rss_mib()
    return row


def _run_isolated(entry: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp, "job.json"), Path(tmp, "row.json")
        job.write_text(json.dumps({"entry": entry, "settings": settings}))
        command = [sys.executable, "-m", "keras_seg.benchmarks.models", "--worker", str(job)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
        if done.returncode != 0 or not out.exists():
            tail = (done.stdout + done.stderr)[-3000:]
            return {**entry, "error": f"worker exited with {done.returncode}: {tail}"}
        return json.loads(out.read_text())


def _worker(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    row = measure_entry(job["entry"], job["settings"])
    Path(job_path).with_name("row.json").write_text(json.dumps(row))
    return 0


def parse_entry(text: str, backbone: str | None, model_kwargs: dict[str, dict]) -> dict:
    """`name` or `name:backbone` -> {"model", "backbone", "kwargs", "label"}."""
    import keras_seg

    name, _, own_backbone = text.partition(":")
    keras_seg.get_spec(name)  # unknown names fail here, listing the known ones
    chosen = own_backbone or backbone
    label = f"{name}:{chosen}" if chosen else name
    kwargs = {**model_kwargs.get(name, {}), **model_kwargs.get(label, {})}
    return {"model": name, "backbone": chosen, "kwargs": kwargs, "label": label}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(achieved: dict[str, Any] | None, phase: str, batch: int | None = None) -> str:
    if achieved is None:
        return "-"
    gflop_s = achieved[f"{phase}_gflop_s"]
    fraction = achieved[f"{phase}_fraction_of_peak"]
    if batch is not None:
        gflop_s, fraction = gflop_s[str(batch)], fraction[str(batch)]
    return f"{gflop_s:.0f} ({100 * fraction:.0f}%)"


def add_achieved(row: dict[str, Any], peak: dict[str, float], precision: str) -> None:
    """Add achieved GFLOP/s (GFLOPs x images/s) and its fraction of the matmul peak to `row`.

    Training counts 3x the forward FLOPs (forward, and backward for inputs and weights).
    """
    if "error" in row or "gflops" not in row:
        return
    top = peak["bfloat16" if precision == "mixed_bfloat16" else "float32"]
    infer = {b: row["gflops"] * v["images_per_s"] for b, v in row["inference"].items()}
    achieved: dict[str, Any] = {
        "peak_gflop_s": top,
        "inference_gflop_s": infer,
        "inference_fraction_of_peak": {b: v / top for b, v in infer.items()},
    }
    if "training" in row:
        train = 3 * row["gflops_train_size"] * row["training"]["images_per_s"]
        achieved.update(training_gflop_s=train, training_fraction_of_peak=train / top)
    row["achieved"] = achieved


def markdown_table(payload: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per model) with a line on the machine."""
    s, machine, peak = payload["settings"], payload["machine"], payload["results"]["matmul_peak"]
    sizes, train = s["batch_sizes"], s["train_batch_size"]
    header = ["model", "params (M)", f"GFLOPs @{s['size']}"]
    header += [f"infer img/s bs{b}" for b in sizes] + [f"infer GFLOP/s bs{sizes[-1]} (% peak)"]
    if train:
        header += [f"train img/s bs{train} @{s['train_size']}", "train GFLOP/s ~3x fwd (% peak)"]
    header += ["peak RSS MiB infer"] + (["peak RSS MiB train (after infer)"] if train else [])
    header += [f"TFLite ms @{s['size']}"] if s["tflite"] else []
    dates = {row.get("date", payload["date"])[:10] for row in payload["results"]["models"]}
    header += ["measured"] if len(dates) > 1 else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in payload["results"]["models"]:
        if "error" in row:
            lines.append(f"| {row['label']} | error: see JSON |" + " |" * (len(header) - 2))
            continue
        achieved = row.get("achieved")
        gflops = row.get("gflops")
        digits = 1 if gflops and gflops >= 10 else 2
        cells = [row["label"], _fmt(row["params"] / 1e6), _fmt(gflops, digits)]
        cells += [_fmt(row["inference"][str(b)]["images_per_s"]) for b in sizes]
        cells += [_percent(achieved, "inference", sizes[-1])]
        if train:
            cells += [_fmt(row["training"]["images_per_s"]), _percent(achieved, "training")]
        cells += [f"{row['peak_rss_inference_mib']:.0f}"]
        cells += [f"{row['peak_rss_training_mib']:.0f}"] if train else []
        if s["tflite"]:
            cells += [_fmt(row["tflite"]["latency_ms"], 1)]
        if len(dates) > 1:
            cells += [row.get("date", payload["date"])[:10]]
        lines.append("| " + " | ".join(cells) + " |")
    versions = payload["versions"]
    runs = {
        row.get("date", payload["date"])[:10]: row.get("matmul_peak", peak)
        for row in payload["results"]["models"]
    }
    peaks = "; ".join(
        f"matmul peak {p['float32']:.0f} GFLOP/s float32, {p['bfloat16']:.0f} bfloat16"
        + (f" (rows of {date})" if len(runs) > 1 else "")
        for date, p in sorted(runs.items())
    )
    lines.append("")
    lines.append(
        f"{machine.get('cpu_model')} ({machine.get('cpu_count')} cores), TensorFlow "
        f"{versions.get('tensorflow')}, Keras {versions.get('keras')}; {s['precision']}, "
        f"jit_compile={s['jit']}, {s['num_classes']} classes, median of {s['repeats']}; "
        f"{peaks}; % peak is of each row's own run; TFLite {s['tflite_threads']} threads."
    )
    return "\n".join(lines) + "\n"


def update_readme(path: str | os.PathLike, table: str, marker: str = "models") -> None:
    """Replace the text between the `<!-- benchmark:MARKER begin/end -->` lines of `path`."""
    begin, end = f"<!-- benchmark:{marker} begin -->", f"<!-- benchmark:{marker} end -->"
    text = Path(path).read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{path} has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    Path(path).write_text(f"{head}{begin}\n{table}{end}{tail}")


def _earlier_rows(path: str, settings: dict[str, Any], measuring: set[str]) -> list[dict]:
    """Rows of the report at `path` for models not in `measuring`, each with its date."""
    if not Path(path).exists():
        return []
    earlier = json.loads(Path(path).read_text())
    different = {
        k: (earlier["settings"].get(k), v)
        for k, v in settings.items()
        if k not in ("isolate",) and earlier["settings"].get(k) != v
    }
    if different:
        raise SystemExit(
            f"--merge: {path} was measured with other settings "
            + ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in different.items())
        )
    rows = [r for r in earlier["results"]["models"] if r["label"] not in measuring]
    peak = earlier["results"]["matmul_peak"]
    return [
        {**r, "date": r.get("date", earlier["date"]), "matmul_peak": r.get("matmul_peak", peak)}
        for r in rows
    ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark models", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--models",
        nargs="+",
        help="`name` or `name:backbone` (default: every registered model, default backbone)",
    )
    p.add_argument("--backbone", help="backbone for the models listed without `:backbone`")
    p.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help='JSON {"name" or "name:backbone": {option: value}}, e.g. '
        '\'{"deeplabv3plus": {"output_stride": 8}}\'',
    )
    p.add_argument("--small", action="store_true", help="use each model's small_config")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--size", type=int, default=512, help="inference/TFLite/GFLOPs input size")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--train-batch-size", type=int, default=4, help="0 skips training")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; the median is kept")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--tflite", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tflite-threads", type=int, default=2)
    p.add_argument(
        "--flops", action=argparse.BooleanOptionalAction, default=True, help="count GFLOPs"
    )
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--output", default="bench_results/models.json", help="JSON report path")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of --output's earlier report for models not measured now (same "
        "settings required); each row keeps its date",
    )
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--readme", help="replace the table between the benchmark markers of this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    for option in ("num_classes", "size", "train_size", "repeats", "matmul_size"):
        if getattr(args, option) < 1:
            raise SystemExit(
                f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}"
            )
    if min(args.batch_sizes) < 1 or args.train_batch_size < 0:
        raise SystemExit(
            f"batch sizes must be >= 1, got --batch-sizes {args.batch_sizes} "
            f"--train-batch-size {args.train_batch_size}"
        )
    import keras_seg

    names = args.models or keras_seg.list_models()
    entries = [parse_entry(n, args.backbone, args.model_kwargs) for n in names]
    settings = {
        key: getattr(args, key)
        for key in (
            "num_classes", "size", "batch_sizes", "train_size", "train_batch_size", "repeats",
            "precision", "jit", "tflite", "tflite_threads", "matmul_size", "small", "isolate",
            "flops",
        )
    }  # fmt: skip
    kept = _earlier_rows(args.output, settings, {e["label"] for e in entries}) if args.merge else []
    rows = []
    for entry in entries:
        print(f"benchmarking {entry['label']} ...", file=sys.stderr, flush=True)
        row = _run_isolated(entry, settings) if args.isolate else measure_entry(entry, settings)
        print(json.dumps({k: v for k, v in row.items() if k != "kwargs"}), file=sys.stderr)
        row["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows.append(row)
    peak = matmul_peak(args.matmul_size, max(args.repeats, 3))
    for row in rows:
        add_achieved(row, peak, args.precision)
        row["matmul_peak"] = peak
    results = {"matmul_peak": peak, "models": kept + rows}
    payload = write_report(args.output, "models", settings, results)
    table = markdown_table(payload)
    print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    if args.readme:
        update_readme(args.readme, table)
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
