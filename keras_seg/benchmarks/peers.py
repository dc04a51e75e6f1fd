"""`keras-seg benchmark peers`: keras_seg against segmentation_models.pytorch, interleaved.

The same architecture (random weights, 21 classes) in each library, on the same machine at
the same moment. Every implementation runs in its own long-lived worker process, which builds
its model and warms each call up `--warmup` times; the parent then asks the workers for
samples in turn (JSON lines on stdin/stdout): for each of `--rounds` rounds, for each case,
keras_seg then each peer, so both sides see the same machine load. A sample is the time of
`--iters` calls; per case the report gives the median images/s over the rounds, min, max,
spread ((max - min) / median) and every raw sample with its start time.

Rows (`--rows`): U-Net ResNet-34 (`unet:resnet34`, 3x3 head as SMP's, vs `smp.Unet`) and
DeepLabV3+ ResNet-50 at output stride 16 with separable convolutions (vs
`smp.DeepLabV3Plus(encoder_output_stride=16)`); `--small` swaps in ResNet-18 variants with
thin decoders on both sides (smoke runs). Cases (`--cases`): `infer_bsN` at `--size`,
`train_bsN` at `--train-size` (SGD momentum 0.9, cross-entropy ignoring 255, ~5% ignore
labels). Precisions (`--precisions`): `float32` on both sides, and `bf16`, each library's best
CPU setting: keras_seg's `mixed_bfloat16` policy, PyTorch's bfloat16 autocast with
`channels_last` model and input.

keras_seg is timed through the calls users make and through the inner function: inference
`predict_on_batch` (the user path), `predict(x, batch_size=b)` and a
`tf.function(model(x, training=False))` (inner); training `train_on_batch` (user path) on a
model compiled with SMP's loss and optimizer, `fit` over `--iters` steps and a
`tf.function(model.train_step)` (inner). SMP is timed as `model(x)` under inference mode and
forward/loss/backward/step. The ratio is keras_seg's user path / the best peer in images/s;
the inner ratio uses keras_seg's inner path. Inference and training of each row, library
and precision run in separate workers, so the peak RSS reported after each phase is that
phase's own; the report also gives each worker's peak after warming up its user path alone
(keras_seg's worker warms that path first, `--rss-calls` calls per case, before
`predict`/`fit` and the inner function trace graphs of their own), which is what a process
that trains or predicts one way holds. `--max-rss-ratio` makes that figure a check.
keras-hub's DeepLabV3 (ResNet50-vd, ASPP at stride 32: not the same network) is
an optional peer of the DeepLabV3+ row: `--keras-hub-python` names a Python with keras-hub,
TensorFlow and keras_seg's requirements.

Example:
    keras-seg benchmark peers --rounds 5 --output bench_results/peers.json \\
        --markdown bench_results/peers.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_seg.benchmarks import peers_report
from keras_seg.benchmarks.common import command_line
from keras_seg.benchmarks.common import numpy_batch
from keras_seg.benchmarks.common import serve_worker
from keras_seg.benchmarks.common import write_report
from keras_seg.benchmarks.workers import Worker
from keras_seg.benchmarks.workers import WorkerError
from keras_seg.benchmarks.workers import wait_ready

TORCH_WORKER = Path(__file__).resolve().with_name("peers_torch.py")
# Which path of each library is the user's, which the inner one (both per phase).
USER_PATH = {"inference": "predict_on_batch", "training": "train_on_batch"}
INNER_PATH = {"inference": "inner", "training": "inner"}

SMP_DEEPLAB = {
    "separable": True,
    "aspp_post_conv": True,
    "align_corners": True,
    "decoder_convs": 1,
    "backbone_kwargs": {"dilation_rule": "smp"},
}
# The rows: one architecture, built by each library. `small` holds the smoke-run variants.
ROWS: dict[str, dict[str, Any]] = {
    "unet_resnet34": {
        "title": "U-Net ResNet-34",
        "keras_seg": {"model": "unet", "backbone": "resnet34", "kwargs": {"head_kernel_size": 3}},
        "smp": {"class": "Unet", "kwargs": {"encoder_name": "resnet34"}},
        "small": {
            "keras_seg": {
                "model": "unet",
                "backbone": "resnet18",
                "kwargs": {"head_kernel_size": 3, "decoder_filters": [32, 16, 8, 8, 8]},
            },
            "smp": {
                "class": "Unet",
                "kwargs": {"encoder_name": "resnet18", "decoder_channels": [32, 16, 8, 8, 8]},
            },
        },
    },
    "deeplabv3plus_resnet50": {
        "title": "DeepLabV3+ ResNet-50 OS16",
        # SMP's network exactly (26,682,725 trainable parameters on both sides): the options
        # keras_seg.weights.smp reads off SMP's DeepLabV3Plus checkpoints.
        "keras_seg": {
            "model": "deeplabv3plus",
            "backbone": "resnet50_torchvision",
            "kwargs": {"output_stride": 16, **SMP_DEEPLAB},
        },
        "smp": {
            "class": "DeepLabV3Plus",
            "kwargs": {"encoder_name": "resnet50", "encoder_output_stride": 16},
        },
        "keras_hub": {"builder": "deeplabv3_resnet50_vd"},
        "small": {
            "keras_seg": {
                "model": "deeplabv3plus",
                "backbone": "resnet18",
                "kwargs": {
                    "output_stride": 16,
                    **SMP_DEEPLAB,
                    "aspp_filters": 32,
                    "decoder_filters": 32,
                },
            },
            "smp": {
                "class": "DeepLabV3Plus",
                "kwargs": {
                    "encoder_name": "resnet18",
                    "encoder_output_stride": 16,
                    "decoder_channels": 32,
                },
            },
        },
    },
}
PRECISIONS = ("float32", "bf16")
CASE_PATTERN = re.compile(r"(infer|train)_bs([1-9][0-9]*)")


# --- keras workers (keras_seg, keras-hub) ---------------------------------------------------


def deeplabv3_resnet50_vd(num_classes: int):
    """keras-hub's DeepLabV3ImageSegmenter on a ResNet50-vd, as its presets configure it."""
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[32, 32, 64],
        input_conv_kernel_sizes=[3, 3, 3],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block_vd",
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        low_level_feature_key="P2",
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[6, 12, 18],
    )
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=num_classes)


