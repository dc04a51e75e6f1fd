"""The segmentation_models.pytorch side of `keras-seg benchmark isbi`, run by path.

Never imported by keras_seg and never run next to TensorFlow (torchvision, imported by SMP,
crashes in a process where TensorFlow is loaded). Needs torch, numpy, Pillow and
segmentation_models_pytorch:

    python -I learning_torch.py JOB.json   # writes its result JSON to job["result"]

What it does, the recipe of `learning.py` in a plain PyTorch loop:

- data: the `train` and `val` stems' PNGs are decoded once with Pillow into uint8 arrays
  (grey images repeated to 3 channels, as keras_seg's reader does; labels through
  `label_map`), i.e. preloaded in memory, as keras_seg's `data.cache: true` does;
- model: `smp.Unet("resnet34", encoder_weights=None, classes=2)` after
  `torch.manual_seed(seed)` (torchvision's and SMP's own initialisation);
- batches: each epoch a new permutation of the training images (numpy, seeded), cut into
  batches that run across epoch ends; per image a uniform random `crop` window, then a
  horizontal and a vertical flip each with probability 0.5; ImageNet normalisation, NCHW;
- step: `F.cross_entropy(logits, labels, ignore_index=255)` (mean over the non-ignored
  pixels), `AdamW(model.parameters(), lr, weight_decay=wd)` (torch defaults otherwise: every
  parameter decays, eps 1e-8), `PolynomialLR(total_iters=steps, power)` stepped after
  each optimizer step (the learning rate reaches 0 at the last step);
- evaluation every `eval_every` steps and after the last: `model.eval()`, each validation
  image whole at full resolution, argmax, one confusion matrix over the split: mIoU (mean
  over classes present in labels or predictions, as `keras_seg.metrics`) and pixel accuracy.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

# torchvision's ImageNet statistics in 0..255 pixel units (keras_seg's "torch" Normalize).
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
IGNORE = 255


def load_split(data_dir: str, stems: list[str], job: dict) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `[N, H, W, 3]` and labels `[N, H, W]` (class ids, 255 ignored)."""
    from PIL import Image

    root = Path(data_dir)
    table = np.full(256, IGNORE, np.uint8)
    for raw, cls in job["label_map"].items():
        table[int(raw)] = cls
    images, labels = [], []
    for stem in stems:
        image = np.asarray(Image.open(root / job["image_dir"] / f"{stem}.png").convert("RGB"))
        label = np.asarray(Image.open(root / job["mask_dir"] / f"{stem}.png").convert("L"))
        images.append(image)
        labels.append(table[label])
    return np.stack(images), np.stack(labels)


def normalise(images: np.ndarray):
    """uint8 NHWC -> float32 NCHW tensor, ImageNet-normalised."""
    import torch

    x = (images.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def batches(images: np.ndarray, labels: np.ndarray, job: dict, rng: np.random.Generator):
    """Endless augmented batches: epoch permutations, random crops, h/v flips."""
    n, h, w = labels.shape
    ch, cw = job["crop"]
    order: list[int] = []
    while True:
        picked = []
        while len(picked) < job["batch_size"]:
            if not order:
                order = list(rng.permutation(n))
            picked.append(order.pop(0))
        xs, ys = [], []
        for i in picked:
            y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            x, y = images[i, y0 : y0 + ch, x0 : x0 + cw], labels[i, y0 : y0 + ch, x0 : x0 + cw]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(x)
            ys.append(y)
        yield np.stack(xs), np.stack(ys)


def scores(cm: np.ndarray) -> dict[str, float]:
    """mIoU and pixel accuracy (percent) from `cm[true, pred]`, as `keras_seg.metrics`."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    miou = float(np.mean(tp[present] / union[present])) if present.any() else 0.0
    return {"miou": 100 * miou, "pixel_accuracy": 100 * float(tp.sum() / max(cm.sum(), 1))}


def evaluate(model, images: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    import torch

    model.eval()
    cm = np.zeros((num_classes, num_classes), np.int64)
    with torch.no_grad():
        for image, label in zip(images, labels, strict=True):
            pred = model(normalise(image[None])).argmax(1)[0].numpy()
            valid = label != IGNORE
            cm += np.bincount(
                label[valid].astype(np.int64) * num_classes + pred[valid],
                minlength=num_classes**2,
            ).reshape(num_classes, num_classes)
    model.train()
    return scores(cm)


def run(job: dict) -> dict:
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F

    t_start = time.perf_counter()
    train_x, train_y = load_split(job["data_dir"], job["train_stems"], job)
    val_x, val_y = load_split(job["data_dir"], job["val_stems"], job)
    load_s = time.perf_counter() - t_start
    torch.manual_seed(job["seed"])
    model = smp.Unet(job["encoder"], encoder_weights=None, classes=job["num_classes"])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=job["learning_rate"], weight_decay=job["weight_decay"]
    )
    schedule = torch.optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=job["steps"], power=job["poly_power"]
    )
    stream = batches(train_x, train_y, job, np.random.default_rng(job["seed"]))
    curve, losses = [], []
    model.train()
    t0 = time.perf_counter()
    for step in range(1, job["steps"] + 1):
        x, y = next(stream)
        logits = model(normalise(x))
        loss = F.cross_entropy(logits, torch.from_numpy(y.astype(np.int64)), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % job["eval_every"] == 0 or step == job["steps"]:
            curve.append({"step": step, **evaluate(model, val_x, val_y, job["num_classes"])})
            print(f"step {step}: loss {losses[-1]:.4f}, val {curve[-1]}", flush=True)
    train_s = time.perf_counter() - t0
    return {
        "curve": curve,
        "final": curve[-1],
        "train_s": train_s,
        "load_s": load_s,
        "loss_first": losses[0],
        "loss_last": float(np.mean(losses[-10:])),
        "params": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            k: metadata.version(k) for k in ("torch", "segmentation_models_pytorch", "timm")
        },
    }


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    result = run(job)
    Path(job["result"]).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
