"""The `keras-seg` command.

Each sub-command is a small `_add_<name>(subparsers)` that declares its arguments and a
handler that calls into the library; the work itself lives in the library modules.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- models -------------------------------------------------------------------------------


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="table of registered models: backbone, parameters, GFLOPs")
    p.add_argument(
        "--size", type=int, default=512, help="square input size for GFLOPs (default 512)"
    )
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--no-flops", action="store_true", help="skip the (slow) FLOP count")
    p.add_argument("--json", help="also write the table as JSON to this path")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args) -> int:
    import json

    import keras

    import keras_seg
    from keras_seg.flops import count_flops

    rows = []
    header = (
        f"{'model':<16}{'backbone':<14}{'params (M)':>12}{f'GFLOPs@{args.size}':>14}  description"
    )
    print(header)
    print("-" * len(header))
    for name in keras_seg.list_models():
        spec = keras_seg.get_spec(name)
        model = keras_seg.build(name, num_classes=args.num_classes)
        params = model.count_params()
        gflops = None if args.no_flops else count_flops(model, args.size, args.size) / 1e9
        row = {
            "model": name,
            "backbone": spec.default_backbone or "-",
            "params": params,
            "gflops": gflops,
            "description": spec.summary,
        }
        rows.append(row)
        flops_text = "-" if gflops is None else f"{gflops:.1f}"
        print(
            f"{name:<16}{row['backbone']:<14}{params / 1e6:>12.2f}{flops_text:>14}  {spec.summary}"
        )
        del model
        keras.backend.clear_session()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"num_classes": args.num_classes, "size": args.size, "models": rows}, f, indent=2
            )
    return 0


# --- export -------------------------------------------------------------------------------


def _add_export(sub) -> None:
    # The choices repeat keras_seg.export.run.FORMATS: importing it would load TensorFlow
    # just to build the parser.
    p = sub.add_parser(
        "export",
        help="export a .keras model or a run directory to SavedModel / TF Serving / TFLite / ONNX",
        description="Exports take raw RGB pixels (normalisation inside) and return class ids "
        "and probabilities; each export is checked against the Keras model.",
    )
    p.add_argument("--model", required=True, help="a .keras file or a training run directory")
    p.add_argument(
        "--format", required=True, choices=("saved_model", "tflite", "tfserving", "onnx")
    )
    p.add_argument("--output", help="file/directory to write (tfserving: the base directory)")
    p.add_argument(
        "--quantize",
        choices=("none", "fp16", "dynamic", "int8"),
        help="TFLite quantization (default: the run config's export.tflite_quantize, else none)",
    )
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="TFLite size")
    p.add_argument("--name", help="TF Serving model name (default: the model's name)")
    p.add_argument("--version", type=int, default=1, help="TF Serving version (default 1)")
    p.add_argument("--checkpoint", choices=("best", "final"), default="best")
    p.add_argument("--images", help="folder of images for int8 calibration and the check")
    p.add_argument("--num-images", type=int, default=16, help="images used (default 16)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check with Keras")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from keras_seg.export.run import export_model

    export_model(
        args.model,
        args.format,
        args.output,
        quantize=args.quantize,
        input_size=args.input_size,
        name=args.name,
        version=args.version,
        checkpoint=args.checkpoint,
        images=args.images,
        num_images=args.num_images,
        check=not args.no_check,
    )
    return 0


# --- benchmark ----------------------------------------------------------------------------


def _add_benchmark(sub) -> None:
    from keras_seg.benchmarks import KINDS

    p = sub.add_parser(
        "benchmark",
        help="speed measurements that write JSON",
        description="Run `keras-seg benchmark KIND --help` for the options of each kind.",
    )
    p.add_argument("kind", choices=KINDS)
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark")
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args) -> int:
    import importlib

    module = importlib.import_module(f"keras_seg.benchmarks.{args.kind}")
    return int(module.main(args.options) or 0)


# --- train / evaluate / predict / demo ------------------------------------------------------


def _config_args(p, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="experiment YAML (see zoo_configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.batch_size=8 (repeatable)",
    )


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config (resumes an interrupted run)")
    _config_args(p)
    p.add_argument("--data-dir", help="data set folder (default: data.data_dir of the config)")
    p.add_argument("--model-dir", required=True, help="run folder: checkpoints, logs, models")
    p.add_argument(
        "--no-final-eval",
        action="store_true",
        help="skip the full-resolution evaluation at the end",
    )
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from keras_seg.config import load_config
    from keras_seg.training import TrainingDiverged
    from keras_seg.training import train

    cfg = load_config(args.config, args.overrides)
    try:
        train(cfg, args.model_dir, args.data_dir, final_eval=not args.no_final_eval)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="per-class IoU of a checkpoint at original resolution")
    _config_args(p)
    p.add_argument("--checkpoint", required=True, help=".keras file or training run folder")
    p.add_argument("--data-dir", help="data set folder (default: data.data_dir of the config)")
    p.add_argument("--split", help="split to evaluate (default: data.val_split)")
    p.add_argument("--output", help="JSON file (default: eval_<split>.json by the checkpoint)")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from keras_seg.config import load_config
    from keras_seg.training import evaluate_checkpoint

    cfg = load_config(args.config, args.overrides)
    evaluate_checkpoint(
        cfg, args.checkpoint, args.data_dir, args.split, args.output, args.max_images
    )
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="class-id PNGs and colour overlays for images")
    p.add_argument("--model", required=True, help=".keras file or training run folder")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from keras_seg.training import predict_paths

    predict_paths(args.model, args.input, args.output, args.alpha)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="train a small U-Net on synthetic shapes (CPU, minutes), evaluate, export"
    )
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--steps", type=int, help="training steps (default: the demo config's)")
    p.add_argument("--steps-per-epoch", type=int, help="steps between validations")
    p.add_argument("--num-train", type=int, help="synthetic training images (default 512)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from keras_seg.training.demo import DEMO
    from keras_seg.training.demo import run_demo

    overrides = {}
    if args.steps:
        overrides["train.steps"] = args.steps
    if args.steps_per_epoch:
        overrides["train.steps_per_epoch"] = args.steps_per_epoch
    if args.num_train:
        overrides["data.options"] = {**DEMO["data"]["options"], "num_train": args.num_train}
    run_demo(args.output, overrides)
    return 0


# --- entry point -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from keras_seg import __version__

    parser = argparse.ArgumentParser(prog="keras-seg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"keras-seg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_models,
        _add_benchmark,
        _add_export,
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_demo,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
