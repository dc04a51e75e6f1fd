"""`keras-seg benchmark precision`: does bfloat16 train as well as float32, and how much faster?

Trains one config twice through `keras-seg train` (each run in its own process, the same
seed, data and steps), once per `--precisions` entry (default float32 and mixed_bfloat16),
and compares the full-resolution validation mIoU of `best.keras` and the training time.
`train.precision: auto` picks mixed_bfloat16 on CPUs with native bfloat16 because this check
held (see `keras_seg.training.distribution.auto_precision`); the command
exits 1 (after writing its JSON) when a reduced precision loses more than `--max-loss` mIoU
points against the first precision, so the promise is checked where its figure is produced.

Example (the README's CPU-sized ISBI 2012 U-Net):
    keras-seg benchmark precision --config zoo_configs/unet_isbi2012.yaml --data-dir DATA \\
        --set model.options.base_filters=16 --set "data.crop_size=[256, 256]" \\
        --set train.batch_size=4 --set train.steps=600 --set train.steps_per_epoch=50 \\
        --output bench_results/precision.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_seg.benchmarks.common import write_report

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
MAX_LOSS_POINTS = 0.5


def _train(config: str, data_dir: str | None, overrides: list[str], precision: str, run: Path):
    """One `keras-seg train` run in a new process; its metrics.json plus the wall time."""
    args = [sys.executable, "-m", "keras_seg", "train", "--config", config]
    args += ["--model-dir", str(run), "--set", f"train.precision={precision}"]
    if data_dir:
        args += ["--data-dir", data_dir]
    for override in overrides:
        args += ["--set", override]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"keras-seg benchmark precision: the {precision} run failed: {last}")
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "precision": metrics["precision"],
        "miou": metrics["final_eval"]["miou"],
        "pixel_accuracy": metrics["final_eval"].get("pixel_accuracy"),
        "per_class_iou": metrics["final_eval"].get("per_class"),
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall,
        "epoch_seconds": metrics["history"].get("epoch_seconds"),
    }


def compare(runs: list[dict[str, Any]], max_loss: float) -> dict[str, Any]:
    """Each run against the first: mIoU difference in points, speed-up, and the verdict."""
    base = runs[0]
    rows = []
    for run in runs[1:]:
        loss = 100 * (base["miou"] - run["miou"])
        rows.append(
            {
                "precision": run["precision"],
                "miou_loss_points": loss,
                "speedup": base["train_seconds"] / run["train_seconds"],
                "holds": loss <= max_loss,
            }
        )
    return {"baseline": base["precision"], "max_loss_points": max_loss, "against": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark precision", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--data-dir", help="data set folder (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=["float32", "mixed_bfloat16"]
    )
    p.add_argument("--max-loss", type=float, default=MAX_LOSS_POINTS, help="mIoU points")
    p.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--output", default="bench_results/precision.json")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="keras_seg_precision_") as tmp:
        workdir = Path(args.workdir or tmp)
        runs = []
        for precision in args.precisions:
            print(f"training with {precision} ...", flush=True)
            run = _train(args.config, args.data_dir, args.overrides, precision, workdir / precision)
            print(f"  mIoU {100 * run['miou']:.2f}, {run['train_seconds']:.0f} s of training")
            runs.append(run)
    verdict = compare(runs, args.max_loss)
    settings = {"config": args.config, "overrides": args.overrides, "precisions": args.precisions}
    write_report(args.output, "precision", settings, {"runs": runs, "comparison": verdict})
    failed = [row for row in verdict["against"] if not row["holds"]]
    for row in verdict["against"]:
        print(
            f"{row['precision']}: {row['miou_loss_points']:+.2f} mIoU points lost against "
            f"{verdict['baseline']}, {row['speedup']:.2f}x the training speed"
        )
    if failed:
        print(
            f"keras-seg benchmark precision: {failed[0]['precision']} loses "
            f"{failed[0]['miou_loss_points']:.2f} mIoU points (> {args.max_loss}); see {args.output}",
            file=sys.stderr,
        )
        return 1
    return 0
