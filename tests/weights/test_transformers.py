"""Hugging Face SegFormer / MiT checkpoints, written here without PyTorch.

A small keras_seg SegFormer's weights are turned into transformers' keys and layouts (the
inverse of `keras_seg.weights.assign`) and saved as `config.json` + `model.safetensors`, as
`save_pretrained` lays them out; reading them back must give the same model. Parity with
transformers itself is `test_parity.py` (cases `transformers_*`).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_seg
from keras_seg.backbones import build_backbone
from keras_seg.weights import WeightsError
from keras_seg.weights import read_checkpoint
from keras_seg.weights import recognise
from keras_seg.weights.assign import weighted_layers
from keras_seg.weights.transformers import model_map
from tests.helpers import random_images

SMALL = keras_seg.get_spec("segformer").small_config
SIZES = SMALL["backbone_kwargs"]["hidden_sizes"]


def hf_state(model: keras.Model, backbone: str = "mit_b0") -> dict[str, np.ndarray]:
    """`model`'s weights under transformers' keys, in PyTorch layouts."""
    layers = weighted_layers(model)
    state = {}
    for name, module in model_map(model, backbone).items():
        layer = layers[name]
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            keys = ("weight", "bias", "running_mean", "running_var")
        elif isinstance(layer, keras.layers.LayerNormalization):
            keys = ("weight", "bias")
        else:
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                weights[0] = weights[0].transpose(2, 3, 0, 1)  # HWC1 -> C1HW
            elif isinstance(layer, keras.layers.Conv2D):
                weights[0] = weights[0].transpose(3, 2, 0, 1)  # HWIO -> OIHW
            else:  # Dense
                weights[0] = weights[0].T
            keys = ("weight", "bias")
        for key, value in zip(keys, weights, strict=False):
            state[f"{module}.{key}"] = np.ascontiguousarray(value)
    return state


@pytest.fixture(scope="module")
def segformer_folder(tmp_path_factory):
    """(folder, model): a small SegFormer with random weights saved as a hub folder."""
    model = keras_seg.build("segformer", num_classes=4, **SMALL)
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            rng.uniform(0.5, 1.5, w.shape).astype("float32")
            if "variance" in v.path
            else rng.normal(0, 0.3, w.shape).astype("float32")
            for v, w in zip(model.weights, model.get_weights(), strict=True)
        ]
    )
    folder = tmp_path_factory.mktemp("hf") / "segformer"
    folder.mkdir()
    save_file(hf_state(model), str(folder / "model.safetensors"))
    config = {
        "model_type": "segformer",
        "hidden_sizes": list(SIZES),
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 2, 5, 8],
        "decoder_hidden_size": SMALL["decoder_filters"],
        "classifier_dropout_prob": 0.1,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder, model


def test_whole_model_round_trip(segformer_folder):
    folder, original = segformer_folder
    layout = recognise(read_checkpoint(folder))
    assert (layout.format, layout.model, layout.num_classes) == ("transformers", "segformer", 4)
    assert layout.backbone_kwargs == {"hidden_sizes": SIZES, "depths": (1, 1, 1, 1)}
    loaded = keras_seg.build("segformer", num_classes=None, weights=str(folder))
    x = random_images(1, 70, 90)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(original(x)), rtol=1e-5, atol=1e-5)


def test_encoder_of_an_imagenet_classifier_loads_into_the_backbone(segformer_folder, tmp_path):
    folder, original = segformer_folder
    state = read_checkpoint(folder).tensors
    state = {k: v for k, v in state.items() if k.startswith("segformer.encoder.")}
    state["classifier.weight"] = np.zeros((10, SIZES[-1]), np.float32)
    state["classifier.bias"] = np.zeros(10, np.float32)
    path = tmp_path / "mit.safetensors"
    save_file(state, str(path))
    layout = recognise(read_checkpoint(path))
    assert (layout.model, layout.backbone, layout.description) == (
        None,
        "mit_b0",
        "transformers mit-b0 encoder",
    )
    backbone = build_backbone("mit_b0", weights=str(path))
    x = random_images(1, 64, 64) / 255.0
    theirs = original.get_layer("mit_b0")(x)
    for level, y in backbone(x).items():
        np.testing.assert_allclose(np.asarray(y), np.asarray(theirs[level]), rtol=1e-5, atol=1e-5)
    # And into a SegFormer with a new decoder.
    model = keras_seg.build("segformer", num_classes=3, weights=str(path), decoder_filters=8)
    assert tuple(model(random_images(1, 40, 40)).shape) == (1, 40, 40, 3)


def test_mistakes_are_one_line_errors(segformer_folder, tmp_path):
    folder, _ = segformer_folder
    with pytest.raises(
        WeightsError, match=r"the weights are transformers SegFormer.*build 'segformer'"
    ):
        keras_seg.build("unet", num_classes=2, weights=str(folder))
    with pytest.raises(WeightsError, match=r"the weights have 4 classes, num_classes=7"):
        keras_seg.build("segformer", num_classes=7, weights=str(folder))
    with pytest.raises(WeightsError, match=r"fix decoder_filters=16, got 32"):
        keras_seg.build("segformer", num_classes=None, weights=str(folder), decoder_filters=32)
    config = json.loads((folder / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").symlink_to(folder / "model.safetensors")
    (other / "config.json").write_text(json.dumps({**config, "sr_ratios": [4, 2, 1, 1]}))
    with pytest.raises(WeightsError, match=r"config.json has sr_ratios=\[4, 2, 1, 1\]"):
        keras_seg.build("segformer", num_classes=None, weights=str(other))
