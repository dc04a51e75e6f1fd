"""`keras-seg demo`: train a small U-Net on the built-in synthetic shapes, on CPU, no download.

Trains with the same `train` as `keras-seg train` (config `DEMO`, identical to
`zoo_configs/demo_synthetic.yaml`), evaluates the held-out split, exports the model as
`.keras`, SavedModel and TFLite, and writes overlay pictures and `metrics.json`:

    OUTPUT/run/            the training run (config.yaml, best.keras, logs/, ...)
    OUTPUT/model.keras     OUTPUT/saved_model/     OUTPUT/model.tflite   OUTPUT/config.yaml
    OUTPUT/overlays/NN.png image | ground truth | prediction
    OUTPUT/metrics.json    held-out mIoU, per-class IoU, export parity, timings
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_seg import runs
from keras_seg.config import Config
from keras_seg.config import config_from_dict
from keras_seg.data.info import IGNORE_LABEL
from keras_seg.inference import Predictor
from keras_seg.inference import evaluate
from keras_seg.inference import overlay
from keras_seg.inference import write_rgb
from keras_seg.metrics import format_table
from keras_seg.training.trainer import train

DEMO: dict[str, Any] = {
    "name": "demo_synthetic",
    "description": "Small U-Net on the built-in synthetic shapes; CPU, a few minutes.",
    "reference": "Ronneberger et al., U-Net, MICCAI 2015 (small variant)",
    "model": {
        "name": "unet",
        "num_classes": 5,
        "options": {"base_filters": 16, "depth": 3},
        "expected_params": 484_213,
    },
    "data": {
        "name": "synthetic",
        "train_split": "train",
        "val_split": "val",
        "options": {"num_train": 512, "num_val": 128, "size": 96, "seed": 0},
        "crop_size": [96, 96],
        "augment": {"scale_range": [0.75, 1.25], "jitter": False},
    },
    "train": {
        "batch_size": 8,
        "steps": 400,
        "steps_per_epoch": 50,
        "optimizer": "adamw",
        "learning_rate": 3.0e-3,
        "schedule": "poly",
        "poly_power": 0.9,
        "weight_decay": 1.0e-4,
        "precision": "float32",
        "distribution": "one_device",
        "checkpoint_every": 50,
        "seed": 0,
    },
    "eval": {"mode": "whole"},
    "export": {"formats": ["keras", "saved_model", "tflite"], "input_size": [96, 96]},
}
NUM_OVERLAYS = 8


def demo_config(overrides: dict[str, Any] | None = None) -> Config:
    """The demo's `Config`, with `{"train.steps": 20, ...}` style overrides."""
    values = json.loads(json.dumps(DEMO))
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        values[section][key] = value
    return config_from_dict(values, "keras_seg.demo.DEMO")


def _export(model: keras.Model, cfg: Config, classes, output: Path, images, labels) -> dict:
    """Write SavedModel and TFLite with `keras_seg.export`, each gated by its parity check."""
    import keras_seg.export
    from keras_seg.export.verify import recorded_report

    exports: dict[str, Any] = {"keras": str(output / "model.keras")}
    common = {
        "class_names": list(classes.class_names),
        "palette": classes.palette,
        "check_images": images,
        "check_labels": labels,
    }
    if "saved_model" in cfg.export.formats:
        path = keras_seg.export.saved_model(model, output / "saved_model", **common)
        exports["saved_model"] = dataclasses.asdict(recorded_report(path))
    if "tflite" in cfg.export.formats:
        quantize = cfg.export.tflite_quantize
        path = keras_seg.export.tflite(
            model,
            output / "model.tflite",
            quantize,
            images if quantize == "int8" else None,
            input_size=tuple(cfg.export.input_size or cfg.data.crop_size),
            **common,
        )
        exports["tflite"] = dataclasses.asdict(recorded_report(path))
    return exports


def _write_overlays(predictor: Predictor, images, masks, palette, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        pred = predictor.predict(image)
        truth = overlay(image, np.where(mask == IGNORE_LABEL, 0, mask), palette)
        row = np.concatenate([image, truth, overlay(image, pred, palette)], axis=1)
        write_rgb(folder / f"{i:02d}.png", row)


def run_demo(
    output: str | Path = "demo_output",
    overrides: dict[str, Any] | None = None,
    verbose: int | str | None = None,
) -> dict[str, Any]:
    """Train, evaluate, export and draw; return (and write) the metrics.

    Args:
        output: output folder (replaced parts: run/, exports, overlays/).
        overrides: demo config changes, e.g. `{"train.steps": 20}` for a smoke test.
        verbose: Keras `fit` verbosity (default: a progress bar on a terminal, else a line
            per epoch).
    """
    t0 = time.perf_counter()
    cfg = demo_config(overrides)
    output = Path(output)
    run_dir = output / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo always starts from scratch
    trained = train(cfg, run_dir, final_eval=False, verbose=verbose)
    run = runs.load_run(run_dir)
    predictor = Predictor(run.model, run.eval_config)
    held_out = runs.load_split(cfg, cfg.data.val_split)
    result = evaluate(predictor, held_out, run.classes)
    print(format_table(result, title="held-out synthetic images"))

    shutil.copy(run_dir / "best.keras", output / "model.keras")
    shutil.copy(run_dir / "config.yaml", output / "config.yaml")  # the exports' resolved config
    images, masks = next(iter(held_out.batch(NUM_OVERLAYS).as_numpy_iterator()))
    exports = _export(run.model, cfg, run.classes, output, images, masks)
    _write_overlays(predictor, images, masks, run.classes.palette, output / "overlays")
    metrics = {
        "heldout_miou": result["miou"],
        "heldout_pixel_accuracy": result["pixel_accuracy"],
        "per_class": result["per_class"],
        "train_seconds": trained["train_seconds"],
        "total_seconds": time.perf_counter() - t0,
        "steps": cfg.train.steps,
        "params": trained["params"],
        "history": trained["history"],
        "exports": exports,
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        f"held-out mIoU {result['miou']:.4f}; training {trained['train_seconds']:.0f} s, "
        f"total {metrics['total_seconds']:.0f} s; results in {output}/"
    )
    return metrics
