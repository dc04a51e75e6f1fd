"""keras_seg against peer libraries on the same architecture, input and machine, in one run.

Peers: keras-hub (same TensorFlow/Keras, measured by the very function keras_seg's suite
uses) and segmentation_models.pytorch on CPU PyTorch. They live in their own virtual
environment (default `.peers-venv/` in the repository root, created and filled on first use;
`--venv PATH` to use another, `--no-install` to use it as it is), never in keras_seg's.
Every implementation runs in its own subprocess: inference images/s at `--size` for each
`--batch-sizes`, training images/s (real optimizer steps: SGD momentum 0.9, cross-entropy
ignoring 255) at `--train-size` with `--train-batch-size`; random weights, the median of
`--repeats` passes after two warm-up passes. The report gives keras_seg / peer per column.

Example:
    python tools/bench_peers.py --output bench_results/peers.json --markdown bench_results/peers.md
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# pip steps for the peers' venv (torch: the CPU wheel; torchvision without its CUDA deps).
PEER_INSTALL: tuple[tuple[str, ...], ...] = (
    ("torch==2.13.0",),
    ("--no-deps", "torchvision==0.28.0"),
    ("segmentation-models-pytorch==0.6.0", "timm==1.0.31", "huggingface-hub", "safetensors"),
    ("tqdm", "pillow", "pyyaml"),
    ("tensorflow==2.21.0", "keras==3.15.1", "keras-hub==0.32.0"),
)

# Shared rows: the same architecture in each library. `stride` is the output stride at which
# the last stage (and ASPP) runs; `spec` says how the worker builds it.
ROWS: dict[str, dict[str, Any]] = {
    "deeplabv3plus_resnet50": {
        "title": "DeepLabV3+ ResNet-50",
        "impls": {
            "keras_seg": {
                "stride": 16,
                "note": "separable ASPP and decoder, as SMP",
                "spec": {
                    "model": "deeplabv3plus:resnet50",
                    "kwargs": {"output_stride": 16, "separable": True},
                },
            },
            "smp": {
                "stride": 16,
                "spec": {
                    "class": "DeepLabV3Plus",
                    "kwargs": {"encoder_name": "resnet50", "encoder_output_stride": 16},
                },
            },
            "keras_hub": {
                "stride": 32,
                "note": "ResNet50-vd; ASPP at stride 32, 1x1 decoder",
                "spec": {"builder": "deeplabv3_resnet50_vd"},
            },
        },
    },
    "unet_resnet34": {
        "title": "U-Net ResNet-34",
        "impls": {
            "keras_seg": {"stride": 32, "spec": {"model": "unet:resnet34", "kwargs": {}}},
            "smp": {
                "stride": 32,
                "spec": {"class": "Unet", "kwargs": {"encoder_name": "resnet34"}},
            },
        },
    },
}


def _common():
    # keras_seg/benchmarks/common.py is stdlib-only; loading it by path keeps TensorFlow
    # (imported by the keras_seg package) out of the PyTorch worker.
    spec = importlib.util.spec_from_file_location(
        "_bench_common", REPO / "keras_seg/benchmarks/common.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numpy_batch(batch: int, size: int, num_classes: int, seed: int = 0):
    """NHWC float32 pixels 0..255 and int64 labels with ~5% ignore (255)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, num_classes, (batch, size, size))
    y[rng.random(y.shape) < 0.05] = 255
    return x, y


