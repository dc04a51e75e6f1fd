"""Compare a converted model with its reference implementation on the same random images.

The reference runs in a separate process (`reference.py`: torchvision crashes in a process
that has loaded TensorFlow). Images are random pixels 0..255 at sizes divisible by 32, so
neither side pads; the reference gets them normalised with the "torch" statistics, as the
keras_seg model normalises inside. A backbone is compared level by level (P1..P5), a whole
model by its logits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from keras_seg.layers.preprocessing import NORMALIZATIONS
from keras_seg.weights.formats import Layout

# Max |difference| relative to the outputs' max |value| that counts as equal (float32).
TOLERANCE = 1e-4
SIZES = ((64, 64), (96, 128))
_SCRIPT = Path(__file__).with_name("reference.py")
_MISSING_PACKAGE = 3


class ParityMismatch(RuntimeError):
    """A converted model whose outputs differ from its reference implementation's."""


@dataclass
class Parity:
    """`max_relative`: the worst level/size; `per_output`: each one; `reference`: what ran."""

    max_relative: float
    per_output: dict[str, float]
    reference: str

    @property
    def ok(self) -> bool:
        return self.max_relative <= TOLERANCE


def _normalise(x: np.ndarray) -> np.ndarray:
    mean, std, _ = NORMALIZATIONS["torch"]
    return (x - np.float32(mean)) / np.float32(std)


def check(
    model: keras.Model,
    layout: Layout,
    source: str,
    backbone: bool = False,
    timeout: float = 600,
) -> Parity | None:
    """Parity of `model` (a whole model, or with `backbone` a backbone) with the reference
    that `layout` names, loaded from checkpoint `source`.

    Returns:
        The differences, or None when the reference can't run here (its package is not
        installed, or keras_seg can't name the reference network).

    Raises:
        RuntimeError: the reference process failed (its last line in the message).
    """
    if not layout.reference:
        return None
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32) for h, w in SIZES]
    with tempfile.TemporaryDirectory(prefix="keras_seg_parity_") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "inputs.npz", **{f"x{i}": _normalise(x) for i, x in enumerate(images)})
        request = {
            **layout.reference,
            "checkpoint": str(Path(source).resolve()) if "://" not in source else source,
            "compare": "pyramid" if backbone else "logits",
            "inputs": str(tmp / "inputs.npz"),
            "outputs": str(tmp / "outputs.npz"),
        }
        (tmp / "request.json").write_text(json.dumps(request))
        done = subprocess.run(
            [sys.executable, str(_SCRIPT), str(tmp / "request.json")],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode == _MISSING_PACKAGE:
            return None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(
                f"the reference {layout.reference['library']} model failed: "
                f"{lines[-1] if lines else done.returncode}"
            )
        theirs = np.load(tmp / "outputs.npz")
        per_output = {}
        for i, x in enumerate(images):
            ours = model(_normalise(x)) if backbone else {"logits": model(x)}
            for level, y in ours.items():
                expected = theirs[f"y{i}_{level}"]
                y = np.asarray(y)
                if y.shape != expected.shape:
                    raise RuntimeError(
                        f"{level}: shape {y.shape}, the reference's {expected.shape}"
                    )
                per_output[f"{level}@{x.shape[1]}x{x.shape[2]}"] = float(
                    np.abs(y - expected).max() / max(np.abs(expected).max(), 1e-12)
                )
    reference = f"{layout.reference['library']} {layout.reference['factory']}"
    return Parity(max(per_output.values()), per_output, reference)
