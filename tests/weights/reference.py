"""Build each reference model of `cases.CASES` in PyTorch, save its checkpoint and outputs.

Run in its own process (`python reference.py OUT_DIR [CASE ...]`): torchvision (imported by
timm and SMP) crashes when TensorFlow is already loaded in the process. Weights are random and
BatchNorm statistics random too, in eval mode; inputs are random pixels 0..255, normalised
with the ImageNet statistics and zero-padded (raw pixels) to the case's multiple, as keras_seg
does inside the model. Writes `{case}.pth` / `.safetensors` / `{case}/` (hub folder),
`{case}.npz` (inputs `x{i}` in pixels, outputs `y{i}_{level}` NHWC, cropped to the input).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
# keras_seg's own reference runner (by path: importing the package would load TensorFlow).
sys.path.insert(0, str(Path(__file__).parents[2] / "keras_seg" / "weights"))
from cases import CASES  # noqa: E402
from cases import MEAN  # noqa: E402
from cases import STD  # noqa: E402
from reference import construct  # noqa: E402  (keras_seg/weights/reference.py)
from reference import outputs  # noqa: E402
from reference import randomize  # noqa: E402


def save(model, case: dict, path: Path) -> None:
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(case["drop"]))}
    if case["save"] == "hub":
        model.save_pretrained(str(path))
    elif case["save"] == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path) + ".safetensors")
    else:
        torch.save(state, str(path) + ".pth")


def run(name: str, out: Path) -> None:
    case = CASES[name]
    torch.manual_seed(0)
    model = construct(case["library"], case["factory"], case["kwargs"])
    model = randomize(model, all_biases=case["library"] == "transformers")
    save(model, case, out / name)
    rng = np.random.default_rng(1)
    arrays = {}
    for i, (h, w) in enumerate(case["sizes"]):
        x = rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32)
        m = case["pad"]
        normalised = np.zeros((1, -(-h // m) * m, -(-w // m) * m, 3), np.float32)
        if not case["pad_normalised"]:
            normalised[:] = (0 - np.float32(MEAN)) / np.float32(STD)  # black pixels
        normalised[:, :h, :w] = (x - np.float32(MEAN)) / np.float32(STD)
        t = torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy())
        with torch.inference_mode():
            found = outputs(model, t, case["compare"])
        arrays[f"x{i}"] = x
        for level, y in found.items():
            y = y.numpy().transpose(0, 2, 3, 1)
            if case["compare"] == "logits":
                y = y[:, :h, :w]
            arrays[f"y{i}_{level}"] = y
    np.savez(out / f"{name}.npz", **arrays)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or CASES:
        run(name, out)
