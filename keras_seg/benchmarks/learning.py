"""`keras-seg benchmark isbi`: does keras_seg learn as fast as segmentation_models.pytorch?

One recipe trained from scratch by both libraries, seeds alternating (ks0, smp0, ks1, smp1,
...), on ISBI 2012 membranes in the `folder` layout of `zoo_configs/unet_isbi2012.yaml`
(`DATA/image/N.png`, `DATA/label/N.png` with 0 = membrane, 255 = cell -> classes 0 and 1,
`DATA/train.txt`, `DATA/val.txt`; without the two lists, e.g. the bare 30 slices, the last
`--val-count` stems in numeric order validate and the others train, and the lists are
written to a work folder of links, never into DATA):

- model: U-Net ResNet-34, random init; keras_seg `unet` with `backbone: resnet34` and
  `head_kernel_size: 3` is SMP's `Unet("resnet34", encoder_weights=None, classes=2)` layer
  for layer (24.44M parameters, the architecture the SMP parity tests load weights into);
- AdamW lr 1e-3, poly(0.9) decay to 0 over the steps, weight decay 1e-4 on every parameter
  (torch's `AdamW(model.parameters())`; keras_seg `train.decay_norm_and_bias: true`);
- random `--crop` crops (no rescaling), random horizontal and vertical flips, batch `--batch`,
  `--steps` steps, cross-entropy averaged over the non-ignored pixels (label 255);
- validation mIoU and pixel accuracy on the whole 512x512 validation slices every
  `--eval-every` steps and after the last (the final model's scores are the result).

keras_seg runs the user path: `keras_seg.training.train` on a generated config (written
beside the run as `config.yaml`) in a fresh interpreter, with `data.cache: true` (decoded
images kept in memory, its tf.data pipeline cropping and flipping), in
`keras-seg train`'s environment (`training_environment`); its final scores are the
validation after the last step (`history.json`'s last `val_mean_iou` and
`val_pixel_accuracy`: the whole validation slices, as `keras_seg.inference.evaluate` scores
them, which the trainer tests check), so each side evaluates the final model once. It also
writes what `keras-seg train` writes (checkpoints, `final.keras`, TensorBoard logs), which
SMP's loop does not. SMP runs a plain PyTorch loop in its own
interpreter (`learning_torch.py`, which says exactly what it does: images preloaded as arrays,
numpy crops and flips). Wall time is each subprocess from start to exit (imports, data,
model, training, evaluations); training time is the training loop with its periodic
validations, as each side measures it.

Defaults are sized for a 2-core CPU: batch 4, 256x256 crops, 150 steps, validation every 50
steps; a U-Net R34 training step of batch 4 at 256 takes about 1.4 s there, so one run is
about 4-5 minutes and the 3 seeds x 2 libraries about 25-30 minutes.

The promise is checked where it is produced: after writing the JSON (and Markdown) the
command exits 1 with one line when keras_seg's mean final mIoU is more than `--tolerance`
points below SMP's, or its mean wall time above SMP's times `1 + --time-tolerance`
(`--no-check` skips this). mIoU and pixel accuracy are in percent.

Example:
    keras-seg benchmark isbi --data-dir /data/isbi2012_membrane --seeds 0 1 2 \\
        --output bench_results/isbi.json --markdown bench_results/isbi.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from keras_seg.benchmarks import learning_torch
from keras_seg.benchmarks.common import write_report

LIBRARIES = ("keras_seg", "smp")
LABEL_MAP = {0: 0, 255: 1}
NUM_CLASSES = 2
ENCODER = "resnet34"
TORCH_WORKER = Path(learning_torch.__file__)
REPO = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keras-seg benchmark isbi", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="ISBI 2012 folder (image/, label/)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256, help="square training crop")
    p.add_argument("--eval-every", type=int, default=50, help="steps between validations")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--poly-power", type=float, default=0.9)
    p.add_argument("--val-count", type=int, default=5, help="without val.txt: last N stems")
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    p.add_argument("--tolerance", type=float, default=1.0, help="mIoU points keras_seg may lose")
    p.add_argument("--time-tolerance", type=float, default=0.0, help="wall-time ratio margin")
    p.add_argument("--no-check", action="store_true", help="exit 0 whatever the results")
    p.add_argument("--torch-python", default=sys.executable, help="interpreter with torch+SMP")
    p.add_argument("--workdir", help="keep run folders and logs here (default: a temp folder)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    p.add_argument("--output", default="bench_results/isbi.json")
    p.add_argument("--markdown", help="also write a Markdown table here")
    return p


def _stems(path: Path) -> list[str]:
    return [s for s in (line.strip() for line in path.read_text().splitlines()) if s]


def prepare_data(data_dir: Path, work: Path, val_count: int) -> tuple[Path, list, list]:
    """The data folder to use and its train and val stems (see the module docstring)."""
    if (data_dir / "train.txt").is_file() and (data_dir / "val.txt").is_file():
        return data_dir, _stems(data_dir / "train.txt"), _stems(data_dir / "val.txt")
    if not (data_dir / "image").is_dir():
        raise SystemExit(f"benchmark isbi: {data_dir} has no image/ folder (ISBI layout)")
    stems = [p.stem for p in (data_dir / "image").glob("*.png")]
    stems.sort(key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    if not 0 < val_count < len(stems):
        raise SystemExit(f"benchmark isbi: --val-count {val_count} of {len(stems)} images")
    train, val = stems[:-val_count], stems[-val_count:]
    linked = work / "data"
    linked.mkdir(parents=True, exist_ok=True)
    for sub in ("image", "label"):
        if not (linked / sub).exists():
            (linked / sub).symlink_to((data_dir / sub).resolve(), target_is_directory=True)
    (linked / "train.txt").write_text("\n".join(train) + "\n")
    (linked / "val.txt").write_text("\n".join(val) + "\n")
    return linked, train, val


def keras_config(args, seed: int) -> dict[str, Any]:
    """The recipe as a keras_seg config (what `keras-seg train --config` would read)."""
    return {
        "name": f"isbi_benchmark_seed{seed}",
        "model": {
            "name": "unet",
            "backbone": ENCODER,
            "num_classes": NUM_CLASSES,
            "options": {"head_kernel_size": 3},  # SMP's 3x3 segmentation head
        },
        "data": {
            "name": "folder",
            "options": {
                "image_dir": "image",
                "mask_dir": "label",
                "num_classes": NUM_CLASSES,
                "label_map": LABEL_MAP,
            },
            "crop_size": [args.crop, args.crop],
            "augment": {"scale_range": [1.0, 1.0], "flip": True, "vflip": True, "jitter": False},
            "cache": True,
        },
        "train": {
            "batch_size": args.batch,
            "steps": args.steps,
            "steps_per_epoch": args.eval_every,
            "optimizer": "adamw",
            "learning_rate": args.learning_rate,
            "end_learning_rate": 0.0,
            "schedule": "poly",
            "poly_power": args.poly_power,
            "weight_decay": args.weight_decay,
            "decay_norm_and_bias": True,  # torch AdamW(model.parameters()) decays everything
            "precision": "float32",
            "distribution": "one_device",
            "checkpoint_every": args.steps,
            "seed": seed,
        },
        "eval": {"mode": "whole"},
    }


def keras_worker(job_path: str) -> int:
    """Train one keras_seg run and read its scores (in its own interpreter, see `_run`)."""
    from keras_seg.config import load_config
    from keras_seg.training import train

    job = json.loads(Path(job_path).read_text())
    cfg = load_config(job["config"])
    run_dir = Path(job["run_dir"])
    result = train(cfg, run_dir, job["data_dir"], final_eval=False, verbose=2)
    history = result["history"]  # {metric: [value per epoch]}
    per_epoch = cfg.train.steps_per_epoch
    curve = [
        {"step": min((i + 1) * per_epoch, cfg.train.steps), "miou": 100 * float(miou)}
        for i, miou in enumerate(history["val_mean_iou"])
    ]
    out = {
        "curve": curve,
        # The validation after the last step, on the whole slices (SMP's last evaluation).
        "final": {
            "step": cfg.train.steps,
            "miou": 100 * float(history["val_mean_iou"][-1]),
            "pixel_accuracy": 100 * float(history["val_pixel_accuracy"][-1]),
        },
        "train_s": result["train_seconds"],
        "onednn": result["onednn"],  # TensorFlow's CPU kernels (see training_environment)
        "loss_first": float(history["loss"][0]),  # epoch means (SMP: first step, last 10)
        "loss_last": float(history["loss"][-1]),
        "params": result["trainable_params"],  # as SMP's `parameters()` counts
    }
    Path(job["result"]).write_text(json.dumps(out, indent=2))
    return 0


def _run(library: str, seed: int, args, data: tuple, work: Path) -> dict[str, Any]:
    """One training run in a subprocess; its result plus wall time (or an error)."""
    data_dir, train, val = data
    run_dir = work / f"{library}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {"seed": seed, "data_dir": str(data_dir), "result": str(run_dir / "result.json")}
    env = dict(os.environ)
    if library == "keras_seg":
        config = run_dir / "config_in.yaml"
        recipe = keras_config(args, seed)
        config.write_text(yaml.safe_dump(recipe, sort_keys=False))
        job |= {"config": str(config), "run_dir": str(run_dir / "run")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        from keras_seg.machine import pixels_per_step  # what `keras-seg train` sets
        from keras_seg.machine import training_environment

        pixels = pixels_per_step(recipe["train"]["batch_size"], recipe["data"]["crop_size"])
        env |= training_environment(recipe["model"]["name"], recipe["model"]["backbone"], pixels)
        argv = [sys.executable, "-m", "keras_seg.benchmarks.learning"]
    else:
        job |= {
            "encoder": ENCODER,
            "num_classes": NUM_CLASSES,
            "train_stems": train,
            "val_stems": val,
            "image_dir": "image",
            "mask_dir": "label",
            "label_map": {str(k): v for k, v in LABEL_MAP.items()},
            "crop": [args.crop, args.crop],
            "batch_size": args.batch,
            "steps": args.steps,
            "eval_every": args.eval_every,
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "poly_power": args.poly_power,
        }
        argv = [args.torch_python, "-I", str(TORCH_WORKER)]
    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps(job, indent=2))
    log = run_dir / "log.txt"
    print(f"{library} seed {seed}: training ({log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(
                [*argv, str(job_path)],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=args.timeout,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.perf_counter() - start
    row: dict[str, Any] = {"library": library, "seed": seed, "total_s": wall}
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        row["error"] = f"exit {code}: {tail[0][:300]}"
        print(f"{library} seed {seed}: FAILED {row['error']}", flush=True)
        return row
    row |= json.loads((run_dir / "result.json").read_text())
    print(
        f"{library} seed {seed}: mIoU {row['final']['miou']:.2f}, "
        f"{wall:.0f} s ({row['train_s']:.0f} s training)",
        flush=True,
    )
    return row


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Mean and standard deviation per library, and keras_seg minus SMP."""

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"mean": None, "std": None}
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": statistics.fmean(values), "std": std}

    out: dict[str, Any] = {}
    for library in LIBRARIES:
        done = [r for r in runs if r["library"] == library and "error" not in r]
        out[library] = {
            "runs": len(done),
            "miou": stats([r["final"]["miou"] for r in done]),
            "pixel_accuracy": stats([r["final"]["pixel_accuracy"] for r in done]),
            "total_s": stats([r["total_s"] for r in done]),
            "train_s": stats([r["train_s"] for r in done]),
        }
    ks, smp = out["keras_seg"], out["smp"]
    out["keras_seg_minus_smp"] = {
        key: None
        if ks[key]["mean"] is None or smp[key]["mean"] is None
        else ks[key]["mean"] - smp[key]["mean"]
        for key in ("miou", "pixel_accuracy", "total_s", "train_s")
    }
    return out