def _build_keras(job: dict[str, Any]):
    spec = job["spec"]
    if job["library"] == "keras_hub":
        return {"deeplabv3_resnet50_vd": deeplabv3_resnet50_vd}[spec["builder"]](job["num_classes"])
    import keras_seg

    return keras_seg.build(
        spec["model"], num_classes=job["num_classes"], backbone=spec["backbone"], **spec["kwargs"]
    )


def compile_like_peers(model, keras_seg_sgd: bool = True) -> None:
    """The training recipe of every peers and memory row, as the PyTorch workers spell it:
    SGD (0.01, momentum 0.9), cross-entropy on logits ignoring 255, no metrics.

    The SGD is the one each library's users train with: keras_seg's (what `keras-seg train`
    builds, each variable's update waiting for its gradient) for keras_seg, Keras's for
    keras-hub (`keras_seg_sgd=False`)."""
    import keras

    from keras_seg.training import optimizers

    sgd = optimizers.SGD if keras_seg_sgd else keras.optimizers.SGD
    model.compile(
        optimizer=sgd(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255, from_logits=True),
        metrics=[],  # not None: that would keep the metrics a keras-hub task set itself
    )


def keras_setup(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the job's Keras model; return (info, {"case/path": (fn, images, count)})."""
    import keras
    import tensorflow as tf

    from keras_seg.data.options import without_autotune
    from keras_seg.machine import onednn_enabled
    from keras_seg.machine import weights_assumed_frozen

    if job["tf_threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(job["tf_threads"])
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if job["precision"] == "bf16" else "float32"
    )
    keras.utils.set_random_seed(0)
    model = _build_keras(job)
    calls: dict[str, Any] = {}
    if job["phase"] == "inference":
        inner = tf.function(lambda x: model(x, training=False), autograph=False)
        for name, case in job["cases"].items():
            x, _ = numpy_batch(case["batch"], case["size"], job["num_classes"], seed=0)
            b, tensor = case["batch"], tf.constant(x)
            calls[f"{name}/predict_on_batch"] = (lambda x=x: model.predict_on_batch(x), b, None)
            calls[f"{name}/predict"] = (
                lambda x=x, b=b: model.predict(x, batch_size=b, verbose=0),
                b,
                None,
            )
            calls[f"{name}/inner"] = (lambda t=tensor: inner(t), b, None)
    else:
        compile_like_peers(model, keras_seg_sgd=job["library"] == "keras_seg")
        # The body of train_on_batch and fit, without their Python around it.
        inner = tf.function(lambda x, y: model.train_step((x, y)), autograph=False)
        for name, case in job["cases"].items():
            x, y = numpy_batch(case["batch"], case["size"], job["num_classes"], seed=1)
            b, tx, ty = case["batch"], tf.constant(x), tf.constant(y.astype("int32"))
            # As every keras_seg dataset (without_autotune's docstring says why): with the
            # autotuner on, U-Net's 7-8 s of steps timed as 10.24 s, its next wake-up.
            steps = without_autotune(tf.data.Dataset.from_tensors((tx, ty)).repeat(job["iters"]))
            calls[f"{name}/train_on_batch"] = (lambda x=x, y=y: model.train_on_batch(x, y), b, None)
            # One sample = one fit over --iters steps (its set-up cost is shared by them).
            calls[f"{name}/fit"] = (
                lambda s=steps: model.fit(s, epochs=1, verbose=0),
                b * job["iters"],
                1,
            )
            calls[f"{name}/inner"] = (lambda x=tx, y=ty: inner(x, y), b, None)
    # The user path's calls first: the worker's peak RSS after warming them up is that of a
    # process that only ever ran the user path (the other paths trace graphs of their own).
    calls = dict(
        sorted(calls.items(), key=lambda kv: kv[0].split("/")[1] != USER_PATH[job["phase"]])
    )
    info = {
        "params": sum(math.prod(v.shape) for v in model.trainable_weights),  # as PyTorch's
        "params_all": model.count_params(),
        "policy": keras.mixed_precision.global_policy().name,
        "jit_compile": getattr(model, "jit_compile", None) if job["phase"] == "training" else None,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        # TensorFlow's CPU kernels: oneDNN (on by default only on some CPUs) or Eigen.
        "tf_onednn": onednn_enabled(),
        # TF_ONEDNN_ASSUME_FROZEN_WEIGHTS (the inference workers, as `keras-seg predict`).
        "tf_onednn_frozen_weights": onednn_enabled() and weights_assumed_frozen(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    if job["library"] == "keras_hub":
        from importlib import metadata

        info["versions"]["keras-hub"] = metadata.version("keras-hub")
    return info, calls


# --- the parent ---------------------------------------------------------------------------


def parse_cases(names: Sequence[str], size: int, train_size: int) -> dict[str, dict[str, Any]]:
    """`infer_bsN` / `train_bsN` -> {name: {"phase", "batch", "size"}}."""
    cases = {}
    for name in names:
        match = CASE_PATTERN.fullmatch(name)
        if not match:
            raise SystemExit(f"--cases takes infer_bsN or train_bsN (N >= 1), got {name!r}")
        phase = "inference" if match[1] == "infer" else "training"
        cases[name] = {
            "phase": phase,
            "batch": int(match[2]),
            "size": size if phase == "inference" else train_size,
        }
    return cases


def _command(library: str, args, job: dict[str, Any]) -> list[str]:
    if library == "smp":
        return [args.torch_python, "-I", str(TORCH_WORKER), json.dumps(job)]
    python = args.keras_hub_python if library == "keras_hub" else sys.executable
    return [python, "-m", "keras_seg.benchmarks.peers", "--worker", json.dumps(job)]


def _paths(library: str, phase: str) -> list[str]:
    if library == "smp":
        return ["eager"]
    if phase == "inference":
        return ["predict_on_batch", "predict", "inner"]
    return ["train_on_batch", "fit", "inner"]


def run_group(args, row: str, precision: str, phase: str, cases, libraries, tmp: Path) -> dict:
    """Start one worker per library, take the interleaved samples, stop them."""
    table = ROWS[row]["small"] if args.small else ROWS[row]
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    workers: dict[str, Worker] = {}
    group = {"workers": {}, "samples": []}
    try:
        for library in libraries:  # all start at once: warm-ups are not timed
            job = {
                "library": library,
                "spec": table[library],
                "phase": phase,
                "precision": precision,
                "cases": cases,
                "num_classes": args.num_classes,
                "threads": args.threads,
                "tf_threads": args.tf_threads,
                "warmup": args.warmup,
                "rss_calls": args.rss_calls,
                "iters": args.iters,
            }
            name = f"{library} worker ({row}, {precision}, {phase})"
            log = tmp / f"{row}-{precision}-{phase}-{library}.log"
            worker_env = env
            if library == "keras_seg" and phase == "training":
                # What `keras-seg train` restarts itself with (oneDNN where TensorFlow chose
                # Eigen and the model trains faster on it): the user path of training.
                from keras_seg.machine import pixels_per_step
                from keras_seg.machine import training_environment

                spec = job["spec"]
                pixels = max(pixels_per_step(c["batch"], [c["size"]] * 2) for c in cases.values())
                worker_env = env | training_environment(spec["model"], spec.get("backbone"), pixels)
            elif library == "keras_seg":
                # What `keras-seg predict` and `evaluate` run with (`inference_only()`: each
                # filter reordered once): the user path of a process that only predicts.
                from keras_seg.machine import inference_environment

                worker_env = env | inference_environment()
            command = _command(library, args, job)
            workers[library] = Worker(name, command, worker_env, log, args.timeout)
        for library, ready in wait_ready(workers, args.timeout).items():
            user = _paths(library, phase)[0]
            by_key = ready["peak_rss_warm_by_key_mib"]
            group["workers"][library] = {
                **ready["info"],
                "rss_warm": ready["peak_rss_warm_mib"],
                "rss_user_path_warm": max(v for k, v in by_key.items() if k.endswith("/" + user)),
                "rss_warm_by_key": by_key,
                "warm_calls_by_key": ready["warm_calls_by_key"],
            }
        for round_ in range(args.rounds):
            for case in cases:
                for library in libraries:
                    for path in _paths(library, phase):
                        request = {"op": "measure", "key": f"{case}/{path}", "iters": args.iters}
                        sample = workers[library].request(request)
                        sample.update(library=library, path=path, case=case, round=round_)
                        group["samples"].append(sample)
                        print(
                            f"  {row} {precision} {case} {library}/{path} round {round_ + 1}: "
                            f"{sample['images_per_s']:.3f} img/s",
                            file=sys.stderr,
                            flush=True,
                        )
        for library, worker in workers.items():
            group["workers"][library]["peak_rss_mib"] = worker.request({"op": "rss"})[
                "peak_rss_mib"
            ]
    except BaseException:
        for worker in workers.values():
            worker.kill()
        raise
    for worker in workers.values():
        worker.close()
    return group


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark peers", description=__doc__.splitlines()[0]
    )
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    p.add_argument(
        "--cases",
        nargs="+",
        default=["infer_bs1", "infer_bs4", "train_bs4"],
        help="infer_bsN (at --size) and train_bsN (at --train-size)",
    )
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--small", action="store_true", help="ResNet-18 rows, thin decoders (smoke)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--size", type=int, default=512, help="inference input size")
    p.add_argument("--train-size", type=int, default=256, help="training input size")
    p.add_argument("--rounds", type=int, default=5, help="samples per case and path")
    p.add_argument("--iters", type=int, default=3, help="calls timed together in one sample")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case and path")
    p.add_argument(
        "--rss-calls",
        type=int,
        default=5,
        help="user-path calls (warm-up included) before its peak RSS is read",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    p.add_argument("--tf-threads", type=int, help="TF intra-op threads (default: TF's own)")
    p.add_argument("--torch-python", default=sys.executable, help="a Python with torch and SMP")
    p.add_argument("--keras-hub-python", help="a Python with keras-hub: adds it as a peer")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one answer")
    p.add_argument("--output", default="bench_results/peers.json", help="JSON report path")
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--readme", help="replace the table between the peers markers of this file")
    p.add_argument(
        "--min-ratio",
        type=_min_ratio,
        action="append",
        default=[],
        metavar="PRECISION=RATIO",
        help="exit 1 (after writing the report) when a case of that precision has keras_seg "
        "(user path) under RATIO times the best peer, e.g. float32=1.0 (repeatable)",
    )
    p.add_argument(
        "--max-rss-ratio",
        type=float,
        metavar="RATIO",
        help="exit 1 (after writing the report) when a phase's user-path peak RSS, keras_seg / "
        "SMP, is above RATIO, e.g. 1.1",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        user_path = USER_PATH[job["phase"]]
        return serve_worker(lambda: keras_setup(job), job["warmup"], user_path, job["rss_calls"])
    for option in ("num_classes", "size", "train_size", "rounds", "iters", "threads"):
        if getattr(args, option) < 1:
            raise SystemExit(
                f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}"
            )
    if args.rss_calls < 0:
        raise SystemExit(f"--rss-calls must be >= 0, got {args.rss_calls}")
    if args.max_rss_ratio is not None and not args.max_rss_ratio > 0:
        raise SystemExit(f"--max-rss-ratio must be > 0, got {args.max_rss_ratio:g}")
    if args.keras_hub_python and args.small:
        raise SystemExit("--keras-hub-python has no --small variant; drop one of them")
    cases = parse_cases(args.cases, args.size, args.train_size)
    groups = []
    with tempfile.TemporaryDirectory(prefix="keras-seg-peers-") as tmp:
        try:
            for row in args.rows:
                title = ROWS[row]["title"] + (" (--small: ResNet-18, thin)" if args.small else "")
                libraries = ["keras_seg", "smp"]
                if args.keras_hub_python and "keras_hub" in ROWS[row]:
                    libraries.append("keras_hub")
                for precision in args.precisions:
                    for phase in ("inference", "training"):
                        chosen = {k: v for k, v in cases.items() if v["phase"] == phase}
                        if not chosen:
                            continue
                        print(f"{row} {precision} {phase} ...", file=sys.stderr, flush=True)
                        group = run_group(args, row, precision, phase, chosen, libraries, Path(tmp))
                        groups.append(
                            {
                                "row": row,
                                "title": title,
                                "precision": precision,
                                "phase": phase,
                                **group,
                            }
                        )
        except WorkerError as error:
            print(f"keras-seg benchmark peers: error: {error}", file=sys.stderr)
            return 1
    settings = {
        key: getattr(args, key)
        for key in (
            "rows", "cases", "precisions", "small", "num_classes", "size", "train_size",
            "rounds", "iters", "warmup", "rss_calls", "threads", "tf_threads", "torch_python",
            "keras_hub_python",
        )
    }  # fmt: skip
    settings["command"] = command_line("peers", list(argv or sys.argv[1:]))
    settings["rows_built"] = {r: ROWS[r]["small"] if args.small else ROWS[r] for r in args.rows}
    results = peers_report.summarise(groups, USER_PATH, INNER_PATH)
    extra = {}
    for group in groups:
        for worker in group["workers"].values():
            extra.update(worker.get("versions", {}))
    payload = write_report(args.output, "peers", settings, results, extra_versions=extra)
    table = peers_report.markdown(payload)
    print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    if args.readme:
        from keras_seg.benchmarks.models import update_readme

        update_readme(args.readme, table, marker="peers")
    return _check_ratios(results["cases"], args.min_ratio) or _check_memory(
        results["memory"], args.max_rss_ratio
    )


def _min_ratio(text: str) -> tuple[str, float]:
    precision, _, value = text.partition("=")
    if precision not in PRECISIONS or not value:
        raise argparse.ArgumentTypeError(
            f"expected PRECISION=RATIO, e.g. float32=1.0, got {text!r}"
        )
    return precision, float(value)


def _refuse(failures: list[str], kind: str) -> int:
    """Exit status 1, with one line naming the first failure, when there are any."""
    if not failures:
        return 0
    more = f" ({len(failures) - 1} more such {kind})" if len(failures) > 1 else ""
    print(f"keras-seg benchmark peers: {failures[0]}{more}", file=sys.stderr)
    return 1


def _check_ratios(cases: list[dict[str, Any]], minimums: list[tuple[str, float]]) -> int:
    """Exit status 1, with one line, when a case's user-path ratio is under its minimum."""
    for precision, minimum in minimums:
        low = [
            f"{c['title']} {precision} {c['case']}: keras_seg at {c['ratio']:.2f}x "
            f"{c['best_peer']}, under --min-ratio {precision}={minimum:g}"
            for c in cases
            if c["precision"] == precision and c["ratio"] < minimum
        ]
        if _refuse(low, "cases"):
            return 1
    return 0


def _check_memory(memory: list[dict[str, Any]], maximum: float | None) -> int:
    """Exit status 1, with one line, when a phase's user-path peak RSS ratio is over `maximum`.

    The user path's figure (the worker's peak after warming up `predict_on_batch` /
    `train_on_batch` alone) is what a user's process holds; the worker's final peak also
    counts the other paths it timed.
    """
    if maximum is None:
        return 0
    high = [
        f"{m['row']} {m['precision']} {m['phase']}: peak RSS keras_seg "
        f"{m['user_path_rss_mib']['keras_seg']:.0f} MiB / SMP "
        f"{m['user_path_rss_mib']['smp']:.0f} MiB = {m['user_path_ratio']:.2f}, "
        f"over --max-rss-ratio {maximum:g}"
        for m in memory
        if m["user_path_ratio"] > maximum
    ]
    return _refuse(high, "phases")


if __name__ == "__main__":
    sys.exit(main())
