"""`keras-seg benchmark pipeline`: does the input pipeline keep up with training, per config?

For each zoo config (or `--configs`): files of that data set's usual size and format are
generated in the `folder` layout (`--images` of them; JPEG or PNG images, PNG masks with
~5% ignore pixels; the decoders are the ones the official readers use), then:

- pipeline images/s: the config's own training pipeline (`keras_seg.training.datasets`:
  its crop size, batch size and augmentation, decoding included) on all cores, over
  `--batches` batches after a warm-up batch;
- training images/s: the config's model (no pretrained weights), compiled as `keras-seg
  train` compiles it, `train_on_batch` on one pipeline batch of `--train-batch-size` at the
  config's crop, the median of `--repeats` steps after a warm-up step;
- the pipeline's share: the time the pipeline needs per trained image as a fraction of the
  training step (both use the same cores, so this is what the pipeline costs training
  when nothing overlaps).

The command exits 1 (after writing its JSON) when a config's pipeline delivers fewer
images/s than its model trains, i.e. when the pipeline would hold training back.

Example:
    keras-seg benchmark pipeline --output bench_results/pipeline.json \\
        --markdown bench_results/pipeline.md
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_seg.benchmarks.common import time_median
from keras_seg.benchmarks.common import write_report

ZOO = Path(__file__).resolve().parents[2] / "zoo_configs"
# Usual image size (width, height), image format and grey/colour of each data set's files.
NATIVE: dict[str, tuple[int, int, str, bool]] = {
    "voc2012": (500, 375, ".jpg", False),
    "voc2012_aug": (500, 375, ".jpg", False),
    "cityscapes": (2048, 1024, ".png", False),
    "camvid": (480, 360, ".png", False),
    "ade20k": (683, 512, ".jpg", False),
    "folder": (512, 512, ".png", True),  # the ISBI 2012 slices
    "synthetic": (96, 96, ".png", False),
}


def write_files(folder: Path, data_name: str, count: int, num_classes: int) -> None:
    """`count` image/mask pairs of the data set's usual size and format in `folder`."""
    import cv2
    import numpy as np

    width, height, suffix, grey = NATIVE[data_name]
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        # Smooth content (not white noise, which no codec compresses like a photo).
        small = rng.integers(0, 256, (height // 16, width // 16, 1 if grey else 3), np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / "images" / f"{i}{suffix}"), image)
        labels = rng.integers(0, num_classes, (height // 32, width // 32), np.uint8)
        mask = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        mask[rng.random(mask.shape) < 0.05] = 255
        cv2.imwrite(str(folder / "masks" / f"{i}.png"), mask)


def measure_config(path: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Pipeline and training images/s of one config (run in its own process)."""
    import keras
    import tensorflow as tf

    import keras_seg.data
    from keras_seg import runs
    from keras_seg.config import load_config
    from keras_seg.training import datasets
    from keras_seg.training.distribution import set_precision
    from keras_seg.training.trainer import compile_for_training

    cfg = load_config(path)
    policy = set_precision(cfg.train.precision)
    num_classes = cfg.model.num_classes or 2
    row: dict[str, Any] = {
        "config": cfg.name,
        "model": cfg.model.name,
        "backbone": cfg.model.backbone,
        "data": cfg.data.name,
        "native_size": list(NATIVE[cfg.data.name][:2]),
        "crop_size": list(cfg.data.crop_size),
        "batch_size": cfg.train.batch_size,
        "precision": policy,
    }
    with tempfile.TemporaryDirectory() as tmp:
        write_files(Path(tmp), cfg.data.name, settings["images"], num_classes)
        files = keras_seg.data.load("folder", None, tmp, num_classes=num_classes)
        files = files.cache()  # read once; decoding stays in the pipeline below
        ds = datasets.batches(cfg, files, True, num_classes)
        batches = iter(ds)
        next(batches)  # warm-up: graph tracing, thread pools, shuffle buffer
        start = time.perf_counter()
        for _ in range(settings["batches"]):
            next(batches)
        seconds = time.perf_counter() - start
    row["pipeline_images_per_s"] = settings["batches"] * cfg.train.batch_size / seconds

    cfg = copy.deepcopy(cfg)
    cfg.model.weights = None  # no downloads; speed does not depend on the weights
    keras.utils.set_random_seed(0)
    model = runs.build_model(cfg, num_classes)
    info = runs.ClassInfo.generic(num_classes, cfg.data.name)
    _, targets = compile_for_training(cfg, model, info, None)
    x, y = next(batches)
    batch = min(settings["train_batch_size"], int(x.shape[0]))
    x, y = tf.constant(x[:batch]), tf.constant(y[:batch])
    if targets is not None:
        x, y = targets(x, y)
    timing = time_median(lambda: model.train_on_batch(x, y), settings["repeats"], warmup=1)
    row["train_batch_size"] = batch
    row["train_images_per_s"] = batch / timing["median_s"]
    row["train_step_s"] = timing
    row["pipeline_share"] = row["train_images_per_s"] / row["pipeline_images_per_s"]
    row["keeps_up"] = row["pipeline_images_per_s"] >= row["train_images_per_s"]
    return row


def _run_isolated(path: str, settings: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp, "job.json")
        job.write_text(json.dumps({"config": path, "settings": settings}))
        command = [sys.executable, "-m", "keras_seg.benchmarks.pipeline", "--worker", str(job)]
        done = subprocess.run(command, capture_output=True, text=True)
        out = job.with_name("row.json")
        if done.returncode != 0 or not out.exists():
            last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
            return {"config": Path(path).stem, "error": f"worker exited {done.returncode}: {last}"}
        return json.loads(out.read_text())


def markdown_table(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    lines = [
        "| config | model | crop | batch | pipeline img/s | train img/s (batch) | "
        "pipeline share of a step | keeps up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["results"]:
        if "error" in row:
            lines.append(f"| {row['config']} | error: {row['error'][:80]} |||||||")
            continue
        model = row["model"] + (f":{row['backbone']}" if row["backbone"] else "")
        lines.append(
            f"| {row['config']} | {model} | {row['crop_size'][0]}x{row['crop_size'][1]} | "
            f"{row['batch_size']} | {row['pipeline_images_per_s']:.1f} | "
            f"{row['train_images_per_s']:.3f} ({row['train_batch_size']}) | "
            f"{100 * row['pipeline_share']:.2f}% | {'yes' if row['keeps_up'] else 'NO'} |"
        )
    m = payload["machine"]
    lines += [
        "",
        f"{m.get('cpu_model')} ({m.get('cpu_count')} cores), TensorFlow "
        f"{payload['versions'].get('tensorflow')}; {payload['date'][:10]}; generated files of "
        f"each data set's usual size and format, {s['images']} images, {s['batches']} "
        f"pipeline batches, training median of {s['repeats']} steps.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark pipeline", description=__doc__.splitlines()[0]
    )
    p.add_argument("--configs", nargs="+", help="config YAMLs (default: every zoo config)")
    p.add_argument("--images", type=int, default=16, help="generated files per config")
    p.add_argument("--batches", type=int, default=4, help="timed pipeline batches")
    p.add_argument("--train-batch-size", type=int, default=1, help="images per timed step")
    p.add_argument("--repeats", type=int, default=2, help="timed training steps")
    p.add_argument("--output", default="bench_results/pipeline.json")
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        job = json.loads(Path(args.worker).read_text())
        row = measure_config(job["config"], job["settings"])
        Path(args.worker).with_name("row.json").write_text(json.dumps(row))
        return 0
    for option in ("images", "batches", "train_batch_size", "repeats"):
        if getattr(args, option) < 1:
            raise SystemExit(f"--{option.replace('_', '-')} must be >= 1")
    configs = args.configs or sorted(str(p) for p in ZOO.glob("*.yaml"))
    settings = {k: getattr(args, k) for k in ("images", "batches", "train_batch_size", "repeats")}
    rows = []
    for path in configs:
        print(f"measuring {path} ...", file=sys.stderr, flush=True)
        row = _run_isolated(path, settings)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    payload = write_report(args.output, "pipeline", {**settings, "configs": configs}, rows)
    table = markdown_table(payload)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    behind = [r["config"] for r in rows if not r.get("keeps_up", False)]
    if behind:
        print(
            f"keras-seg benchmark pipeline: the pipeline is slower than training (or failed) "
            f"for {', '.join(behind)}; see {args.output}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
