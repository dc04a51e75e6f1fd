"""`keras-seg benchmark bridge`: an SMP U-Net to TFLite through keras_seg and through the peers.

The routes a user with a segmentation_models.pytorch checkpoint would try, on one model:

- keras_seg: `keras_seg.build("unet", num_classes=None, weights=CHECKPOINT)`, then
  `keras_seg.export.tflite` (fp32; int8 calibrated on random images like the check images).
- litert_torch: `litert_torch.convert(model, (x,))` (fp32; int8 by its PT2E recipe).
- onnx2tf: `torch.onnx.export`, then the `onnx2tf` command (fp32; int8 with `-oiqt`
  calibrated on the same images, its `*_integer_quant.tflite`: float in/out, int8 inside).

The model is `smp.Unet(encoder, encoder_weights=None, classes=N)` with a fixed seed and random
BatchNorm statistics, built in a PyTorch-only subprocess (`bridge_torch.py`), which also
computes PyTorch's logits on fixed random images. Peers live in their own virtual environments
(`--litert-venv`, `--onnx2tf-venv`; `--install` creates missing ones from `PEER_INSTALL`).
For every `.tflite` produced: builtin ops only (from the flatbuffer's op codes), file size,
single-image latency at each `--threads` (ai_edge_litert interpreter, XNNPACK; all files
timed round-robin in one loop, same harness and inputs), and agreement with PyTorch on the
check images: the share of pixels whose argmax class is PyTorch's, the largest probability
difference and, for files that output logits, the largest logit difference. Each file gets
the input it expects (layout, normalisation, dtype), written down in its row.

Example (final figures; `--quick` for a smoke run):
    python tools/bench_bridge.py --litert-venv /work/venv-litert --onnx2tf-venv /work/venv-onnx2tf
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_seg.benchmarks import bridge_torch
from keras_seg.benchmarks.common import write_report
from keras_seg.benchmarks.tflite_harness import measure_files

ROUTES = ("keras_seg", "litert_torch", "onnx2tf")
VARIANTS = ("fp32", "int8")
ENCODERS = ("resnet18", "resnet34", "resnet50")
# pip steps of the peers' virtual environments (`--install`); the versions measured.
PEER_INSTALL: dict[str, tuple[tuple[str, ...], ...]] = {
    "litert_torch": (("litert-torch==0.10.0", "segmentation-models-pytorch==0.6.0"),),
    "onnx2tf": (("onnx2tf==1.29.24",),),
}
PEER_PACKAGES = {
    "litert_torch": ("litert-torch", "torch", "torchao", "ai-edge-litert"),
    "onnx2tf": ("onnx2tf", "tensorflow", "onnx", "onnxruntime", "onnxsim", "ai-edge-litert"),
}
# onnx2tf downloads this sample file at every conversion of an image model (`-cind` or not).
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
QUICK = {"repeats": 3, "warmup": 1, "images": 2, "calibration": 4}
WORKER = Path(bridge_torch.__file__)


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
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    p.add_argument("--torch-python", default=sys.executable, help="has torch and SMP")
    p.add_argument("--litert-venv", default=".bridge-venvs/litert-torch")
    p.add_argument("--onnx2tf-venv", default=".bridge-venvs/onnx2tf")
    p.add_argument("--install", action="store_true", help="create missing peer venvs")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per subprocess")
    p.add_argument("--output", default="bench_results/bridge.json")
    p.add_argument("--markdown", default="bench_results/bridge.md")
    p.add_argument("--workdir", help="keep the checkpoint and .tflite files here")
    return p


def _one_line(text: str) -> str:
    """The last line of a log that names an error, else its last line (ANSI colours off)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if "Error" in line or "ERROR" in line]
    return ((errors or lines or [""])[-1])[:300]


def _run(argv: Sequence[str], log: Path, timeout: int, **kwargs) -> subprocess.CompletedProcess:
    """Run `argv` with its output in `log`; a timeout is a failed run, not an exception."""
    with open(log, "w") as f:
        try:
            return subprocess.run(
                list(argv), stdout=f, stderr=subprocess.STDOUT, timeout=timeout, **kwargs
            )
        except subprocess.TimeoutExpired:
            f.write(f"\nTimeoutError: no result after {timeout} s\n")
            return subprocess.CompletedProcess(argv, 124)


def torch_step(command: str, python: str, job: dict, workdir: Path, timeout: int) -> dict:
    """Run `bridge_torch.py COMMAND` in `python` (isolated: no TensorFlow, no script dir)."""
    job = {**job, "workdir": str(workdir), "result": str(workdir / f"{command}.json")}
    job_file = workdir / f"{command}_job.json"
    job_file.write_text(json.dumps(job))
    log = workdir / f"{command}.log"
    done = _run([python, "-I", str(WORKER), command, str(job_file)], log, timeout)
    result_file = Path(job["result"])
    if done.returncode != 0 or not result_file.exists():
        return {"error": _one_line(log.read_text()), "log": str(log)}
    return json.loads(result_file.read_text())


