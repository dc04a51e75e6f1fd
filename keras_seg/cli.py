"""The `keras-seg` command.

Each sub-command is a small `_add_<name>(subparsers)` that declares its arguments and a
handler that calls into the library; the work itself lives in the library modules.

A user mistake (a bad config value, a missing file, bad data, an export that disagrees with
its model) ends the command with one line on stderr, `keras-seg <command>: error: ...`, and
exit code 2 (bad input), 1 (a refused export or another failure) or 3 (training diverged);
`--debug` (or `KERAS_SEG_DEBUG=1`) shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

#: Exit codes.
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED = 1, 2, 3

# --- models -------------------------------------------------------------------------------


def _add_models(sub, common) -> None:
    p = sub.add_parser(
        "models",
        parents=[common],
        help="table of registered models: backbone, parameters (and GFLOPs with --flops)",
    )
    p.add_argument("--size", type=int, default=512, help="square input size for GFLOPs")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument(
        "--flops", action="store_true", help="also count GFLOPs (builds each graph: minutes)"
    )
    p.add_argument("--json", help="also write the table as JSON to this path")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args) -> int:
    import json

    from keras_seg.registry import model_rows

    rows = list(model_rows(args.num_classes, args.size if args.flops else None))
    model_w = max(len("model"), *(len(r["model"]) for r in rows)) + 2
    backbone_w = max(len("backbone"), *(len(r["backbone"]) for r in rows)) + 2
    header = (
        f"{'model':<{model_w}}{'backbone':<{backbone_w}}{'params (M)':>12}"
        f"{f'GFLOPs@{args.size}':>14}  description"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        flops = "-" if row["gflops"] is None else f"{row['gflops']:.1f}"
        print(
            f"{row['model']:<{model_w}}{row['backbone']:<{backbone_w}}"
            f"{row['params'] / 1e6:>12.2f}{flops:>14}  {row['description']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"num_classes": args.num_classes, "size": args.size, "models": rows}, f, indent=2
            )
    return 0


# --- export -------------------------------------------------------------------------------


def _add_export(sub, common) -> None:
    # The choices repeat keras_seg.export.run.FORMATS and keras_seg.config.QUANTIZATIONS:
    # importing them would load TensorFlow just to build the parser.
    p = sub.add_parser(
        "export",
        parents=[common],
        help="export a .keras model or a run folder to SavedModel / TF Serving / TFLite / ONNX",
        description="Exports take raw RGB pixels (normalisation inside) and return class ids "
        "and probabilities. Each export is compared with the Keras model and refused when "
        "fewer pixels agree than its kind requires (SavedModel, ONNX and TFLite fp32 99.9%, "
        "fp16 99%, dynamic 98%, int8 95%).",
    )
    p.add_argument("--model", required=True, help="a .keras file or a training run folder")
    p.add_argument(
        "--format",
        required=True,
        nargs="+",
        choices=("saved_model", "tflite", "tfserving", "onnx"),
        help="one or more formats",
    )
    p.add_argument("--output", help="file/folder to write (tfserving: the base folder)")
    p.add_argument(
        "--quantize",
        nargs="+",
        choices=("none", "fp16", "dynamic", "int8"),
        help="TFLite quantization(s) (default: the run config's export.tflite_quantize, else none)",
    )
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="TFLite size")
    p.add_argument("--name", help="TF Serving model name (default: the model's name)")
    p.add_argument("--version", type=int, default=1, help="TF Serving version (default 1)")
    p.add_argument("--checkpoint", choices=("best", "final"), default="best")
    p.add_argument(
        "--images",
        help="folder of images for int8 calibration and the check (default: the run's "
        "validation images, else generated shapes)",
    )
    p.add_argument("--num-images", type=int, default=16, help="images used (default 16)")
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="keep an export that disagrees with the Keras model (with a warning)",
    )
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
        allow_mismatch=args.allow_mismatch,
    )
    return 0


# --- convert ------------------------------------------------------------------------------


def _add_convert(sub, common) -> None:
    p = sub.add_parser(
        "convert",
        parents=[common],
        help="a PyTorch checkpoint (torchvision, timm, segmentation_models.pytorch) -> .keras",
        description="Build a keras_seg model from a PyTorch checkpoint and save it as a .keras "
        "file for export, evaluate, predict and train. Whole-model checkpoints "
        "(segmentation_models.pytorch Unet / DeepLabV3 / DeepLabV3Plus) give the whole model; "
        "ImageNet classifiers (torchvision / timm ResNet, VGG16, MobileNetV2, timm HRNet) give the "
        "backbone. Where the reference package is installed the converted model is compared "
        "with it and refused when its outputs differ by more than 1e-4 of their largest value.",
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="checkpoint: .safetensors / .pth / .pt / .bin, a Hugging Face folder, or hf://owner/repo",
    )
    p.add_argument("--model", required=True, help="model name (keras-seg models)")
    p.add_argument("--backbone", help="backbone (default: the checkpoint's)")
    p.add_argument(
        "--num-classes", type=int, help="classes (default: the checkpoint's; needed for backbones)"
    )
    p.add_argument("--output", required=True, help=".keras file to write")
    p.add_argument(
        "--weights-format",
        choices=("torchvision", "timm", "smp", "transformers"),
        help="the checkpoint's layout (default: recognised from its keys)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="load what fits (a new class count, an encoder only) and list what was skipped",
    )
    p.add_argument("--no-check", action="store_true", help="skip the comparison with the reference")
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="write the model even when it disagrees with the reference (with a warning)",
    )
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    from keras_seg.convert import convert

    if not args.output.endswith(".keras"):
        raise _UsageError(f"--output must end in .keras, got {args.output!r}")
    convert(
        args.source,
        args.model,
        args.output,
        backbone=args.backbone,
        num_classes=args.num_classes,
        weights_format=args.weights_format,
        partial=args.partial,
        check=not args.no_check,
        allow_mismatch=args.allow_mismatch,
    )
    return 0


# --- benchmark ----------------------------------------------------------------------------


def _add_benchmark(sub, common) -> None:
    from keras_seg.benchmarks import KINDS

    p = sub.add_parser(
        "benchmark",
        parents=[common],
        help="speed measurements that write JSON",
        description="Run `keras-seg benchmark KIND --help` for the options of each kind.",
    )
    p.add_argument("kind", choices=KINDS)
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark")
    p.set_defaults(func=_cmd_benchmark)


def _cmd_benchmark(args) -> int:
    import importlib

    from keras_seg.benchmarks import MODULES

    module = importlib.import_module(f"keras_seg.benchmarks.{MODULES.get(args.kind, args.kind)}")
    return int(module.main(args.options) or 0)


# --- train / evaluate / predict / demo ------------------------------------------------------


def _config_args(p, required: bool = True) -> None:
    p.add_argument(
        "--config",
        required=required,
        help="experiment YAML (see zoo_configs/)"
        + ("" if required else "; default: the config.yaml of the run"),
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.batch_size=8 (repeatable)",
    )


def _load_config(args):
    from keras_seg.config import load_config
    from keras_seg.runs import check_config

    cfg = load_config(args.config, args.overrides)
    check_config(cfg, args.config)
    return cfg


def _add_train(sub, common) -> None:
    p = sub.add_parser(
        "train", parents=[common], help="train a model from a config (resumes an interrupted run)"
    )
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
    from keras_seg.training import train

    cfg = _load_config(args)
    train(cfg, args.model_dir, args.data_dir, final_eval=not args.no_final_eval)
    return 0


def _add_evaluate(sub, common) -> None:
    p = sub.add_parser(
        "evaluate", parents=[common], help="per-class IoU of a checkpoint at original resolution"
    )
    _config_args(p, required=False)
    p.add_argument("--checkpoint", required=True, help=".keras file or training run folder")
    p.add_argument("--data-dir", help="data set folder (default: data.data_dir of the config)")
    p.add_argument("--split", help="split to evaluate (default: data.val_split)")
    p.add_argument("--output", help="JSON file (default: eval_<split>.json by the checkpoint)")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from keras_seg.inference import evaluate_run

    if args.overrides and not args.config:
        raise _UsageError("--set needs --config")
    cfg = _load_config(args) if args.config else None
    evaluate_run(
        cfg,
        args.checkpoint,
        args.data_dir,
        args.split,
        args.output,
        args.max_images,
        progress=sys.stdout.isatty(),
    )
    return 0


def _add_predict(sub, common) -> None:
    p = sub.add_parser(
        "predict", parents=[common], help="class-id PNGs and colour overlays for images"
    )
    p.add_argument("--model", required=True, help=".keras file or training run folder")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> int:
    from keras_seg.inference import predict_files

    if not 0.0 <= args.alpha <= 1.0:
        raise _UsageError(f"--alpha must be between 0 and 1, got {args.alpha}")
    predict_files(args.model, args.input, args.output, args.alpha)
    return 0


def _add_demo(sub, common) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="train a small U-Net on synthetic shapes (CPU, minutes), evaluate, export",
    )
    p.add_argument("--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--steps", type=int, help="training steps (default: the demo config's)")
    p.add_argument("--steps-per-epoch", type=int, help="steps between validations")
    p.add_argument("--num-train", type=int, help="synthetic training images (default 512)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from keras_seg.demo import DEMO
    from keras_seg.demo import run_demo

    overrides = {}
    if args.steps:
        overrides["train.steps"] = args.steps
    if args.steps_per_epoch:
        overrides["train.steps_per_epoch"] = args.steps_per_epoch
    if args.num_train:
        overrides["data.options"] = {**DEMO["data"]["options"], "num_train": args.num_train}
    run_demo(args.output, overrides)
    return 0


# --- errors and output ------------------------------------------------------------------------


class _UsageError(ValueError):
    """A command-line argument that argparse cannot check by itself."""


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, KeyError) and text.startswith("'"):
        text = text.strip("'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _classify(error: BaseException) -> tuple[int, str] | None:
    """`(exit code, message)` for errors a user can act on; None for bugs."""
    import tensorflow as tf

    from keras_seg.config import ConfigError
    from keras_seg.data import DataError
    from keras_seg.data.errors import data_error_from
    from keras_seg.export import ExportMismatch
    from keras_seg.training import TrainingDiverged
    from keras_seg.weights import ParityMismatch

    if isinstance(error, TrainingDiverged):
        return EXIT_DIVERGED, _one_line(error)
    if isinstance(error, (ExportMismatch, ParityMismatch)):
        return EXIT_FAILED, _one_line(error)
    if isinstance(error, (ConfigError, DataError, _UsageError)):
        return EXIT_BAD_INPUT, _one_line(error)
    data_error = data_error_from(error)
    if data_error is not None:
        return EXIT_BAD_INPUT, _one_line(data_error)
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return EXIT_BAD_INPUT, _one_line(error)
    if isinstance(error, (ValueError, TypeError, OSError)) and not isinstance(
        error, tf.errors.OpError
    ):
        return EXIT_BAD_INPUT, _one_line(error)
    return None


def _quiet(verbose: bool) -> None:
    """No foreign warnings or log lines unless `--verbose`; our warnings in one line."""
    if verbose:
        sys.stderr.write(_startup_messages())
        return
    import absl.logging
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity(absl.logging.ERROR)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", module="(keras|tensorflow|tf2onnx|absl)")

    def one_line(message, category, filename, lineno, line=None):
        return f"warning: {message}\n"

    warnings.formatwarning = one_line


def _startup_messages() -> str:
    from keras_seg.console import startup_messages

    return startup_messages()


# --- entry point -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from keras_seg import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's start-up lines, foreign warnings and log messages",
    )
    common.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )
    parser = argparse.ArgumentParser(
        prog="keras-seg", description=__doc__.splitlines()[0], parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"keras-seg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_models,
        _add_benchmark,
        _add_export,
        _add_convert,
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_demo,
    ):
        add(sub, common)
    return parser


def main(
    argv: Sequence[str] | None = None, *, exit_on_error: bool = False, restart: bool = False
) -> int:
    """Run the command line `argv`; return its exit code.

    With `exit_on_error` (the console script) an error ends the process right where it is
    caught, see `run`. With `restart` (the console script, whose `argv` is this process's
    command line, and which owns the process) `train` may restart the process with other
    settings, see `_restart_for_training`, and `predict` and `evaluate` declare it
    inference-only (`keras_seg.machine.inference_only`: each oneDNN filter reordered once),
    which a caller's own process (`main(argv)` from Python) is not: the setting stays for the
    process's life and refuses training in it.
    """
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("KERAS_SEG_DEBUG", "") not in ("", "0")
    _quiet(args.verbose)
    if restart and args.command == "train":
        _restart_for_training(args)
    if restart and args.command in ("predict", "evaluate"):
        from keras_seg.machine import inference_only

        try:
            inference_only()
        except ValueError as error:  # an invalid TF_ONEDNN_ASSUME_FROZEN_WEIGHTS
            print(f"keras-seg {args.command}: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"keras-seg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        known = _classify(error)
        code, message = known or (
            EXIT_FAILED,
            f"{type(error).__name__}: {_one_line(error)} (run with --debug for the traceback)",
        )
        print(f"keras-seg {args.command}: error: {message}", file=sys.stderr)
        if exit_on_error:
            _exit_now(code)
        return code


def _restart_for_training(args) -> None:
    """Start this command line again, in this process, with `training_environment()`'s
    settings for the config's model and step size (oneDNN kernels where TensorFlow chose
    Eigen's and the model trains faster on them at that size), which TensorFlow reads only
    when it starts. Nothing has been written yet; the new process finds the settings made
    and does not restart again. A config that does not load is left to the command, which
    reports it."""
    from keras_seg.machine import pixels_per_step
    from keras_seg.machine import training_environment

    try:
        cfg = _load_config(args)
    except Exception:  # noqa: BLE001  (the command reports it, in the same process)
        return
    pixels = pixels_per_step(cfg.train.batch_size, cfg.data.crop_size)
    settings = training_environment(cfg.model.name, cfg.model.backbone, pixels)
    if not settings or os.name != "posix" or not sys.executable:
        return
    shown = " ".join(f"{k}={v}" for k, v in settings.items())
    print(
        f"note: restarting with {shown}: TensorFlow's oneDNN CPU kernels train faster here "
        "than its default Eigen ones (set TF_ENABLE_ONEDNN_OPTS=0 to keep Eigen)",
        flush=True,
    )
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, {**os.environ, **settings})
    except OSError as error:  # then train as TensorFlow started
        print(f"note: could not restart ({error}); training with the kernels TensorFlow chose")


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> None:
    """The console script: `main`, leaving with `os._exit` (no interpreter teardown).

    After an error inside a tf.data pipeline whose readers run Python (archives, SBD
    `.mat` masks), freeing the error's traceback destroys the iterator while tf.data
    threads still wait for the GIL, and the interpreter's teardown kills them mid-C++
    ("terminate called without an active exception", SIGABRT, exit code 134) or hangs.
    Everything we write is closed (and written atomically) by then, so we flush and leave
    with the intended code, before the traceback is freed.
    """
    _exit_now(main(exit_on_error=True, restart=True))


if __name__ == "__main__":
    run()
