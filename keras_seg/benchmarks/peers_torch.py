"""The segmentation_models.pytorch worker of `keras-seg benchmark peers`, run by path.

Never imported by keras_seg and never run next to TensorFlow (torchvision, imported by timm
and SMP, crashes in a process where TensorFlow is loaded): the parent runs

    python -I peers_torch.py JOB_JSON

which builds the SMP model of the job (random weights, seed 0), warms every call up and then
answers timing requests on stdin/stdout (`common.serve_worker`, loaded by path). Inference is
`model(x)` under `torch.inference_mode()` after `model.eval()`; training is `model.train()`,
forward, cross-entropy ignoring 255, backward and an SGD (momentum 0.9) step. Precision
`bf16` runs under `torch.autocast("cpu", dtype=torch.bfloat16)` with model and input in
`channels_last`, PyTorch's fastest CPU setting; `float32` is the plain NCHW model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _common():
    path = Path(__file__).resolve().with_name("common.py")
    spec = importlib.util.spec_from_file_location("keras_seg_bench_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup(job: dict[str, Any], common) -> tuple[dict[str, Any], dict[str, Any]]:
    """Build the job's SMP model; return (info, {"case/path": (fn, images, None)})."""
    import segmentation_models_pytorch as smp
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    spec = job["spec"]
    model = getattr(smp, spec["class"])(
        encoder_weights=None, classes=job["num_classes"], **spec["kwargs"]
    )
    bf16 = job["precision"] == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=layout)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def tensors(case: dict[str, Any], seed: int):
        x, y = common.numpy_batch(case["batch"], case["size"], job["num_classes"], seed)
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=layout)
        return x, torch.from_numpy(y)

    calls: dict[str, Any] = {}
    if job["phase"] == "inference":
        model.eval()
        for name, case in job["cases"].items():
            x, _ = tensors(case, seed=0)

            def infer(x=x):
                with torch.inference_mode(), autocast():
                    return model(x)

            calls[f"{name}/eager"] = (infer, case["batch"], None)
    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
        for name, case in job["cases"].items():
            x, y = tensors(case, seed=1)

            def step(x=x, y=y):
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                return loss

            calls[f"{name}/eager"] = (step, case["batch"], None)
    info = {
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "memory_format": "channels_last" if bf16 else "contiguous",
        "autocast": "bfloat16" if bf16 else None,
        "versions": {
            name: metadata.version(name)
            for name in ("torch", "segmentation-models-pytorch", "timm", "numpy")
        }
        | {"torch_python": platform.python_version()},
    }
    return info, calls


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    common = _common()
    warmup, rss_calls = job["warmup"], job["rss_calls"]
    return common.serve_worker(lambda: setup(job, common), warmup, "eager", rss_calls)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
