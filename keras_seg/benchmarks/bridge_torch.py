"""The PyTorch side of `keras-seg benchmark bridge`, run by path in a PyTorch interpreter.

Never imported by keras_seg and never run next to TensorFlow: torchvision (imported by timm
and SMP) crashes in a process where TensorFlow is loaded. Needs torch, numpy and
segmentation_models_pytorch, plus litert-torch for `litert`. Each command reads a job JSON
and writes its result JSON to `job["result"]`:

    python -I bridge_torch.py reference JOB.json  # SMP U-Net, checkpoint, logits, ONNX
    python -I bridge_torch.py litert JOB.json     # the same model through litert-torch

`reference` builds `smp.Unet(encoder, encoder_weights=None, classes=N)` with a fixed seed and,
with `train_steps`, trains it that many AdamW steps on keras_seg's synthetic shapes (96x96
crops, batch 8; check and calibration images are then shapes too), else gives it random
BatchNorm statistics (random pixels as images: an extreme case for int8). It saves its state
dict, generates the check and calibration images (uint8 pixels, NHWC), runs PyTorch on the check images (normalised with the
ImageNet statistics, NCHW, as SMP expects) and exports ONNX with `torch.onnx.export`.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np

# torchvision's ImageNet statistics in 0..255 pixel units, as keras_seg normalises inside.
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
CHECKPOINT = "smp_unet.pth"
REFERENCE = "reference.npz"
ONNX = "smp_unet.onnx"


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC pixels -> float32 NCHW, ImageNet-normalised (what SMP models take)."""
    x = (images.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def build_model(job: dict, checkpoint: Path | None = None):
    """The SMP U-Net of the job: seeded random weights and BatchNorm statistics, or loaded."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(job["seed"])
    model = smp.Unet(job["encoder"], encoder_weights=None, classes=job["num_classes"])
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
        return model.eval()
    if job["train_steps"]:
        return model
    return _by_path("weights/reference.py").randomize(model, job["seed"])


def _by_path(relative: str):
    """A keras_seg module that needs neither TensorFlow nor the package (the shape generator,
    the reference runner), loaded by path: importing keras_seg would load TensorFlow next to
    torchvision."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(f"keras_seg_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _synthetic():
    return _by_path("data/synthetic.py")


def train(model, job: dict) -> None:
    """`job["train_steps"]` AdamW steps (lr 1e-3) of cross-entropy on synthetic shapes."""
    import torch

    x, y = _synthetic().make_dataset(128, size=96, seed=job["seed"] + 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(job["seed"])
    model.train()
    for _ in range(job["train_steps"]):
        batch = rng.choice(len(x), 8, replace=False)
        logits = model(torch.from_numpy(normalise(x[batch])))
        loss = torch.nn.functional.cross_entropy(
            logits, torch.from_numpy(y[batch].astype(np.int64))
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def make_images(job: dict) -> tuple[np.ndarray, np.ndarray]:
    """`[N, size, size, 3]` uint8 check and calibration images: synthetic shapes for a trained
    model, random pixels otherwise."""
    size = job["size"]
    if job["train_steps"]:
        make = _synthetic().make_dataset
        check = make(job["images"], size=size, seed=job["seed"] + 1)[0]
        return check, make(job["calibration"], size=size, seed=job["seed"] + 2)[0]
    check = np.random.default_rng(job["seed"] + 1).integers(0, 256, (job["images"], size, size, 3))
    calib = np.random.default_rng(job["seed"] + 2)
    calib = calib.integers(0, 256, (job["calibration"], size, size, 3))
    return check.astype(np.uint8), calib.astype(np.uint8)


def _versions(*names: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def reference(job: dict) -> dict:
    import torch

    out = Path(job["workdir"])
    model = build_model(job)
    if job["train_steps"]:
        train(model, job)
    torch.save(model.state_dict(), out / CHECKPOINT)
    images, calibration = make_images(job)
    with torch.inference_mode():
        logits = [model(torch.from_numpy(normalise(image[None]))).numpy() for image in images]
    logits = np.concatenate(logits).transpose(0, 2, 3, 1)  # NHWC, as the TFLite files
    np.savez(out / REFERENCE, images=images, calibration=calibration, logits=logits)
    result = {
        "checkpoint": CHECKPOINT,
        "reference": REFERENCE,
        "params": sum(p.numel() for p in model.parameters()),
        "max_abs_logit": float(np.abs(logits).max()),
        "versions": _versions("torch", "segmentation-models-pytorch", "timm", "onnx"),
    }
    if job.get("onnx"):
        result["onnx"] = export_onnx(model, images[:1], out / ONNX)
    return result


def export_onnx(model, image: np.ndarray, path: Path) -> dict:
    """`torch.onnx.export` as a user calls it; the TorchScript exporter if dynamo can't run."""
    import torch

    args = (torch.from_numpy(normalise(image)),)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    start = time.perf_counter()
    try:
        torch.onnx.export(model, args, str(path), **names)
        exporter = "torch.onnx.export (dynamo)"
    except Exception as e:  # e.g. the dynamo exporter needs onnxscript
        first = one_line(e)
        try:
            torch.onnx.export(model, args, str(path), dynamo=False, **names)
        except Exception as e2:
            return {"succeeded": False, "error": one_line(e2), "dynamo_error": first}
        exporter = f"torch.onnx.export(dynamo=False) (dynamo: {first})"
    return {
        "succeeded": True,
        "file": path.name,
        "exporter": exporter,
        "export_s": time.perf_counter() - start,
    }


def litert(job: dict) -> dict:
    """Convert with litert-torch: float32, and int8 by PT2E static quantization."""
    import torch

    out = Path(job["workdir"])
    result = {"versions": _versions("litert-torch", "torch", "torchao", "ai-edge-litert")}
    try:
        import litert_torch
    except Exception as e:
        return {**result, "error": one_line(e)}
    model = build_model(job, out / CHECKPOINT)
    data = np.load(out / REFERENCE)
    sample = (torch.from_numpy(normalise(data["images"][:1])),)
    for variant in job["variants"]:
        path = out / f"litert_torch_{variant}.tflite"
        start = time.perf_counter()
        try:
            if variant == "int8":
                module, quant = _pt2e_int8(model, sample, data["calibration"])
                edge = litert_torch.convert(module, sample, quant_config=quant)
            else:
                edge = litert_torch.convert(model, sample)
            edge.export(str(path))
            result[variant] = {"file": path.name, "convert_s": time.perf_counter() - start}
        except Exception as e:
            traceback.print_exc()
            result[variant] = {"error": one_line(e), "convert_s": time.perf_counter() - start}
    return result


def _pt2e_int8(model, sample, calibration: np.ndarray):
    """litert-torch's documented PT2E recipe: per-channel symmetric, static activations."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    module = torch.export.export(model, sample).module()
    module = quantize_pt2e.prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for image in calibration:
            module(torch.from_numpy(normalise(image[None])))
    module = quantize_pt2e.convert_pt2e(module, fold_quantize=False)
    return module, QuantConfig(pt2e_quantizer=quantizer)


COMMANDS = {"reference": reference, "litert": litert}

if __name__ == "__main__":
    command, job_file = sys.argv[1], Path(sys.argv[2])
    job = json.loads(job_file.read_text())
    result = COMMANDS[command](job)
    Path(job["result"]).write_text(json.dumps(result, indent=2))
