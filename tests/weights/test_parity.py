"""keras_seg computes what the reference implementations compute, from their checkpoints.

For every case of `cases.CASES` the reference model is built in PyTorch in its own process
(`reference.py`), with random weights and BatchNorm statistics, and its checkpoint loaded into
keras_seg through the public path (`build_backbone(..., weights=PATH)`, fed normalised pixels, or
`keras_seg.build(..., weights=PATH)`, fed pixels 0..255); outputs must agree on two input sizes within
`cases.TOLERANCE` of their largest value. The figures go to `parity.json` beside the files.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras_seg
from keras_seg.backbones import build_backbone
from tests.weights.cases import CASES
from tests.weights.cases import MEAN
from tests.weights.cases import STD
from tests.weights.cases import TOLERANCE

# Not importorskip: torchvision (under timm and SMP) crashes in a process that has TensorFlow.
if importlib.util.find_spec("segmentation_models_pytorch") is None:
    pytest.skip(
        "needs the reference packages (pip install -e '.[reference]')", allow_module_level=True
    )
REFERENCE = Path(__file__).with_name("reference.py")
# Reference library -> the package it needs.
PACKAGES = {"transformers": "transformers"}


def _installed(name: str) -> bool:
    package = PACKAGES.get(CASES[name]["library"])
    return package is None or importlib.util.find_spec(package) is not None


@pytest.fixture(scope="module")
def references(request, tmp_path_factory) -> Path:
    """The reference outputs of the cases this session runs (`-k` selects fewer)."""
    selected = sorted(
        {
            item.callspec.params["name"]
            for item in request.session.items
            if item.module is request.module
            and "name" in getattr(getattr(item, "callspec", None), "params", {})
        }
    )
    out = tmp_path_factory.mktemp("references")
    names = [name for name in selected if _installed(name)]
    if names:
        subprocess.run([sys.executable, str(REFERENCE), str(out), *names], check=True, timeout=600)
    return out


def checkpoint(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.pth", folder / f"{name}.safetensors"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(name)


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_equal_the_reference(references, name):
    case = CASES[name]
    if not _installed(name):
        pytest.skip(f"needs {PACKAGES[case['library']]} (pip install -e '.[reference]')")
    source = checkpoint(references, name)
    if "backbone" in case["keras"]:
        model = build_backbone(case["keras"]["backbone"], weights=source)
    else:
        model = keras_seg.build(case["keras"]["model"], num_classes=None, weights=source)
    expected = np.load(references / f"{name}.npz")
    worst = {}
    for i, _ in enumerate(case["sizes"]):
        x = expected[f"x{i}"]
        if case["compare"] == "logits":
            ours = {"logits": np.asarray(model(x))}
        else:
            # A backbone takes normalised pixels (the model normalises in front of it).
            normalised = (x - np.float32(MEAN)) / np.float32(STD)
            ours = {level: np.asarray(y) for level, y in model(normalised).items()}
        for level in sorted(ours):
            theirs = expected[f"y{i}_{level}"]
            assert ours[level].shape == theirs.shape, (level, x.shape)
            worst[f"{level}@{x.shape[1]}x{x.shape[2]}"] = relative_difference(ours[level], theirs)
    levels = {key.split("_", 1)[1] for key in expected.files if key.startswith("y0_")}
    assert levels == set(ours), (levels, sorted(ours))  # every level the reference has
    assert len(worst) == len(case["sizes"]) * len(levels)
    assert max(worst.values()) <= TOLERANCE, worst
    with open(references / "parity.json", "a") as f:
        f.write(json.dumps({"case": name, "max_relative": max(worst.values())}) + "\n")
