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


# --- entry point -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from keras_seg import __version__

    parser = argparse.ArgumentParser(prog="keras-seg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"keras-seg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_models, _add_benchmark, _add_export):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