def venv_python(venv: str | Path, route: str, install: bool, log: Path) -> Path:
    """The venv's python; with `install`, the venv is created from `PEER_INSTALL` first."""
    venv = Path(venv)
    python = venv / "bin" / "python"
    if python.exists():
        return python
    if not install:
        raise FileNotFoundError(
            f"no virtual environment at {venv} for {route} (--install creates it, "
            f"--{route.split('_')[0]}-venv PATH names another)"
        )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for step in PEER_INSTALL[route]:
        done = _run([str(python), "-m", "pip", "install", *step], log, 3600)
        if done.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(step)} failed: {_one_line(log.read_text())}")
    return python


def venv_versions(python: Path, names: Sequence[str]) -> dict[str, str | None]:
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for n in sys.argv[1:]:\n    try: out[n] = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n] = None\nprint(json.dumps(out))"
    )
    done = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def _entry(route: str, variant: str, conversion: str, **extra) -> dict[str, Any]:
    return {
        "route": route,
        "variant": variant,
        "succeeded": False,
        "error": None,
        "conversion": conversion,
        "file": None,
        **extra,
    }


def keras_model_agreement(model, data: dict[str, np.ndarray]) -> dict[str, float]:
    """The Keras model itself (before any conversion) against PyTorch's logits."""
    logits = np.concatenate(
        [np.asarray(model(image[None].astype(np.float32))) for image in data["images"]]
    )
    reference = data["logits"]
    return {
        "agreement": float(np.mean(logits.argmax(-1) == reference.argmax(-1))),
        "max_abs_logit_diff": float(np.abs(logits - reference).max()),
        "max_abs_logit": float(np.abs(reference).max()),
    }


def keras_seg_route(args, workdir: Path, data: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Build from the SMP checkpoint and export through keras_seg's exporter (parity-gated)."""
    import keras_seg
    from keras_seg import export
    from keras_seg.export.verify import THRESHOLDS
    from keras_seg.export.verify import recorded_report

    checkpoint = workdir / bridge_torch.CHECKPOINT
    model = keras_seg.build("unet", num_classes=None, weights=str(checkpoint))
    keras_model = keras_model_agreement(model, data)
    print(
        f"keras_seg Keras model vs PyTorch: {100 * keras_model['agreement']:.3f}% of pixels, "
        f"max |logit diff| {keras_model['max_abs_logit_diff']:.2e}",
        flush=True,
    )
    entries = []
    for variant in args.variants:
        quantize = "int8" if variant == "int8" else None
        path = workdir / f"keras_seg_{variant}.tflite"
        conversion = (
            f'keras_seg.export.tflite(keras_seg.build("unet", num_classes=None, '
            f'weights="{checkpoint.name}"), "{path.name}", {quantize!r}'
            + (", calibration_images" if quantize else "")
            + f", input_size={args.size}, check_images=images)"
        )
        entry = _entry("keras_seg", variant, conversion, keras_model_vs_pytorch=keras_model)
        start = time.perf_counter()
        try:
            # The exporter's own gate compares the file with the Keras model and refuses it
            # below THRESHOLDS[kind]; the mismatch is allowed here so that a refused export
            # is still measured, and the gate's verdict is recorded below.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export.tflite(
                    model,
                    path,
                    quantize,
                    data["calibration"] if quantize else None,
                    input_size=args.size,
                    check_images=data["images"],
                    allow_mismatch=True,
                )
        except Exception as e:
            entry["error"] = bridge_torch.one_line(e)
        else:
            kind = quantize or "fp32"
            report = recorded_report(path)
            entry.update(succeeded=True, file=path.name)
            entry["keras_gate"] = {
                "kind": kind,
                "threshold": THRESHOLDS[kind],
                "agreement_with_keras": report.pixel_agreement,
                "passed": report.pixel_agreement >= THRESHOLDS[kind],
            }
        entry["convert_s"] = time.perf_counter() - start
        entries.append(entry)
    return entries


def litert_route(args, workdir: Path, job: dict) -> list[dict[str, Any]]:
    conversions = {
        "fp32": "litert_torch.convert(model, (x,)).export(path)",
        "int8": "torch.export -> prepare_pt2e(PT2EQuantizer(symmetric, per-channel, static)) "
        "-> calibrate -> convert_pt2e -> litert_torch.convert(m, (x,), quant_config=...)",
    }
    entries = [_entry("litert_torch", v, conversions[v]) for v in args.variants]
    try:
        python = venv_python(args.litert_venv, "litert_torch", args.install, workdir / "pip.log")
    except (FileNotFoundError, RuntimeError) as e:
        for entry in entries:
            entry["error"] = bridge_torch.one_line(e)
        return entries
    result = torch_step("litert", str(python), job, workdir, args.timeout)
    for entry in entries:
        entry["versions"] = result.get("versions")
        got = result.get(entry["variant"], {"error": result.get("error")})
        entry.update(error=got.get("error"), convert_s=got.get("convert_s"))
        if got.get("file"):
            entry.update(succeeded=True, file=got["file"])
    return entries


