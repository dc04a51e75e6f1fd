"""`keras-seg benchmark tflite_compare`: TFLite latency of several models, interleaved in one run.

Each keras_seg model (`name` or `name:backbone`, options from `--model-kwargs`) is exported
with `keras_seg.export.tflite` (the path users call) for every `--quantize`, and optionally
keras-hub's SegFormer-B0 through keras-hub's own `model.export(format="litert")`, run in
another interpreter that has keras-hub (`--kerashub-python`). Every file then runs in one
LiteRT harness (`tflite_harness.TFLiteFile`, XNNPACK) at every thread count, round-robin in
one loop, so a slow phase of a shared machine hits all of them alike. Weights are random
(speed does not depend on them); int8 calibrates on synthetic images. Also records
parameters and GFLOPs (`keras_seg.flops.count_flops`) of the keras_seg models.

Example (a smoke run):
    keras-seg benchmark tflite_compare --models segformer --small --size 64 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_seg.benchmarks.common import write_report

_KERASHUB_SCRIPT = Path(__file__).with_name("kerashub_segformer.py")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark tflite_compare", description=__doc__.split("\n")[0]
    )
    p.add_argument("--models", nargs="+", required=True, help="`name` or `name:backbone`")
    p.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help='JSON {"name" or "name:backbone": {option: value}}',
    )
    p.add_argument("--small", action="store_true", help="registry small configs (smoke runs)")
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--size", type=int, default=512, help="square input size (default 512)")
    p.add_argument(
        "--quantize",
        nargs="+",
        default=["none", "int8"],
        choices=["none", "fp16", "dynamic", "int8"],
    )
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=10, help="timed rounds over all files")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--calibration", type=int, default=4, help="int8 calibration images")
    p.add_argument(
        "--kerashub-python",
        help="a Python with keras-hub: adds keras-hub's SegFormer-B0 (its own export path)",
    )
    p.add_argument("--output", default="bench_results/tflite_compare.json")
    p.add_argument("--markdown", help="also write the latency table here")
    p.add_argument("--workdir", help="keep the exported files here (default: a temp dir)")
    return p.parse_args(argv)


def export_keras_seg(entry: dict, args, images, workdir: Path) -> list[dict[str, Any]]:
    """Build one keras_seg model, count its parameters and GFLOPs, export each quantization."""
    import keras

    import keras_seg
    from keras_seg import export
    from keras_seg.export.verify import recorded_report
    from keras_seg.flops import count_flops

    kwargs = dict(entry["kwargs"])
    if args.small:
        kwargs = {**keras_seg.get_spec(entry["model"]).small_config, **kwargs}
    backbone = entry["backbone"] or kwargs.pop("backbone", None)
    if entry["backbone"] and kwargs.pop("backbone", entry["backbone"]) != entry["backbone"]:
        kwargs.pop("backbone_kwargs", None)  # the small config's backbone options are its own
    model = keras_seg.build(
        entry["model"], num_classes=args.num_classes, backbone=backbone, **kwargs
    )
    info = {
        "params": model.count_params(),
        "gflops": count_flops(model, args.size, args.size) / 1e9,
        "kwargs": kwargs,
    }
    rows = []
    for quantize in args.quantize:
        q = None if quantize == "none" else quantize
        row: dict[str, Any] = {"label": entry["label"], "route": "keras_seg", **info}
        row["quantize"] = quantize
        name = entry["label"].replace(":", "_") + f"_{quantize}.tflite"
        try:
            start = time.perf_counter()
            # Random weights: only speed counts here, so an int8 disagreement is allowed
            # (the agreement stays in the JSON); trained models meet the gates in the tests.
            path = export.tflite(
                model,
                workdir / name,
                q,
                images if q == "int8" else None,
                input_size=args.size,
                allow_mismatch=True,
            )
            row["convert_s"] = time.perf_counter() - start
            row["file"] = str(path)
            row["pixel_agreement_random_weights"] = recorded_report(path).pixel_agreement
        except Exception as e:  # keep measuring the others; the JSON says what failed
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
        rows.append(row)
    keras.backend.clear_session()
    return rows


def export_keras_hub(args, images, workdir: Path) -> list[dict[str, Any]]:
    """keras-hub's SegFormer-B0 through its `model.export(format="litert")`, in its own Python."""
    import numpy as np

    calibration = workdir / "calibration.npy"
    np.save(calibration, images)
    rows = []
    for quantize in args.quantize:
        if quantize not in ("none", "int8"):
            continue
        path = workdir / f"keras_hub_segformer_b0_{quantize}.tflite"
        command = [args.kerashub_python, str(_KERASHUB_SCRIPT), "--output", str(path)]
        command += ["--size", str(args.size), "--num-classes", str(args.num_classes)]
        if quantize == "int8":
            command += ["--calibration", str(calibration)]
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if lines:
            row = json.loads(lines[-1])
        else:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"succeeded": False, "error": f"exit {done.returncode}: {tail[:300]}"}
        row.update(label="keras_hub SegFormer-B0", route="keras_hub", quantize=quantize)
        if not row.pop("succeeded", False):
            row.setdefault("error", "failed")
            row.pop("file", None)
        rows.append(row)
    return rows


