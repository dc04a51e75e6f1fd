"""TFLite parity of every registered model: train its small config briefly, export, compare.

Each model (registry `small_config`, 5 classes) is trained with plain Keras (AdamW, batch 8,
sparse cross-entropy) on the synthetic shapes (`keras_seg.data.synthetic`) until its
predictions mean something (`RECIPES`: steps, learning rate, image size per model; Keras
mIoU at least `MIN_MIOU`), exported to TFLite in float32, fp16, dynamic-range and int8
(calibrated on training images) and checked with `keras_seg.export.verify` on held-out
images: the share of pixels whose class agrees with Keras, and the mIoU of both. A
quantization below its promised agreement, or a model that learned too little for the
check to mean anything, fails the run (exit status 1).

The images are crops of shapes drawn at `--zoom` times the size, so objects are large
enough for stride-32 models to resolve. Two training-only settings differ from the models'
defaults, neither of which exists in the exported graph: BatchNorm momentum is 0.9
(MobileNetV2's 0.999 would leave the moving statistics near their initial values after a
few hundred steps) and dropout is off (the small FCNs' 0.5 on 32 channels keeps fcn32s at
background-only for minutes).
`--flat` posterizes and saturates the images, so max-pool windows hold exact ties and
near-ties, the hard case for SegNet's index unpooling.

Example:
    python tools/check_quantization.py --json bench_results/quantization.json
    python tools/check_quantization.py --models segnet --flat --overrides '{"segnet": {"width": 16}}'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_seg  # noqa: E402
from keras_seg import export  # noqa: E402
from keras_seg.benchmarks.common import write_report  # noqa: E402
from keras_seg.data import synthetic  # noqa: E402

# The promise: minimum share of pixels whose class agrees with the Keras model.
THRESHOLDS = {"fp32": 0.999, "fp16": 0.99, "dynamic": 0.98, "int8": 0.95}
QUANTIZE = {"fp32": None, "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}
# Below this held-out mIoU the Keras model has not learned enough for agreement to mean much
# (predicting background everywhere scores about 0.16 and agrees with any export).
MIN_MIOU = 0.3
# Training per model, measured to reach MIN_MIOU within about a minute on 2 CPU cores.
DEFAULT_RECIPE = {"steps": 300, "lr": 3e-3, "size": 64}
RECIPES = {
    "deeplabv3": {"steps": 500, "lr": 1e-2},
    "deeplabv3plus": {"steps": 200, "lr": 1e-2},
    "fcn8s": {"steps": 400},
    "fcn16s": {"steps": 450},
    "fcn32s": {"steps": 600, "size": 128},
    "segnet": {"steps": 500, "lr": 1e-2},
    "unet": {"steps": 200, "lr": 1e-2},
}


def flat_images(images: np.ndarray) -> np.ndarray:
    """Contrast x3 (clipping to 0/255), then 4 grey levels per channel: flat, tied regions."""
    x = np.clip((images.astype(np.float32) - 128) * 3 + 128, 0, 255)
    return (np.floor(x / 64) * 64 + 32).astype(np.uint8)


def make_data(size: int, args) -> tuple:
    """Train and held-out synthetic shapes at `size`, zoomed (centre crops) and maybe flat."""
    drawn = size * args.zoom
    (x_train, y_train), (x_val, y_val) = synthetic.splits(
        args.train_images, args.val_images, drawn, args.seed
    )
    top = (drawn - size) // 2
    x_train, y_train, x_val, y_val = (
        a[:, top : top + size, top : top + size] for a in (x_train, y_train, x_val, y_val)
    )
    if args.flat:
        x_train, x_val = flat_images(x_train), flat_images(x_val)
    return (x_train, y_train), (x_val, y_val)


def recipe(name: str, args) -> dict:
    """Steps, learning rate and image size for `name`; command-line values win."""
    chosen = {**DEFAULT_RECIPE, **RECIPES.get(name, {})}
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in chosen.items()}


def sublayers(layer: keras.layers.Layer):
    """Every layer inside `layer`, nested models (backbones) included."""
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from sublayers(sub)


def train(name: str, data, plan: dict, args, overrides: dict) -> tuple[keras.Model, float]:
    """The registry's small config of `name`, trained per `plan`; returns it and seconds."""
    (x_train, y_train), _ = data
    keras.utils.set_random_seed(args.seed)
    kwargs = {**keras_seg.get_spec(name).small_config, **overrides}
    model = keras_seg.build(name, num_classes=len(synthetic.CLASS_NAMES), **kwargs)
    for layer in sublayers(model):  # training-only settings, see the module docstring
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
        elif isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    model.compile(
        keras.optimizers.AdamW(plan["lr"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
    )
    batches = (
        tf.data.Dataset.from_tensor_slices((x_train.astype(np.float32), y_train))
        .shuffle(len(x_train), seed=args.seed)
        .repeat()
        .batch(args.batch)
    )
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=plan["steps"], epochs=1, verbose=0)
    return model, time.perf_counter() - start


def check(name: str, args, overrides: dict) -> dict:
    """Agreement and mIoU of each TFLite quantization of a briefly trained `name`."""
    plan = recipe(name, args)
    data = make_data(plan["size"], args)
    (x_train, _), (x_val, y_val) = data
    model, seconds = train(name, data, plan, args, overrides)
    result = {
        "model": name,
        "config": {**keras_seg.get_spec(name).small_config, **overrides},
        "recipe": {**plan, "batch": args.batch, "zoom": args.zoom, "flat": args.flat},
        "train_seconds": round(seconds, 1),
        "exports": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.quantize:
            path = export.tflite(
                model,
                Path(tmp) / f"{name}_{label}.tflite",
                QUANTIZE[label],
                x_train[: args.calibration],
                input_size=plan["size"],
            )
            report = export.verify(model, path, x_val, y_val)
            result["exports"][label] = {
                "pixel_agreement": report.pixel_agreement,
                "keras_miou": report.keras_miou,
                "export_miou": report.export_miou,
                "threshold": THRESHOLDS[label],
                "ok": report.pixel_agreement >= THRESHOLDS[label] and report.keras_miou >= MIN_MIOU,
            }
            print(f"{name:14s} {label:8s} {report}", flush=True)
    return result


def table(results: list[dict], quantize: list[str]) -> str:
    """Markdown: agreement % per quantization, mIoU Keras -> int8 (or last), train seconds."""
    last = quantize[-1]
    head = "| model | " + " | ".join(quantize) + f" | mIoU Keras -> {last} | train s |"
    lines = [head, "|" + "---|" * (len(quantize) + 3)]
    for r in results:
        cells = [
            f"{100 * e['pixel_agreement']:.2f}" + ("" if e["ok"] else " FAIL")
            for e in (r["exports"][q] for q in quantize)
        ]
        e = r["exports"][last]
        miou = f"{100 * e['keras_miou']:.1f} -> {100 * e['export_miou']:.1f}"
        lines.append(
            f"| {r['model']} | " + " | ".join(cells) + f" | {miou} | {r['train_seconds']} |"
        )
    if any(not e["ok"] for r in results for e in r["exports"].values()):
        lines.append(f"FAIL: agreement below {THRESHOLDS} or Keras mIoU below {MIN_MIOU}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered one")
    parser.add_argument("--quantize", nargs="+", default=list(QUANTIZE), choices=list(QUANTIZE))
    parser.add_argument("--size", type=int, default=None, help="square size (default: RECIPES)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: RECIPES)")
    parser.add_argument("--lr", type=float, default=None, help="AdamW rate (default: RECIPES)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--zoom", type=int, default=2, help="shapes drawn this much larger")
    parser.add_argument("--train-images", type=int, default=512)
    parser.add_argument("--val-images", type=int, default=32, help="held-out images to verify on")
    parser.add_argument("--calibration", type=int, default=32, help="training images for int8")
    parser.add_argument("--flat", action="store_true", help="posterized, saturated images (ties)")
    parser.add_argument(
        "--overrides", type=json.loads, default={}, help='{"segnet": {"width": 16}}'
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    models = args.models or keras_seg.list_models()
    results = [check(name, args, args.overrides.get(name, {})) for name in models]
    print(table(results, args.quantize))
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        write_report(args.json, "quantization", settings, results)
    failed = [f"{r['model']}/{q}" for r in results for q, e in r["exports"].items() if not e["ok"]]
    if failed:
        print(f"below the promised agreement: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
