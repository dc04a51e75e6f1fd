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

import keras_seg
import keras_seg.export
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
    ops = keras_seg.export.op_names(tflite)
    assert ops and not any(op.startswith("CUSTOM") for op in ops), ops
    classes = runner.predict(test_x)["class_map"]
    agreement = float((classes == reference["classes"]).mean())
    assert agreement >= INT8_AGREEMENT, agreement


@pytest.fixture(scope="module")
def backbone_checkpoint(tmp_path_factory) -> Path:
    """A width-8 ResNet-18 in the torchvision layout, as .safetensors (no PyTorch needed)."""
    from safetensors.numpy import save_file

    from keras_seg.backbones import build_backbone
    from tests.weights.test_weights import torch_state

    path = tmp_path_factory.mktemp("ckpt") / "resnet18_w8.safetensors"
    save_file(torch_state(build_backbone("resnet18", width=8), "resnet18"), str(path))
    return path


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> Path:
    """A full ResNet-18 (torchvision layout, random weights), which torchvision can build."""
    from safetensors.numpy import save_file

    from keras_seg.backbones import build_backbone
    from tests.weights.test_weights import torch_state

    path = tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors"
    save_file(torch_state(build_backbone("resnet18"), "resnet18"), str(path))
    return path


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--from", "missing.pth", "--model", "unet"], r"missing.pth: no such checkpoint"),
        (
            ["--model", "unet", "--num-classes", "3"],
            r"conv1 has shape \(7, 7, 3, 8\).*expects \(7, 7, 3, 64\)",
        ),
        (["--model", "unet"], r"backbone weights need num_classes"),
        (
            ["--model", "unet", "--num-classes", "3", "--backbone", "resnet34"],
            r"the weights are torchvision/timm resnet18; use backbone='resnet18'",
        ),
        (
            ["--model", "fcn8s", "--num-classes", "3"],
            r"fcn8s takes backbone None or 'vgg16', got 'resnet18'",
        ),
    ],
)
def test_convert_mistakes_end_with_one_line(backbone_checkpoint, tmp_path, args, pattern):
    if "--from" not in args:
        args = ["--from", str(backbone_checkpoint), *args]
    output = tmp_path / "out.keras"
    output.write_bytes(b"an earlier model")
    done = run_cli("convert", *args, "--output", str(output), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-seg convert: error: "), done.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert output.read_bytes() == b"an earlier model"


def test_convert_refuses_a_model_that_disagrees_with_its_reference(
    resnet18_checkpoint, tmp_path, monkeypatch
):
    from keras_seg.convert import convert
    from keras_seg.weights import ParityMismatch
    from keras_seg.weights import parity

    monkeypatch.setattr(parity, "TOLERANCE", -1.0)  # no difference passes now
    output = tmp_path / "out.keras"
    output.write_bytes(b"an earlier model")
    with pytest.raises(ParityMismatch, match="nothing written"):
        convert(str(resnet18_checkpoint), "unet", output, num_classes=3)
    assert output.read_bytes() == b"an earlier model"


@pytest.mark.parametrize("model", ["deeplabv3plus", "deeplabv3"])
def test_smp_layout_deeplab_exports_with_builtin_ops(model, tmp_path):
    """SMP's options (aligned-corner resizing, the post-ASPP convolution) lower to builtins."""
    options = {
        "backbone": "resnet18",
        "backbone_kwargs": {"width": 8, "dilation_rule": "smp"},
        "aspp_filters": 16,
        "aspp_post_conv": True,
        "align_corners": True,
        "separable": model == "deeplabv3plus",
        "aspp_rates": (12, 24, 36),
    }
    if model == "deeplabv3plus":
        options |= {"decoder_filters": 16, "decoder_convs": 1}
    built = keras_seg.build(model, num_classes=3, **options)
    images = synthetic.make_dataset(4, size=SIZE, seed=5)[0]
    path = keras_seg.export.tflite(
        built, tmp_path / "m.tflite", input_size=(SIZE, SIZE), check_images=images
    )
    ops = keras_seg.export.op_names(path)
    assert "RESIZE_BILINEAR" in ops and not any(op.startswith("CUSTOM") for op in ops)
