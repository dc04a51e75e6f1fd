"""The PyTorch half of `keras-seg benchmark profile`: an SMP model under `torch.profiler`.

Run by path (`python -P profile_torch.py JOB.json`) in its own interpreter: it imports only the
standard library and PyTorch, never TensorFlow (torch/timm segfault in a process that has
imported TensorFlow). JOB.json holds `{"class", "kwargs", "num_classes", "size", "batch",
"steps", "threads", "top", "precision", "train", "train_size", "train_batch"}`; the result is written beside it as `torch_profile.json`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import types
from pathlib import Path

# aten op -> the category that keras_seg's TensorFlow profile uses for the same work.
ATEN_CATEGORIES = {
    "conv": ("conv", "mkldnn_convolution", "thnn_conv", "_convolution"),
    "batch_norm": ("batch_norm", "native_batch_norm", "_batch_norm_impl_index"),
    "activation": ("relu", "clamp", "hardtanh", "sigmoid"),
    "concat": ("aten::cat",),
    "resize": ("upsample", "interpolate", "grid_sampler"),
    "pooling": ("pool", "adaptive_avg_pool", "mean"),
    "add": ("aten::add",),
    "pad/crop": ("pad", "slice", "narrow"),
}


def category(op: str) -> str:
    for name, keys in ATEN_CATEGORIES.items():
        if any(key in op for key in keys):
            return name
    return "other"


def _summary(prof, steps: int, times: list[float], top: int) -> dict:
    rows = [
        {
            "type": event.key,
            "occurrences": event.count // steps,
            "self_ms": event.self_cpu_time_total / 1e3 / steps,
        }
        for event in prof.key_averages()
        if event.self_cpu_time_total > 0
    ]
    total = sum(r["self_ms"] for r in rows)
    for row in rows:
        row["share"] = row["self_ms"] / total
        row["category"] = category(row["type"])
    rows.sort(key=lambda r: -r["self_ms"])
    categories: dict[str, float] = {}
    for row in rows:
        categories[row["category"]] = categories.get(row["category"], 0.0) + row["self_ms"]
    return {
        "step_ms_unprofiled": 1e3 * statistics.median(times),
        "profiled_self_ms": total,
        # Autograd's share: every aten backward op carries "backward" in its name.
        "backward_self_ms": sum(r["self_ms"] for r in rows if "backward" in r["type"]),
        "categories": {
            k: {"self_ms": v, "share": v / total}
            for k, v in sorted(categories.items(), key=lambda kv: -kv[1])
        },
        "top_ops": rows[:top],
    }


def _profiled(fn, steps: int, top: int) -> dict:
    import torch

    for _ in range(2):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    return _summary(prof, steps, times, top)


def profile(job: dict) -> dict:
    # torchvision's compiled meta registrations need CUDA libraries; SMP does not use them.
    sys.modules["torchvision._meta_registrations"] = types.ModuleType(
        "torchvision._meta_registrations"
    )
    import contextlib

    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    bf16 = job.get("precision") == "bf16"
    model = getattr(smp, job["class"])(
        encoder_weights=None, classes=job["num_classes"], **job["kwargs"]
    )
    layout = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=layout)

    def autocast():
        if bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    x = (torch.rand(job["batch"], 3, job["size"], job["size"]) * 255).to(memory_format=layout)
    model.eval()

    def infer():
        with torch.inference_mode(), autocast():
            model(x)

    phases = {"inference": _profiled(infer, job["steps"], job["top"])}
    if job.get("train"):
        size, batch = job["train_size"], job["train_batch"]
        xt = (torch.rand(batch, 3, size, size) * 255).to(memory_format=layout)
        yt = torch.randint(0, job["num_classes"], (batch, size, size))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
        model.train()

        def step():
            optimizer.zero_grad()
            with autocast():
                loss = loss_fn(model(xt).float(), yt)
            loss.backward()
            optimizer.step()

        phases["training"] = _profiled(step, job["steps"], job["top"])
    return {
        "library": f"segmentation_models_pytorch {smp.__version__}, torch {torch.__version__}",
        "model": f"smp.{job['class']}({job['kwargs']})",
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast, channels_last" if bf16 else "float32",
        "phases": phases,
    }


if __name__ == "__main__":
    job_path = Path(sys.argv[1])
    result = profile(json.loads(job_path.read_text()))
    job_path.with_name("torch_profile.json").write_text(json.dumps(result, indent=2))
