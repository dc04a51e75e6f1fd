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

import cv2
import keras
import numpy as np

from keras_seg.config import Config
from keras_seg.config import config_from_dict
from keras_seg.metrics import format_table

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
    return config_from_dict(values, "keras_seg.training.demo.DEMO")


def _export(model: keras.Model, cfg: Config, info, output: Path, images, labels) -> dict:
    """Write SavedModel and TFLite with `keras_seg.export`; check each against the model."""
    import keras_seg.export

    exports: dict[str, Any] = {"keras": str(output / "model.keras")}
    size = tuple(cfg.export.input_size or cfg.data.crop_size)
    meta = {"class_names": list(info.class_names), "palette": info.palette}
    if "saved_model" in cfg.export.formats:
        path = keras_seg.export.saved_model(model, output / "saved_model", **meta)
        exports["saved_model"] = dataclasses.asdict(
            keras_seg.export.verify(model, path, images, labels)
        )
    if "tflite" in cfg.export.formats:
        path = keras_seg.export.tflite(
            model,
            output / "model.tflite",
            cfg.export.tflite_quantize,
            images,
            input_size=size,
            **meta,
        )
        exports["tflite"] = dataclasses.asdict(keras_seg.export.verify(model, path, images, labels))
    return exports


def _write_overlays(model, images, masks, palette, folder: Path) -> None:
    from keras_seg.training.evaluation import _Forward
    from keras_seg.training.evaluation import predict_scores
    from keras_seg.training.prediction import overlay

    folder.mkdir(parents=True, exist_ok=True)
    forward = _Forward(model)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        pred = predict_scores(forward, image).argmax(-1)
        truth = overlay(image, np.where(mask == 255, 0, mask), palette)
        row = np.concatenate([image, truth, overlay(image, pred, palette)], axis=1)
        cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))


def run_demo(
    output: str | Path = "demo_output",
    overrides: dict[str, Any] | None = None,
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Train, evaluate, export and draw; return (and write) the metrics.

    Args:
        output: output folder (replaced parts: run/, exports, overlays/).
        overrides: demo config changes, e.g. `{"train.steps": 20}` for a smoke test.
        verbose: Keras progress-bar verbosity.
    """
    from keras_seg.training import datasets
    from keras_seg.training.evaluation import evaluate_model
    from keras_seg.training.trainer import train

    t0 = time.perf_counter()
    cfg = demo_config(overrides)
    output = Path(output)
    run_dir = output / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo always starts from scratch
    trained = train(cfg, run_dir, final_eval=False, verbose=verbose)
    model = keras.saving.load_model(run_dir / "best.keras", compile=False)
    info = datasets.class_info(cfg)
    held_out = datasets.load_split(cfg, cfg.data.val_split)
    result = evaluate_model(model, cfg, held_out, info)
    print(format_table(result, title="held-out synthetic images"))

    shutil.copy(run_dir / "best.keras", output / "model.keras")
    shutil.copy(run_dir / "config.yaml", output / "config.yaml")  # the exports' resolved config
    images, masks = next(iter(held_out.batch(NUM_OVERLAYS).as_numpy_iterator()))
    exports = _export(model, cfg, info, output, images, masks)
    _write_overlays(model, images, masks, info.palette, output / "overlays")
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