def measure(rows: list[dict[str, Any]], args, image) -> None:
    """Latency of every exported file at every thread count, interleaved round-robin."""
    from keras_seg.benchmarks.tflite_harness import TFLiteFile
    from keras_seg.benchmarks.tflite_harness import interleaved

    runs, slots = [], []
    for row in rows:
        if "file" not in row:
            continue
        row["size_mib"] = round(Path(row["file"]).stat().st_size / 2**20, 3)
        normalised = row["route"] != "keras_seg"
        try:
            for threads in args.threads:
                file = TFLiteFile(row["file"], threads, normalised, args.num_classes)
                row["input"] = file.describe_input()
                runs.append((file, file.prepare(image[None])))
                slots.append((row, threads))
        except Exception as e:  # converts but does not run here: say so
            row["run_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    times = interleaved(runs, args.repeats, args.warmup)
    for (row, threads), values in zip(slots, times, strict=True):
        row.setdefault("latency_ms", {})[str(threads)] = statistics.median(values)
        row.setdefault("latency_spread_ms", {})[str(threads)] = {
            "min": min(values),
            "max": max(values),
            "repeats": len(values),
        }


def markdown(rows: list[dict[str, Any]], args) -> str:
    """The latency table, one row per file."""
    threads = " | ".join(f"{t} thread{'s' * (t > 1)} ms" for t in args.threads)
    lines = [
        f"| model | route | quantize | params (M) | GFLOPs @{args.size} | MiB | {threads} |",
        "|---|---|---|---|---|---|" + "---|" * len(args.threads),
    ]
    for row in rows:
        params = f"{row['params'] / 1e6:.2f}" if "params" in row else "-"
        gflops = f"{row['gflops']:.1f}" if "gflops" in row else "-"
        size = f"{row['size_mib']:.1f}" if "size_mib" in row else "-"
        if "latency_ms" in row:
            ms = " | ".join(f"{row['latency_ms'][str(t)]:.0f}" for t in args.threads)
        else:
            why = row.get("error") or row.get("run_error") or "-"
            ms = " | ".join([f"failed: {why}"] + ["-"] * (len(args.threads) - 1))
        lines.append(
            f"| {row['label']} | {row['route']} | {row['quantize']} | {params} | {gflops} "
            f"| {size} | {ms} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Export, measure interleaved and write the JSON (and Markdown); returns the exit status."""
    args = parse_args(argv)
    from keras_seg.benchmarks.models import parse_entry
    from keras_seg.data import synthetic

    entries = [parse_entry(text, None, args.model_kwargs) for text in args.models]
    images = synthetic.make_dataset(max(args.calibration, 1), size=args.size, seed=0)[0]
    images = images[:, : args.size, : args.size].astype("uint8")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            rows += export_keras_seg(entry, args, images[: args.calibration], workdir)
        if args.kerashub_python:
            rows += export_keras_hub(args, images[: args.calibration], workdir)
        for row in rows:
            if "error" in row:
                print(f"{row['label']} [{row['quantize']}] failed: {row['error']}", file=sys.stderr)
        measure(rows, args, images[0])
    table = markdown(rows, args)
    print(table, end="")
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "workdir")}
    settings["note"] = (
        "single-image (batch 1) latency, median ms; every (file, threads) once per round, "
        "the start rotating, so the contenders share the machine's slow and fast phases"
    )
    write_report(args.output, "tflite_compare", settings, rows)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(f"Wrote {args.output}")
    return 0