def onnx2tf_route(args, workdir: Path, onnx: dict | None) -> list[dict[str, Any]]:
    out = workdir / "onnx2tf"
    argv = ["onnx2tf", "-i", bridge_torch.ONNX, "-o", out.name]
    if "int8" in args.variants:
        # One run writes every file; -cind calibrates on our images (NHWC, 0..1, ImageNet).
        mean = json.dumps([[[(bridge_torch.MEAN / 255).round(5).tolist()]]])
        std = json.dumps([[[(bridge_torch.STD / 255).round(5).tolist()]]])
        argv += ["-oiqt", "-qt", "per-channel", "-cind", "input", "calibration.npy", mean, std]
    names = {"fp32": "smp_unet_float32.tflite", "int8": "smp_unet_integer_quant.tflite"}
    conversion = f"torch.onnx.export, then {shlex.join(argv)}"
    entries = [_entry("onnx2tf", v, conversion, onnx_export=onnx) for v in args.variants]
    if not onnx or not onnx.get("succeeded"):
        for entry in entries:
            entry["error"] = f"torch.onnx.export failed: {(onnx or {}).get('error')}"
        return entries
    try:
        python = venv_python(args.onnx2tf_venv, "onnx2tf", args.install, workdir / "pip.log")
    except (FileNotFoundError, RuntimeError) as e:
        for entry in entries:
            entry["error"] = bridge_torch.one_line(e)
        return entries
    data = np.load(workdir / bridge_torch.REFERENCE)
    np.save(workdir / "calibration.npy", data["calibration"].astype(np.float32) / 255)
    # As in an activated venv: onnx2tf calls `onnxsim` by name.
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    done = _run(argv, workdir / "onnx2tf.log", args.timeout, cwd=workdir, env=env)
    first_error = None
    log_text = (workdir / "onnx2tf.log").read_text()
    if done.returncode != 0 and ONNX2TF_SAMPLE in log_text:
        # Offline, that download fails; a stand-in file of random pixels (0..1) in the working
        # directory is what onnx2tf reads instead.
        first_error = _one_line(log_text)
        sample = np.random.default_rng(args.seed + 3).random((20, 128, 128, 3), np.float32)
        np.save(workdir / ONNX2TF_SAMPLE, sample)
        start = time.perf_counter()
        done = _run(argv, workdir / "onnx2tf.log", args.timeout, cwd=workdir, env=env)
        log_text = (workdir / "onnx2tf.log").read_text()
    seconds = time.perf_counter() - start
    versions = venv_versions(python, PEER_PACKAGES["onnx2tf"])
    for entry in entries:
        entry.update(versions=versions, convert_s=seconds, convert_s_note="one run, all files")
        if first_error:
            entry["offline_error"] = first_error
            entry["workaround"] = f"a stand-in {ONNX2TF_SAMPLE} (random pixels) in the cwd"
        file = out / names[entry["variant"]]
        if file.exists():
            entry.update(succeeded=True, file=str(file.relative_to(workdir)))
        else:
            entry["error"] = _one_line(log_text) if done.returncode else f"{file.name} not written"
    return entries


def reproduce_command(args, route: str | None = None) -> str:
    argv = ["python", "tools/bench_bridge.py", "--routes", *([route] if route else args.routes)]
    argv += ["--variants", *args.variants, "--encoder", args.encoder]
    argv += ["--num-classes", str(args.num_classes), "--size", str(args.size)]
    argv += ["--images", str(args.images), "--calibration", str(args.calibration)]
    argv += ["--threads", *map(str, args.threads), "--repeats", str(args.repeats)]
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
        f"{s['images']} random images. `{payload['results']['command']}`",
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
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the JSON report (and the table); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.size < 32 or args.size % 32:
        raise SystemExit(f"--size must be a positive multiple of 32 (SMP), got {args.size}")
    for name in ("images", "calibration", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    job = {
        k: getattr(args, k)
        for k in ("seed", "encoder", "num_classes", "size", "images", "calibration", "variants")
    }
    job["onnx"] = "onnx2tf" in args.routes
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        reference = torch_step("reference", args.torch_python, job, workdir, args.timeout)
        if "error" in reference:
            raise SystemExit(f"PyTorch reference failed: {reference['error']}")
        print(f"PyTorch reference: {reference['params']:,} parameters", flush=True)
        data = dict(np.load(workdir / bridge_torch.REFERENCE))
        entries = []
        if "keras_seg" in args.routes:
            entries += keras_seg_route(args, workdir, data)
        if "litert_torch" in args.routes:
            entries += litert_route(args, workdir, job)
        if "onnx2tf" in args.routes:
            entries += onnx2tf_route(args, workdir, reference.get("onnx"))
        for entry in entries:
            entry["reproduce"] = reproduce_command(args, entry["route"])
            state = "ok" if entry["succeeded"] else f"failed: {entry['error']}"
            print(f"{entry['route']} {entry['variant']}: {state}", flush=True)
        measure_files(entries, workdir, data, args)
    results = {"command": reproduce_command(args), "reference": reference, "routes": entries}
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "markdown", "workdir")}
    payload = write_report(args.output, "bridge", settings, results)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(payload))
    print(markdown_table(payload))
    print(f"Wrote {args.output}")
    return 0
