"""From a segmentation_models.pytorch checkpoint to a phone, as a user runs it.

PyTorch trains SMP's U-Net ResNet-34 briefly on generated shapes (its own process,
`train_reference.py`), so the model is trained-looking rather than random. Then, each in a
fresh process: `keras-seg convert` (its parity check runs the reference), loading the `.keras`
file with plain Keras, `keras-seg predict`, and `keras-seg export --quantize int8`, whose
TFLite file must give PyTorch's class map on at least 95% of the held-out pixels.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from keras_seg.data import synthetic
from keras_seg.export.tflite_export import TFLiteModel
from tests.training.common import CLI
from tests.training.common import cli_env

# Not importorskip: torchvision (under timm and SMP) crashes in a process that has TensorFlow.
if importlib.util.find_spec("segmentation_models_pytorch") is None:
    pytest.skip(
        "needs the reference packages (pip install -e '.[reference]')", allow_module_level=True
    )
TRAIN = Path(__file__).with_name("train_reference.py")
SIZE = 64
STEPS = 150
INT8_AGREEMENT = 0.95


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smp")
    x, y = synthetic.make_dataset(96, size=SIZE, seed=3)
    test_x, test_y = synthetic.make_dataset(16, size=SIZE, seed=4)
    np.savez(
        root / "data.npz",
        train_x=x,
        train_y=y,
        test_x=test_x,
        classes=len(synthetic.CLASS_NAMES),
    )
    (root / "images").mkdir()
    for i, image in enumerate(test_x):
        cv2.imwrite(str(root / "images" / f"{i:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    subprocess.run(
        [sys.executable, str(TRAIN), str(root / "data.npz"), str(root), str(STEPS)],
        check=True,
        timeout=900,
        capture_output=True,
    )
    np.save(root / "test_x.npy", test_x)
    np.save(root / "test_y.npy", test_y)
    return root


def test_smp_checkpoint_to_int8_tflite_from_fresh_processes(trained, tmp_path):
    reference = np.load(trained / "reference.npz")
    test_x, test_y = np.load(trained / "test_x.npy"), np.load(trained / "test_y.npy")
    # The reference learned the shapes: a trained model, not a random one.
    assert (reference["classes"] == test_y).mean() > 0.9

    converted = tmp_path / "smp_unet_r34.keras"
    done = run_cli(
        "convert", "--from", str(trained / "smp_unet_r34.pth"), "--model", "unet",
        "--output", str(converted), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "SMP Unet on resnet34, 5 classes" in done.stdout
    difference = re.search(
        r"parity with smp Unet \(PyTorch\): .* logits ([0-9.e+-]+) of", done.stdout
    )
    assert difference and float(difference.group(1)) <= 1e-4, done.stdout

    # A fresh interpreter loads the file with plain Keras and gives PyTorch's class maps.
    code = (
        "import sys, numpy as np, keras, keras_seg\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "x = np.load(sys.argv[2]).astype('float32')\n"
        "np.save(sys.argv[3], np.argmax(m.predict(x, verbose=0), -1))\n"
    )
    out = tmp_path / "keras_classes.npy"
    subprocess.run(
        [sys.executable, "-c", code, str(converted), str(trained / "test_x.npy"), str(out)],
        check=True, env=cli_env(), timeout=300, capture_output=True,
    )  # fmt: skip
    assert (np.load(out) == reference["classes"]).mean() >= 0.999

    done = run_cli(
        "predict", "--model", str(converted), "--input", str(trained / "images"),
        "--output", str(tmp_path / "predicted"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "predicted").glob("*.png"))) >= len(test_x)

    tflite = tmp_path / "smp_unet_r34_int8.tflite"
    done = run_cli(
        "export", "--model", str(converted), "--format", "tflite", "--quantize", "int8",
        "--images", str(trained / "images"), "--input-size", str(SIZE), str(SIZE),
        "--output", str(tflite), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runner = TFLiteModel(tflite, num_threads=2)
    ops = {op["op_name"] for op in runner.interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    classes = runner.predict(test_x)["class_map"]
    agreement = float((classes == reference["classes"]).mean())
    assert agreement >= INT8_AGREEMENT, agreement
