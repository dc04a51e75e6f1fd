"""PSPNet: the pyramid pooling module, output stride 8, the auxiliary head, the paper's size."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_seg
from keras_seg.config import TrainConfig
from keras_seg.models.pspnet import PAPER_PARAMS
from tests.helpers import random_images
from tests.helpers import small_model


def _backbone(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def test_pyramid_pooling_has_four_bins_at_a_quarter_of_the_channels():
    model = small_model("pspnet", pyramid_filters=None)
    channels = _backbone(model).output["P5"].shape[-1]  # 64 on resnet18 width 8
    for b in (1, 2, 3, 6):
        assert model.get_layer(f"ppm_pool{b}").bins == b
        assert model.get_layer(f"ppm_b{b}_conv").filters == channels // 4
        assert model.get_layer(f"ppm_b{b}_conv").kernel_size == (1, 1)
    assert model.get_layer("ppm_concat").output.shape[-1] == 2 * channels
    assert model.get_layer("head_conv_conv").kernel_size == (3, 3)
    assert model.get_layer("head_dropout").rate == 0.1


def test_backbone_runs_at_output_stride_8():
    model = small_model("pspnet")
    backbone = _backbone(model)
    out = backbone(np.zeros((1, 64, 64, 3), "float32"))
    assert out["P5"].shape[1:3] == (8, 8) and out["P4"].shape[1:3] == (8, 8)


def test_aux_head_returns_both_logits_and_trains_with_weight_0_4():
    model = small_model("pspnet", num_classes=4, aux_head=True)
    x = random_images(2, 45, 71)
    out = model(x, training=False)
    assert set(out) == {"logits", "aux_logits"}
    assert out["logits"].shape == out["aux_logits"].shape == (2, 45, 71, 4)
    assert model.get_layer("aux_conv_conv").filters == 8  # the small config's aux_filters
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer="sgd",
        loss={"logits": loss, "aux_logits": loss},
        loss_weights={"logits": 1.0, "aux_logits": TrainConfig().aux_loss_weight},
    )
    y = np.random.default_rng(0).integers(0, 4, (2, 45, 71))
    history = model.fit(x, {"logits": y, "aux_logits": y}, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Without the head the weights of the main path are the same layers.
    plain = small_model("pspnet", num_classes=4)
    assert len(plain.weights) < len(model.weights)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output_stride": 32}, "output_stride must be 8 or 16, got 32"),
        ({"pyramid_bins": (1, 0)}, r"pyramid_bins must be positive integers, got \(1, 0\)"),
        ({"head_filters": 0}, "head_filters must be a positive integer, got 0"),
        ({"pyramid_filters": 0}, "pyramid_filters must be a positive integer or None, got 0"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_model("pspnet", **kwargs)


@pytest.mark.slow
def test_resnet50_d8_learnable_parameters_match_mmsegmentation():
    """mmsegmentation pspnet_r50-d8 (aux head, 19 classes) has 48,975,494 learnable parameters
    (derived in keras_seg/models/pspnet.py): ours with its deep stem exactly, with the
    plain stem 19,232 fewer."""
    for stem, expected in [("deep", PAPER_PARAMS), ("plain", PAPER_PARAMS - 19_232)]:
        model = keras_seg.build(
            "pspnet", num_classes=19, aux_head=True, backbone_kwargs={"stem": stem}
        )
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == expected, stem
    assert abs(trainable - PAPER_PARAMS) / PAPER_PARAMS < 0.001


def test_torchvision_checkpoint_loads_into_the_dilated_backbone(tmp_path):
    from safetensors.numpy import save_file

    from keras_seg.backbones import build_backbone
    from tests.weights.test_weights import torch_state

    original = build_backbone("resnet18", width=8)
    rng = np.random.default_rng(0)
    original.set_weights([rng.normal(size=w.shape).astype("float32") for w in original.weights])
    save_file(torch_state(original, "resnet18"), str(tmp_path / "r18.safetensors"))
    model = keras_seg.build(
        "pspnet",
        num_classes=3,
        backbone="resnet18",
        backbone_kwargs={"width": 8},
        weights=str(tmp_path / "r18.safetensors"),
        pyramid_filters=8,
    )
    for a, b in zip(_backbone(model).get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_deep_stem_gives_mmsegmentation_pspnet_r50_d8_exactly():
    model = keras_seg.build(
        "pspnet", num_classes=19, aux_head=True, backbone_kwargs={"stem": "deep"}
    )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == PAPER_PARAMS
    assert model.get_layer("resnet50_torchvision").get_layer("conv1_1_conv").strides == (2, 2)


def test_onnx_export_takes_any_size(tmp_path):
    """The adaptive pooling keeps PSPNet's ONNX graph dynamic in height and width."""
    pytest.importorskip("tf2onnx", reason="extra 'onnx' not installed")
    pytest.importorskip("onnxruntime", reason="extra 'onnx' not installed")
    from keras_seg.export.verify import keras_predict
    from keras_seg.export.verify import to_uint8

    model = small_model("pspnet", num_classes=3)
    path = keras_seg.export.onnx(model, tmp_path / "pspnet.onnx")
    runner = keras_seg.export.OnnxModel(path)
    for height, width in [(64, 64), (45, 71)]:
        x = to_uint8(random_images(1, height, width, seed=height))
        np.testing.assert_allclose(
            runner.predict(x)["probabilities"], keras_predict(model, x)["probabilities"], atol=1e-4
        )
