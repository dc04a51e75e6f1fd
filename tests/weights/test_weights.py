"""Reading checkpoints and the errors a user meets, on small checkpoints written here.

The checkpoints are written without PyTorch: a keras_seg backbone's weights turned into the
torchvision layout (`torch_state`, the inverse of `keras_seg.weights.assign`) and saved as
.safetensors, so these tests run wherever safetensors is installed. Parity with the real
reference implementations is `test_parity.py`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_seg
from keras_seg.backbones import build_backbone
from keras_seg.weights import WeightsError
from keras_seg.weights import read_checkpoint
from keras_seg.weights import recognise
from keras_seg.weights.assign import weighted_layers
from keras_seg.weights.formats import BACKBONE_MAPS

SMALL = {"width": 8}


def torch_state(model, backbone: str, prefix: str = "") -> dict[str, np.ndarray]:
    """`model`'s backbone weights as a torchvision state dict (OIHW kernels, BN buffers)."""
    layers = weighted_layers(model)
    state = {}
    for name, module in BACKBONE_MAPS[backbone](model, prefix, "torchvision").items():
        weights = layers[name].get_weights()
        if len(weights) == 4:  # BatchNorm: gamma, beta, mean, variance
            for key, value in zip(
                ("weight", "bias", "running_mean", "running_var"), weights, strict=True
            ):
                state[f"{module}.{key}"] = value
            state[f"{module}.num_batches_tracked"] = np.zeros((), np.float32)
        else:
            state[f"{module}.weight"] = weights[0].transpose(3, 2, 0, 1).copy()
            if len(weights) == 2:
                state[f"{module}.bias"] = weights[1]
    return state


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    """(path, original backbone) of a width-8 ResNet-18 checkpoint with a classifier head."""
    model = build_backbone("resnet18", **SMALL)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    state = torch_state(model, "resnet18")
    state["fc.weight"] = rng.normal(size=(10, 64)).astype("float32")
    state["fc.bias"] = np.zeros(10, np.float32)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors"
    save_file(state, str(path))
    return path, model


def test_backbone_round_trip(resnet18):
    path, original = resnet18
    loaded = build_backbone("resnet18", weights=path, **SMALL)
    x = np.random.default_rng(1).normal(size=(1, 45, 61, 3)).astype("float32")
    for level, value in loaded(x).items():
        np.testing.assert_allclose(value, original(x)[level], rtol=1e-5, atol=1e-5)
    layout = recognise(read_checkpoint(path))
    assert (layout.backbone, layout.model, layout.format) == ("resnet18", None, "torchvision")


