"""`keras-seg benchmark profile`: per-op self time under the TF profiler (and torch's)."""

import importlib.util
import json
import subprocess
import sys

import pytest

from keras_seg.benchmarks.profile import op_category
from keras_seg.benchmarks.profile_torch import category

needs_torch = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "segmentation_models_pytorch")),
    reason="torch and segmentation_models_pytorch are the peer",
)


def test_ops_are_attributed_to_their_layer():
    classes = {"unet": "Functional", "resnet34": "Functional", "conv1_conv": "Conv2D",
               "conv1_bn": "BatchNormalization", "decoder1_concat": "Concatenate"}  # fmt: skip
    assert op_category("unet_1/resnet34_1/conv1_conv_1/convolution", classes) == (
        "conv1_conv",
        "conv",
    )
    assert op_category("unet_1/resnet34_1/conv1_bn_1/batchnorm/mul_1", classes)[1] == ("batch_norm")
    assert op_category("unet_1/decoder1_concat_1/concat", classes)[1] == "concat"
    assert op_category("unet_1/Cast", classes) == (None, "other")
    # Grappler's fused conv + bias + ReLU carries the ReLU's name.
    classes["decoder1_1_relu"] = "Activation"
    fused = op_category("unet_1/decoder1_1_relu_1/Relu", classes, "_MklNativeFusedConv2D")
    assert fused == ("decoder1_1_relu", "conv")
    assert category("aten::mkldnn_convolution") == "conv"
    assert category("aten::native_batch_norm") == "batch_norm"
    assert category("aten::upsample_nearest2d") == "resize"


@needs_torch
def test_profile_cli_writes_tf_and_torch_tables(tmp_path):
    out = tmp_path / "profile.json"
    argv = ["benchmark", "profile", "--model", "unet:resnet18", "--size", "64", "--steps", "1"]
    argv += ["--train", "--train-size", "64", "--train-batch-size", "1", "--top", "5"]
    argv += ["--torch", "Unet", "--torch-kwargs", '{"encoder_name": "resnet18"}']
    done = subprocess.run(
        [sys.executable, "-m", "keras_seg", *argv, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "profile"
    ours = report["results"]["keras_seg"]
    for phase in ("inference", "training"):
        assert len(ours[phase]["top_ops"]) == 5
        assert ours[phase]["categories"]["conv"]["self_ms"] > 0  # 64 px: small share
        shares = sum(c["share"] for c in ours[phase]["categories"].values())
        assert shares == pytest.approx(1.0)
    # Folded (the default): no BatchNorm work left in inference, plenty in training.
    assert ours["inference"]["categories"].get("batch_norm", {"share": 0})["share"] < 0.01
    assert ours["training"]["categories"]["batch_norm"]["self_ms"] > 0
    torch = report["results"]["torch"]
    for phase in ("inference", "training"):
        assert torch["phases"][phase]["categories"]["conv"]["self_ms"] > 0
        assert "aten::" in torch["phases"][phase]["top_ops"][0]["type"]
    # Training runs the backward ops too; inference none. (At 64 px the optimizer's ops on
    # 14M parameters can outrank every backward op, so the top 5 cannot tell.)
    assert torch["phases"]["training"]["backward_self_ms"] > 0
    assert torch["phases"]["inference"]["backward_self_ms"] == 0
    assert torch["precision"] == "float32"
