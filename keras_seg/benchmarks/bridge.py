"""`keras-seg benchmark bridge`: an SMP U-Net to TFLite through keras_seg and through the peers.

The routes a user with a segmentation_models.pytorch checkpoint would try, on one model:

- keras_seg: `keras_seg.build("unet", num_classes=None, weights=CHECKPOINT)`, then
  `keras_seg.export.tflite` (fp32; int8 calibrated on images like the check images).
- litert_torch: `litert_torch.convert(model, (x,))` (fp32; int8 by its PT2E recipe).
- onnx2tf: `torch.onnx.export`, then the `onnx2tf` command (fp32; int8 with `-oiqt`
  calibrated on the same images, its `*_integer_quant.tflite`: float in/out, int8 inside).

The model is `smp.Unet(encoder, encoder_weights=None, classes=N)` with a fixed seed and random
BatchNorm statistics, built in a PyTorch-only subprocess (`bridge_torch.py`), which also
computes PyTorch's logits on fixed images (synthetic shapes after `--train-steps`, else random
pixels). Peers live in their own virtual environments
(`--litert-venv`, `--onnx2tf-venv`; `--install` creates missing ones from
`bridge_routes.PEER_INSTALL`).
For every `.tflite` produced: builtin ops only (from the flatbuffer's op codes), file size,
single-image latency at each `--threads` (ai_edge_litert interpreter, XNNPACK; all files
timed round-robin in one loop, same harness and inputs), and agreement with PyTorch on the
check images: the share of pixels whose argmax class is PyTorch's, the largest probability
difference and, for files that output logits, the largest logit difference. Each file gets
the input it expects (layout, normalisation, dtype), written down in its row.

Conversions take minutes; with `--workdir` the files stay, and `--reuse` then measures them
again without converting (a rerun for timings). `--quick` is a smoke run.

Example:
    python tools/bench_bridge.py --litert-venv /work/venv-litert \\
        --onnx2tf-venv /work/venv-onnx2tf --workdir .bridge-work
    python tools/bench_bridge.py --litert-venv /work/venv-litert \\
        --onnx2tf-venv /work/venv-onnx2tf --workdir .bridge-work --reuse --repeats 50
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from keras_seg.benchmarks import bridge_torch
from keras_seg.benchmarks.bridge_routes import keras_seg_route
from keras_seg.benchmarks.bridge_routes import litert_route
from keras_seg.benchmarks.bridge_routes import onnx2tf_route
from keras_seg.benchmarks.bridge_routes import torch_step
from keras_seg.benchmarks.common import write_report
from keras_seg.benchmarks.tflite_harness import measure_files

ROUTES = ("keras_seg", "litert_torch", "onnx2tf")
VARIANTS = ("fp32", "int8")
ENCODERS = ("resnet18", "resnet34", "resnet50")
# What the reference depends on: conversions made with the same values can be reused.
REFERENCE_KEYS = ("seed", "encoder", "num_classes", "size", "images", "calibration", "train_steps")
CONVERSIONS = "conversions.json"
QUICK = {"repeats": 3, "warmup": 1, "images": 2, "calibration": 4}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark bridge", description=__doc__.split("\n")[0]
    )
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--encoder", default="resnet34", choices=ENCODERS)
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--size", type=int, default=256, help="square input size (default 256)")
    p.add_argument("--images", type=int, default=4, help="check images (agreement)")
    p.add_argument("--calibration", type=int, default=8, help="int8 calibration images")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=20, help="timed runs per file and threads")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="train the reference this many steps on synthetic shapes (its classes: "
        "--num-classes 5); 0: random weights and BatchNorm statistics, random-pixel images",
    )
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--torch-python", default=sys.executable, help="has torch and SMP")
    p.add_argument("--litert-venv", default=".bridge-venvs/litert-torch")
    p.add_argument("--onnx2tf-venv", default=".bridge-venvs/onnx2tf")
    p.add_argument("--install", action="store_true", help="create missing peer venvs")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per subprocess")
    p.add_argument("--output", default="bench_results/bridge.json")
    p.add_argument("--markdown", default="bench_results/bridge.md")
    p.add_argument("--workdir", help="keep the checkpoint and .tflite files here")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --workdir: measure the files an earlier run made there, converting only "
        "what is missing or failed (a rerun for timings)",
    )
    return p


def reusable(workdir: Path, job: dict) -> tuple[dict | None, list[dict[str, Any]]]:
    """The reference and conversions an earlier run left in `workdir`, if made alike."""
    try:
        stored = json.loads((workdir / CONVERSIONS).read_text())
    except (OSError, ValueError):
        return None, []
    if any(stored["job"].get(k) != job[k] for k in REFERENCE_KEYS):
        print(f"{workdir / CONVERSIONS} was made with other settings: converting anew")
        return None, []
    reference = stored["reference"]
    if job["onnx"] and not (reference.get("onnx") or {}).get("succeeded"):
        return None, []  # the reference run also exports ONNX
    entries = [e for e in stored["entries"] if not e["succeeded"] or (workdir / e["file"]).exists()]
    return reference, entries


def reproduce_command(args, route: str | None = None) -> str:
    argv = ["python", "tools/bench_bridge.py", "--routes", *([route] if route else args.routes)]
    argv += ["--variants", *args.variants, "--encoder", args.encoder]
    argv += ["--num-classes", str(args.num_classes), "--size", str(args.size)]
    argv += ["--images", str(args.images), "--calibration", str(args.calibration)]
    argv += ["--threads", *map(str, args.threads), "--repeats", str(args.repeats)]
    argv += ["--warmup", str(args.warmup), "--seed", str(args.seed)]
    argv += ["--train-steps", str(args.train_steps)]
    if route in (None, "litert_torch") and "litert_torch" in args.routes:
        argv += ["--litert-venv", str(args.litert_venv)]
    if route in (None, "onnx2tf") and "onnx2tf" in args.routes:
        argv += ["--onnx2tf-venv", str(args.onnx2tf_venv)]
    return shlex.join(argv)


def _cell(value, digits: int = 1, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def markdown_table(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    threads = [str(t) for t in s["threads"]]
    head = ["route", "variant", "converts", "builtin only", "MiB"]
    head += [f"ms {t} thr" for t in threads]
    head += ["agree w/ PyTorch", "max abs dprob", "max abs dlogit", "input", "error"]
    rows = [
        f"SMP U-Net {s['encoder']}, {s['num_classes']} classes, {s['size']}x{s['size']}; "
        f"latency median of {s['repeats']} single-image runs (round-robin), agreement on "
        f"{s['images']} {'synthetic-shape' if s.get('train_steps') else 'random-pixel'} images "
        f"({'reference trained ' + str(s['train_steps']) + ' steps' if s.get('train_steps') else 'random weights'}). "
        f"`{payload['results']['command']}`",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for e in payload["results"]["routes"]:
        latency = e.get("latency_ms") or {}
        cells = [e["route"], e["variant"], "yes" if e["succeeded"] else "no"]
        builtin = e.get("builtin_only")
        cells.append("-" if builtin is None else ("yes" if builtin else "no"))
        cells.append(_cell(e.get("size_bytes"), 1, 2**-20))
        cells += [_cell(latency.get(t)) for t in threads]
        agreement = e.get("agreement")
        cells.append("-" if agreement is None else f"{100 * agreement:.2f}%")
        cells += [_cell(e.get("max_abs_prob_diff"), 4), _cell(e.get("max_abs_logit_diff"), 4)]
        cells += [e.get("input") or "-", (e.get("error") or "").replace("|", "/")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows + ["", *notes(payload["results"])]) + "\n"


def notes(results: dict[str, Any]) -> list[str]:
    """What the table cannot say: gates, workarounds, exporters, versions."""
    lines = []
    keras_model = next(
        (e["keras_model_vs_pytorch"] for e in results["routes"] if e.get("keras_model_vs_pytorch")),
        None,
    )
    if keras_model:
        lines.append(
            f"- keras_seg's Keras model (before conversion) vs PyTorch: "
            f"{100 * keras_model['agreement']:.3f}% of pixels, max abs logit diff "
            f"{keras_model['max_abs_logit_diff']:.2e} (logits up to "
            f"{keras_model['max_abs_logit']:.0f})."
        )
    for e in results["routes"]:
        name = f"{e['route']} {e['variant']}"
        gate = e.get("keras_gate")
        if gate:
            verdict = (
                "passes"
                if gate["passed"]
                else "would refuse the file (kept here by allow_mismatch)"
            )
            lines.append(
                f"- {name}: keras_seg's export gate (file vs Keras model) {verdict}: "
                f"{100 * gate['agreement_with_keras']:.2f}% vs {100 * gate['threshold']:g}%."
            )
        if e["variant"] == "int8" and e.get("compute_ops"):
            floats = sorted(
                {k.split()[0] for k, n in e["operator_counts"].items() if k.endswith(" FLOAT32")}
                - {"QUANTIZE", "DEQUANTIZE"}
            )
            lines.append(
                f"- {name}: {e['float32_compute_ops']} of {e['compute_ops']} ops (QUANTIZE and "
                f"DEQUANTIZE aside) compute in float32{': ' + ', '.join(floats) if floats else ''}."
            )
        if e.get("offline_error"):
            lines.append(f"- {name}: offline, `{e['offline_error'][:160]}`; {e['workaround']}.")
        if e.get("run_error"):
            lines.append(f"- {name}: converts but does not run here: {e['run_error']}")
    onnx = (results["reference"].get("onnx") or {}).get("exporter")
    if onnx:
        lines.append(f"- ONNX for onnx2tf: {onnx}.")
    versions = {e["route"]: e["versions"] for e in results["routes"] if e.get("versions")}
    for route, found in versions.items():
        listed = ", ".join(f"{k} {v}" for k, v in found.items() if v)
        lines.append(f"- {route} venv: {listed}.")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the JSON report (and the table); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.reuse and not args.workdir:
        raise SystemExit("--reuse needs --workdir, the folder of the earlier run")
    if args.size < 32 or args.size % 32:
        raise SystemExit(f"--size must be a positive multiple of 32 (SMP), got {args.size}")
    for name in ("images", "calibration", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.train_steps and args.num_classes != 5:
        raise SystemExit(
            f"--train-steps trains on the 5 classes of the synthetic shapes; pass --num-classes 5, "
            f"got {args.num_classes}"
        )
    job = {k: getattr(args, k) for k in REFERENCE_KEYS}
    job.update(variants=list(args.variants), onnx="onnx2tf" in args.routes)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        reference, stored = reusable(workdir, job) if args.reuse else (None, [])
        if reference is None:
            reference = torch_step("reference", args.torch_python, job, workdir, args.timeout)
            if "error" in reference:
                raise SystemExit(f"PyTorch reference failed: {reference['error']}")
        print(f"PyTorch reference: {reference['params']:,} parameters", flush=True)
        data = dict(np.load(workdir / bridge_torch.REFERENCE))
        routes = {
            "keras_seg": lambda v: keras_seg_route(args, v, workdir, data),
            "litert_torch": lambda v: litert_route(args, v, workdir, job),
            "onnx2tf": lambda v: onnx2tf_route(args, v, workdir, reference.get("onnx")),
        }
        for route in args.routes:
            done = {e["variant"] for e in stored if e["route"] == route and e["succeeded"]}
            missing = [v for v in args.variants if v not in done]
            if missing:
                stored += routes[route](missing)
        latest = {(e["route"], e["variant"]): e for e in stored}  # a retry replaces a failure
        conversions = {"job": job, "reference": reference, "entries": list(latest.values())}
        (workdir / CONVERSIONS).write_text(json.dumps(conversions, indent=2))
        entries = [
            {**latest[key], "reproduce": reproduce_command(args, key[0])}
            for key in product(args.routes, args.variants)
        ]
        for entry in entries:
            state = "ok" if entry["succeeded"] else f"failed: {entry['error']}"
            print(f"{entry['route']} {entry['variant']}: {state}", flush=True)
        measure_files(entries, workdir, data, args)
    results = {
        "command": reproduce_command(args),
        "invoked": shlex.join(["python", "tools/bench_bridge.py", *(argv or sys.argv[1:])]),
        "reference": reference,
        "routes": entries,
    }
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "markdown", "workdir")}
    payload = write_report(args.output, "bridge", settings, results)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(payload))
    print(markdown_table(payload))
    print(f"Wrote {args.output}")
    return 0