def test_model_takes_a_backbone_checkpoint_and_keeps_its_decoder_random(resnet18):
    path, original = resnet18
    model = keras_seg.build("unet", num_classes=3, weights=path, backbone_kwargs=SMALL)
    encoder = model.get_layer("resnet18")
    for a, b in zip(encoder.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The backbone comes from the checkpoint when the caller names none.
    assert model.name == "unet_resnet18"


def _save(tmp_path, state, name="bad.safetensors"):
    path = tmp_path / name
    save_file(state, str(path))
    return path


def test_shape_mismatch_names_key_shape_and_expected(resnet18, tmp_path):
    path, _ = resnet18
    with pytest.raises(WeightsError) as info:
        build_backbone("resnet18", weights=path, width=16)
    message = str(info.value)
    assert "conv1" in message and "(7, 7, 3, 8)" in message and "(7, 7, 3, 16)" in message
    assert "'conv1_conv'" in message and "\n" not in message


def test_missing_key_is_named(resnet18, tmp_path):
    path, _ = resnet18
    state = read_checkpoint(path).tensors
    del state["layer2.0.downsample.1.running_var"]
    bad = _save(tmp_path, state)
    with pytest.raises(
        WeightsError, match=r"no key 'layer2.0.downsample.1.running_var'.*conv3_block1_0_bn"
    ):
        build_backbone("resnet18", weights=bad, **SMALL)


def test_unused_keys_are_an_error_unless_partial(resnet18, tmp_path):
    path, _ = resnet18
    state = read_checkpoint(path).tensors
    state["layer5.0.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    bad = _save(tmp_path, state)
    with pytest.raises(
        WeightsError, match=r"1 checkpoint keys have no layer.*layer5.0.conv1.weight"
    ):
        build_backbone("resnet18", weights=bad, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_backbone("resnet18", weights=bad, weights_partial=True, **SMALL)
    assert any("layer5.0.conv1.weight" in str(w.message) for w in caught)


def test_partial_load_lists_what_it_skipped(resnet18):
    path, original = resnet18
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_backbone("resnet18", weights=path, weights_partial=True, width=16)
    message = " ".join(str(w.message) for w in caught)
    assert "partial load" in message and "conv1_conv" in message
    assert model.get_layer("conv1_conv").kernel.shape == (7, 7, 3, 16)


def test_keras_layout_backbone_gets_the_torch_layout_name(tmp_path):
    model = build_backbone("resnet50_torchvision", width=8)
    path = _save(tmp_path, torch_state(model, "resnet50_torchvision"), "r50.safetensors")
    with pytest.raises(WeightsError, match="use backbone='resnet50_torchvision'"):
        keras_seg.build("deeplabv3plus", num_classes=3, backbone="resnet50", weights=path)


def test_unknown_checkpoint_says_what_is_supported(tmp_path):
    path = _save(tmp_path, {"encoder.blocks.0.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(WeightsError, match="not a checkpoint keras_seg can read.*ResNet"):
        build_backbone("resnet18", weights=path)


@pytest.mark.parametrize(
    "source, pattern",
    [
        ("missing.pth", "missing.pth: no such checkpoint file or folder"),
        ("hf://just-a-name", "expected hf://owner/name"),
    ],
)
def test_bad_sources(tmp_path, source, pattern):
    with pytest.raises(WeightsError, match=pattern):
        build_backbone(
            "resnet18", weights=str(tmp_path / source) if "://" not in source else source
        )


def test_folder_without_weights_lists_what_it_found(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_model_class": "Unet"}))
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(WeightsError, match=r"expected model.safetensors or pytorch_model.bin"):
        read_checkpoint(tmp_path)


def test_hub_handle_offline_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        read_checkpoint("hf://smp-hub/segformer-b0-512x512-ade-160k")
    message = str(info.value)
    assert "https://huggingface.co/smp-hub/segformer-b0-512x512-ade-160k" in message
    assert "config.json" in message and "\n" not in message


def test_weights_format_must_be_known(resnet18):
    path, _ = resnet18
    with pytest.raises(WeightsError, match="weights_format must be one of torchvision, timm, smp"):
        build_backbone("resnet18", weights=path, weights_format="keras", **SMALL)
    with pytest.raises(ValueError, match="weights_format and weights_partial apply to PyTorch"):
        keras_seg.build("unet", num_classes=2, weights_format="smp")


def test_wrapped_torch_state_dict(resnet18, tmp_path):
    torch = pytest.importorskip("torch")
    path, original = resnet18
    state = {f"module.{k}": torch.from_numpy(v) for k, v in read_checkpoint(path).tensors.items()}
    wrapped = tmp_path / "train_ckpt.pth"
    torch.save({"epoch": 3, "state_dict": state}, wrapped)
    loaded = build_backbone("resnet18", weights=wrapped, **SMALL)
    for a, b in zip(loaded.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_config_model_weights_take_a_checkpoint(resnet18, tmp_path):
    """`model.weights` in a training config takes the same sources as `build`."""
    from keras_seg import runs
    from keras_seg.config import ConfigError
    from keras_seg.config import load_config

    path, original = resnet18
    overrides = [
        "model.backbone=resnet18",
        f"model.weights={path}",
        "model.weights_format=timm",
        "model.options={backbone_kwargs: {width: 8}}",
        "model.expected_params=null",
    ]
    demo = Path(__file__).parents[2] / "zoo_configs" / "demo_synthetic.yaml"
    cfg = load_config(demo, overrides)
    model = runs.build_model(cfg)
    for a, b in zip(model.get_layer("resnet18").get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="model.weights_format"):
        load_config(demo, [*overrides[:2], "model.weights_format=tf"])