def check(summary: dict, tolerance: float, time_tolerance: float) -> str | None:
    """The one-line failure of the promise, or None when keras_seg keeps it."""
    ks, smp = summary["keras_seg"], summary["smp"]
    if ks["runs"] == 0 or smp["runs"] == 0:
        return "benchmark isbi: no completed run of " + ("keras_seg" if not ks["runs"] else "smp")
    k, s = ks["miou"]["mean"], smp["miou"]["mean"]
    if k < s - tolerance:
        return (
            f"benchmark isbi: keras_seg's mean val mIoU {k:.2f} is {s - k:.2f} points below "
            f"SMP's {s:.2f} (allowed: {tolerance:g})"
        )
    k, s = ks["total_s"]["mean"], smp["total_s"]["mean"]
    if k > s * (1 + time_tolerance):
        return (
            f"benchmark isbi: keras_seg's mean wall time {k:.1f} s is above SMP's {s:.1f} s "
            f"(allowed: x{1 + time_tolerance:g})"
        )
    return None


def markdown(payload: dict) -> str:
    settings, results = payload["settings"], payload["results"]
    lines = [
        f"# keras-seg benchmark isbi ({payload['date']})",
        "",
        f"U-Net ResNet-34 from scratch, {settings['steps']} steps of batch {settings['batch']}, "
        f"{settings['crop']}x{settings['crop']} crops, AdamW {settings['learning_rate']:g} poly "
        f"{settings['poly_power']:g}, wd {settings['weight_decay']:g}; "
        f"{payload['machine'].get('cpu_model')}, {payload['machine'].get('cpu_count')} CPUs.",
        "",
        "| run | library | seed | final mIoU | pixel acc. | mIoU curve | wall s | training s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(results["runs"]):
        if "error" in r:
            lines.append(f"| {i} | {r['library']} | {r['seed']} | {r['error']} | | | | |")
            continue
        curve = ", ".join(f"{c['step']}: {c['miou']:.1f}" for c in r["curve"])
        lines.append(
            f"| {i} | {r['library']} | {r['seed']} | {r['final']['miou']:.2f} | "
            f"{r['final']['pixel_accuracy']:.2f} | {curve} | {r['total_s']:.0f} | "
            f"{r['train_s']:.0f} |"
        )
    lines += [
        "",
        "| library | mIoU | pixel acc. | wall s | training s |",
        "| --- | --- | --- | --- | --- |",
    ]
    summary = results["summary"]
    for library in LIBRARIES:
        s = summary[library]
        if not s["runs"]:
            continue
        cells = [
            f"{s[k]['mean']:.{d}f} ± {s[k]['std']:.{d}f}"
            for k, d in (("miou", 2), ("pixel_accuracy", 2), ("total_s", 0), ("train_s", 0))
        ]
        lines.append(f"| {library} | " + " | ".join(cells) + " |")
    lines += ["", f"Check: {results['check'] or 'passed'}", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="keras_seg_isbi_") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = prepare_data(data_dir, work, args.val_count)
        runs = [
            _run(library, seed, args, data, work)
            for seed in args.seeds
            for library in LIBRARIES
            if library in args.libraries
        ]
    summary = summarise(runs)
    failure = None if args.no_check else check(summary, args.tolerance, args.time_tolerance)
    errors = [f"{r['library']} seed {r['seed']}: {r['error']}" for r in runs if "error" in r]
    settings = {
        k: getattr(args, k)
        for k in ("steps", "batch", "crop", "eval_every", "learning_rate", "weight_decay")
        + ("poly_power", "seeds", "tolerance", "time_tolerance")
    } | {
        "data_dir": str(data_dir),
        "train_stems": data[1],
        "val_stems": data[2],
        "encoder": ENCODER,
        "keras_seg_config": keras_config(args, args.seeds[0]),
        "smp_side": learning_torch.__doc__.split("What it does")[1].strip(),
    }
    results = {
        "order": [f"{r['library']}{r['seed']}" for r in runs],
        "runs": runs,
        "summary": summary,
        "check": failure or (errors[0] if errors else None),
    }
    payload = write_report(args.output, "isbi", settings, results)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(payload))
    print(markdown(payload))
    if errors:
        print(f"benchmark isbi: {errors[0]}", file=sys.stderr)
        return 1
    if failure:
        print(failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(keras_worker(sys.argv[1]))
