"""Train segmentation_models.pytorch's U-Net ResNet-34 briefly, for the end-to-end test.

Run in its own process (torchvision crashes after TensorFlow loads):

    python train_reference.py DATA.npz OUT_DIR STEPS

DATA.npz: "train_x" uint8 [N, H, W, 3], "train_y" uint8 [N, H, W], "test_x", and "classes".
Writes OUT_DIR/smp_unet_r34.pth (state dict) and OUT_DIR/reference.npz ("classes": argmax
class maps of the test images, "loss": the training losses). Pixels are normalised with the
ImageNet statistics, as keras_seg normalises inside its model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch

MEAN = np.float32([123.675, 116.28, 103.53])
STD = np.float32([58.395, 57.12, 57.375])


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((x.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def main(data: str, out: str, steps: int) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    arrays = np.load(data)
    x, y = arrays["train_x"], arrays["train_y"].astype(np.int64)
    model = smp.Unet("resnet34", encoder_weights=None, classes=int(arrays["classes"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    losses = []
    model.train()
    for _ in range(steps):
        batch = rng.choice(len(x), 8, replace=False)
        logits = model(nchw(x[batch]))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    model.eval()
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), Path(out) / "smp_unet_r34.pth")
    with torch.inference_mode():
        classes = model(nchw(arrays["test_x"])).argmax(1).numpy().astype(np.uint8)
    np.savez(Path(out) / "reference.npz", classes=classes, loss=np.float32(losses))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
