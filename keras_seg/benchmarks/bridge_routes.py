"""How each route of `keras-seg benchmark bridge` turns the SMP checkpoint into `.tflite` files.

Each route returns one entry per variant: `succeeded`, `error` (one line), `conversion` (what
was called), `file` (relative to the work folder), `convert_s` and what else it knows. The
peers run in their own virtual environments, as subprocesses whose output goes to a log in
the work folder; keras_seg runs in this process, through its exporter as a user calls it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_seg.benchmarks import bridge_torch

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
WORKER = Path(bridge_torch.__file__)


def log_error_line(text: str) -> str:
    """The last line of a log that names an error, else its last line (ANSI colours off)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if "Error" in line or "ERROR" in line]
    return ((errors or lines or [""])[-1])[:300]


def run_logged(
    argv: Sequence[str], log: Path, timeout: int, **kwargs
) -> subprocess.CompletedProcess:
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
    done = run_logged([python, "-I", str(WORKER), command, str(job_file)], log, timeout)
    result_file = Path(job["result"])
    if done.returncode != 0 or not result_file.exists():
        return {"error": log_error_line(log.read_text()), "log": str(log)}
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
        done = run_logged([str(python), "-m", "pip", "install", *step], log, 3600)
        if done.returncode != 0:
            raise RuntimeError(
                f"pip install {' '.join(step)} failed: {log_error_line(log.read_text())}"
            )
    return python


def venv_versions(python: Path, names: Sequence[str]) -> dict[str, str | None]:
    """Versions of `names` installed in the venv of `python`, read from its site-packages."""
    from importlib import metadata

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    paths = [str(p) for p in python.parent.parent.glob("lib/python*/site-packages")]
    found = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions(path=paths)}
    return {name: found.get(canonical(name)) for name in names}


def new_entry(route: str, variant: str, conversion: str, **extra) -> dict[str, Any]:
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


def keras_seg_route(
    args, variants: Sequence[str], workdir: Path, data: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
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
    for variant in variants:
        quantize = "int8" if variant == "int8" else None
        path = workdir / f"keras_seg_{variant}.tflite"
        conversion = (
            f'keras_seg.export.tflite(keras_seg.build("unet", num_classes=None, '
            f'weights="{checkpoint.name}"), "{path.name}", {quantize!r}'
            + (", calibration_images" if quantize else "")
            + f", input_size={args.size}, check_images=images)"
        )
        entry = new_entry("keras_seg", variant, conversion, keras_model_vs_pytorch=keras_model)
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


def litert_route(args, variants: Sequence[str], workdir: Path, job: dict) -> list[dict[str, Any]]:
    conversions = {
        "fp32": "litert_torch.convert(model, (x,)).export(path)",
        "int8": "torch.export -> prepare_pt2e(PT2EQuantizer(symmetric, per-channel, static)) "
        "-> calibrate -> convert_pt2e -> litert_torch.convert(m, (x,), quant_config=...)",
    }
    entries = [new_entry("litert_torch", v, conversions[v]) for v in variants]
    try:
        python = venv_python(args.litert_venv, "litert_torch", args.install, workdir / "pip.log")
    except (FileNotFoundError, RuntimeError) as e:
        for entry in entries:
            entry["error"] = bridge_torch.one_line(e)
        return entries
    job = {**job, "variants": list(variants)}
    result = torch_step("litert", str(python), job, workdir, args.timeout)
    for entry in entries:
        entry["versions"] = result.get("versions")
        got = result.get(entry["variant"], {"error": result.get("error")})
        entry.update(error=got.get("error"), convert_s=got.get("convert_s"))
        if got.get("file"):
            entry.update(succeeded=True, file=got["file"])
    return entries


def onnx2tf_route(
    args, variants: Sequence[str], workdir: Path, onnx: dict | None
) -> list[dict[str, Any]]:
    out = workdir / "onnx2tf"
    argv = ["onnx2tf", "-i", bridge_torch.ONNX, "-o", out.name]
    if "int8" in variants:
        # One run writes every file; -cind calibrates on our images (NHWC, 0..1, ImageNet).
        mean = json.dumps([[[(bridge_torch.MEAN.astype(float) / 255).round(5).tolist()]]])
        std = json.dumps([[[(bridge_torch.STD.astype(float) / 255).round(5).tolist()]]])
        argv += ["-oiqt", "-qt", "per-channel", "-cind", "input", "calibration.npy", mean, std]
    names = {"fp32": "smp_unet_float32.tflite", "int8": "smp_unet_integer_quant.tflite"}
    conversion = f"torch.onnx.export, then {shlex.join(argv)}"
    entries = [new_entry("onnx2tf", v, conversion, onnx_export=onnx) for v in variants]
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
    done = run_logged(argv, workdir / "onnx2tf.log", args.timeout, cwd=workdir, env=env)
    first_error = None
    log_text = (workdir / "onnx2tf.log").read_text()
    if done.returncode != 0 and ONNX2TF_SAMPLE in log_text:
        # Offline, that download fails; a stand-in file of random pixels (0..1) in the working
        # directory is what onnx2tf reads instead.
        first_error = log_error_line(log_text)
        sample = np.random.default_rng(args.seed + 3).random((20, 128, 128, 3), np.float32)
        np.save(workdir / ONNX2TF_SAMPLE, sample)
        start = time.perf_counter()
        done = run_logged(argv, workdir / "onnx2tf.log", args.timeout, cwd=workdir, env=env)
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
            entry["error"] = (
                log_error_line(log_text) if done.returncode else f"{file.name} not written"
            )
    return entries
