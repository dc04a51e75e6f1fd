"""`keras-seg benchmark export`: what the exports cost and how fast they run on this machine.

Per model: Keras (`predict_on_batch`) and SavedModel (`serving_default`) throughput on a
batch, and for each TFLite quantization the conversion time, file size and single-image
latency with 1 and 2 interpreter threads (LiteRT, XNNPACK). Weights are random (speed does
not depend on them); int8 calibrates on synthetic images. Writes JSON with the machine,
the versions and medians.

Example (a smoke run; the defaults measure every model at 512x512):
    keras-seg benchmark export --models unet --small --size 64 --repeats 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_seg.benchmarks.common import time_median
from keras_seg.benchmarks.common import write_report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark export", description=__doc__.split("\n")[0]
    )
    p.add_argument("--models", nargs="*", help="registered names (default: all)")
    p.add_argument("--size", type=int, default=512, help="square input size (default 512)")
    p.add_argument(
        "--quantize",
        nargs="*",
        default=["none", "fp16", "dynamic", "int8"],
        choices=["none", "fp16", "dynamic", "int8"],
    )
    p.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    p.add_argument("--batch", type=int, default=4, help="batch for Keras/SavedModel throughput")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--calibration", type=int, default=8, help="int8 calibration images")
    p.add_argument("--small", action="store_true", help="registry small configs (smoke runs)")
    p.add_argument("--output", default="bench_results/export.json")
    p.add_argument("--workdir", help="keep the exported files here (default: a temp dir)")
    return p.parse_args(argv)


def _size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 3)


def _throughput(fn, batch: int, args) -> dict[str, float]:
    timing = time_median(fn, repeats=args.repeats, warmup=args.warmup)
    return {**timing, "batch": batch, "images_per_s": batch / timing["median_s"]}


def bench_model(name: str, args, workdir: Path) -> dict[str, Any]:
    """All measurements of one registered model."""
    import keras
    import tensorflow as tf

    import keras_seg
    from keras_seg import export
    from keras_seg.data import synthetic

    kwargs = keras_seg.get_spec(name).small_config if args.small else {}
    model = keras_seg.build(name, num_classes=args.num_classes, **kwargs)
    size = args.size
    count = max(args.batch, args.calibration)
    images = synthetic.make_dataset(count, size=max(size, 16), seed=0)[0][:, :size, :size]
    batch = images[: args.batch]
    result: dict[str, Any] = {"model": name, "params": model.count_params(), "size": size}

    floats = batch.astype("float32")
    result["keras"] = _throughput(lambda: model.predict_on_batch(floats), args.batch, args)

    from keras_seg.export.verify import recorded_report

    # Random weights: the parity gates check trained models (tests); here only speed counts,
    # so an untrained model's int8 disagreement is allowed (and stays in the JSON).
    gate = {"allow_mismatch": True}
    start = time.perf_counter()
    sm_path = export.saved_model(model, workdir / f"{name}_saved_model", **gate)
    serve = tf.saved_model.load(str(sm_path)).signatures["serving_default"]
    pixels = tf.constant(batch)
    result["saved_model"] = {
        "export_s": time.perf_counter() - start,
        "size_mib": _size_mib(sm_path),
        **_throughput(lambda: serve(images=pixels)["class_map"].numpy(), args.batch, args),
    }

    result["tflite"] = []
    for quantize in args.quantize:
        q = None if quantize == "none" else quantize
        entry: dict[str, Any] = {"quantize": quantize}
        try:
            start = time.perf_counter()
            path = export.tflite(
                model,
                workdir / f"{name}_{quantize}.tflite",
                q,
                images[: args.calibration] if q == "int8" else None,
                input_size=size,
                **gate,
            )
            entry.update(convert_s=time.perf_counter() - start, size_mib=_size_mib(path))
            entry["pixel_agreement"] = recorded_report(path).pixel_agreement
            entry["latency"] = {}
            for threads in args.threads:
                runner = export.TFLiteModel(path, num_threads=threads)
                timing = time_median(
                    lambda r=runner: r.predict(batch[:1]), repeats=args.repeats, warmup=args.warmup
                )
                entry["latency"][str(threads)] = {
                    **timing,
                    "images_per_s": 1.0 / timing["median_s"],
                    # None: timed with XNNPACK; else why it ran on the builtin kernels.
                    "xnnpack_error": runner.interpreter.xnnpack_error,
                }
        except Exception as e:  # keep measuring the others; the JSON says what failed
            entry["error"] = f"{type(e).__name__}: {e}"
        result["tflite"].append(entry)
    keras.backend.clear_session()
    return result


def _summary(result: dict[str, Any]) -> str:
    parts = [
        f"{result['model']}: keras {result['keras']['images_per_s']:.1f} img/s",
        f"saved_model {result['saved_model']['images_per_s']:.1f} img/s",
    ]
    for entry in result["tflite"]:
        if "error" in entry:
            parts.append(f"tflite[{entry['quantize']}] failed")
            continue
        ms = "/".join(f"{1e3 * v['median_s']:.1f}" for v in entry["latency"].values())
        parts.append(f"tflite[{entry['quantize']}] {entry['size_mib']:.2f} MiB {ms} ms")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the JSON report; returns the exit status."""
    args = parse_args(argv)
    import keras_seg

    names = args.models or keras_seg.list_models()
    for name in names:
        keras_seg.get_spec(name)  # unknown names fail before any work
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in names:
            result = bench_model(name, args, workdir)
            print(_summary(result), flush=True)
            results.append(result)
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "workdir")}
    settings["threads_note"] = "TFLite latency is single-image (batch 1), median seconds"
    write_report(args.output, "export", settings, results)
    print(f"Wrote {args.output}")
    return 0