def measure_torch(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """segmentation_models.pytorch model: params, inference and training images/s."""
    # torchvision 0.28's compiled meta registrations need CUDA libraries; SMP does not use them.
    sys.modules["torchvision._meta_registrations"] = types.ModuleType(
        "torchvision._meta_registrations"
    )
    import segmentation_models_pytorch as smp
    import torch

    time_median = _common().time_median
    torch.manual_seed(0)
    torch.set_num_threads(settings["threads"])
    model = getattr(smp, spec["class"])(
        encoder_weights=None, classes=settings["num_classes"], **spec["kwargs"]
    )
    result: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    result["trainable_params"] = result["params"]
    model.eval()
    inference = {}
    for batch in settings["batch_sizes"]:
        x, _ = numpy_batch(batch, settings["size"], settings["num_classes"])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        with torch.inference_mode():
            timing = time_median(lambda x=x: model(x), repeats=settings["repeats"], warmup=2)
        inference[str(batch)] = {**timing, "images_per_s": batch / timing["median_s"]}
    result["inference"] = inference
    result["peak_rss_inference_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    batch = settings["train_batch_size"]
    x, y = numpy_batch(batch, settings["train_size"], settings["num_classes"], seed=1)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(y)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    timing = time_median(step, repeats=settings["repeats"], warmup=2)
    result["training"] = {**timing, "images_per_s": batch / timing["median_s"]}
    result["peak_rss_training_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def deeplabv3_resnet50_vd(num_classes: int):
    """keras-hub DeepLabV3ImageSegmenter on a ResNet50-vd, as its presets configure it."""
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


def measure_keras_hub(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """keras-hub model, measured by keras_seg's own `measure_keras_model`."""
    sys.path.insert(0, str(REPO))
    import keras

    from keras_seg.benchmarks.models import measure_keras_model

    keras.utils.set_random_seed(0)
    model = {"deeplabv3_resnet50_vd": deeplabv3_resnet50_vd}[spec["builder"]](
        settings["num_classes"]
    )
    result = {
        "params": model.count_params(),
        "trainable_params": sum(math.prod(v.shape) for v in model.trainable_weights),
    }
    return {**result, **measure_keras_model(model, settings)}


def _worker(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    measure = {"smp": measure_torch, "keras_hub": measure_keras_hub}[job["library"]]
    row = measure(job["spec"], job["settings"])
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(job_path).with_name("row.json").write_text(json.dumps(row))
    return 0


def ensure_venv(venv: Path, install: bool) -> Path:
    """The peers' Python, creating the venv and installing `PEER_INSTALL` if asked."""
    python = venv / "bin" / "python"
    if install:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for step in PEER_INSTALL:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *step], check=True)
    elif not python.exists():
        raise SystemExit(f"No Python at {python}; drop --no-install to create the peers' venv")
    return python


def run_peer(python: Path, library: str, spec: dict, settings: dict) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp, "job.json")
        job.write_text(json.dumps({"library": library, "spec": spec, "settings": settings}))
        done = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--worker", str(job)],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        row_path = job.with_name("row.json")
        if done.returncode != 0 or not row_path.exists():
            return {"error": f"exit {done.returncode}: {(done.stdout + done.stderr)[-3000:]}"}
        return json.loads(row_path.read_text())


def run_keras_seg(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """keras_seg through its own suite's isolated worker (no TFLite, no FLOP count)."""
    sys.path.insert(0, str(REPO))
    from keras_seg.benchmarks import models as bench

    name = spec["model"].split(":")[0]
    entry = bench.parse_entry(spec["model"], None, {name: spec["kwargs"]})
    suite = {**settings, "tflite": False, "small": False, "tflite_threads": 1, "flops": False}
    return bench._run_isolated(entry, suite)


def ratios(rows: dict[str, dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """Add `ratio` = keras_seg / this implementation, per column, to every peer."""
    for row in rows.values():
        ours = row["impls"].get("keras_seg")
        for impl in row["impls"].values():
            if ours is None or "error" in impl or "error" in ours:
                continue
            impl["ratio"] = {c: _value(ours, c) / _value(impl, c) for c, _ in columns}


def _value(impl: dict[str, Any], column: str) -> float:
    phase, _, batch = column.partition(":")
    return impl[phase][batch]["images_per_s"] if batch else impl[phase]["images_per_s"]


def markdown(payload: dict[str, Any], columns: list[tuple[str, str]]) -> str:
    header = ["architecture", "library", "output stride", "params (M)"]
    header += [title for _, title in columns] + ["keras_seg / this"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in payload["results"]["rows"].values():
        for library, impl in row["impls"].items():
            stride = f"{impl['stride']}" + (f" ({impl['note']})" if impl.get("note") else "")
            cells = [row["title"], library, stride]
            if "error" in impl:
                cells += ["error (see JSON)"] + ["-"] * (len(header) - 4)
            else:
                cells += [f"{impl['trainable_params'] / 1e6:.2f}"]
                cells += [f"{_value(impl, c):.2f}" for c, _ in columns]
                ratio = impl.get("ratio")
                cells += [
                    "-"
                    if library == "keras_seg" or not ratio
                    else " / ".join(f"{ratio[c]:.2f}" for c, _ in columns)
                ]
            lines.append("| " + " | ".join(cells) + " |")
    s, m = payload["settings"], payload["machine"]
    lines += [
        "",
        f"{m.get('cpu_model')} ({m.get('cpu_count')} cores), {s['threads']} threads for PyTorch; "
        f"{s['num_classes']} classes, random weights, {s['precision']}, jit_compile={s['jit']}, "
        f"median of {s['repeats']}; params are trainable parameters (PyTorch's count).",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", default=str(REPO / ".peers-venv"), help="the peers' virtualenv")
    p.add_argument("--install", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=sorted(ROWS))
    p.add_argument("--libraries", nargs="+", default=["keras_seg", "smp", "keras_hub"])
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--train-batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16"), default="float32")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--output", default=str(REPO / "bench_results/peers.json"))
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    settings = {
        k: getattr(args, k)
        for k in ("num_classes", "size", "batch_sizes", "train_size", "train_batch_size",
                  "repeats", "threads", "precision", "jit")
    }  # fmt: skip
    columns = [(f"inference:{b}", f"infer {args.size} bs{b} img/s") for b in args.batch_sizes]
    columns += [("training", f"train {args.train_size} bs{args.train_batch_size} img/s")]
    peers = [lib for lib in args.libraries if lib != "keras_seg"]
    python = ensure_venv(Path(args.venv), args.install) if peers else None
    rows: dict[str, dict[str, Any]] = {}
    for key in args.rows:
        impls = {}
        for library, impl in ROWS[key]["impls"].items():
            if library not in args.libraries:
                continue
            print(f"{ROWS[key]['title']}: {library} ...", file=sys.stderr, flush=True)
            if library == "keras_seg":
                figures = run_keras_seg(impl["spec"], settings)
            else:
                figures = run_peer(python, library, impl["spec"], settings)
            impls[library] = {**{k: v for k, v in impl.items() if k != "spec"}, **figures}
            print(json.dumps(impls[library])[:600], file=sys.stderr)
        rows[key] = {"title": ROWS[key]["title"], "impls": impls}
    ratios(rows, columns)
    common = _common()
    settings["peer_versions"] = _peer_versions(python) if python else {}
    payload = common.write_report(args.output, "peers", settings, {"rows": rows})
    table = markdown(payload, columns)
    print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    return 1 if any("error" in i for r in rows.values() for i in r["impls"].values()) else 0


def _peer_versions(python: Path) -> dict[str, str]:
    code = (
        "import json; from importlib import metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('torch', 'segmentation-models-pytorch', 'timm', 'keras-hub', 'keras', 'tensorflow')}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}


if __name__ == "__main__":
    sys.exit(main())
