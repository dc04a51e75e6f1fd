"""U-Net on a registered backbone: SMP-style decoder on the P1..P5 pyramid."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_seg
from tests.helpers import assert_every_variable_gets_a_gradient
from tests.helpers import random_images

# Cheap versions of each backbone family, with a small decoder.
SMALL_DECODER = (32, 16, 16, 8, 8)
SMALL_BACKBONES = {
    "resnet34": {"width": 8},
    "mobilenet_v2": {"alpha": 0.35},
    "vgg16": {"width": 8},
}


def small_unet(backbone: str, num_classes: int = 3, input_shape=(None, None, 3)):
    return keras_seg.build(
        "unet",
        num_classes=num_classes,
        input_shape=input_shape,
        backbone=backbone,
        decoder_filters=SMALL_DECODER,
        backbone_kwargs=SMALL_BACKBONES[backbone],
    )


@pytest.mark.parametrize("backbone", sorted(SMALL_BACKBONES))
def test_decoder_steps_upsample_2x_and_concat_the_pyramid(backbone):
    model = small_unet(backbone, input_shape=(64, 96, 3))
    encoder = model.get_layer(backbone)
    pyramid = {level: tuple(t.shape) for level, t in encoder.output.items()}
    for step, (filters, skip) in enumerate(
        zip(SMALL_DECODER, ("P4", "P3", "P2", "P1", None), strict=True)
    ):
        stride = 2 ** (4 - step)
        out = model.get_layer(f"decoder{step + 1}_2_relu").output
        assert tuple(out.shape) == (None, 64 // stride, 96 // stride, filters)
        if skip is None:
            with pytest.raises(ValueError, match="decoder5_concat"):
                model.get_layer(f"decoder{step + 1}_concat")
        else:
            concat = model.get_layer(f"decoder{step + 1}_concat").output
            up_channels = SMALL_DECODER[step - 1] if step else pyramid["P5"][-1]
            assert pyramid[skip][1:3] == (64 // stride, 96 // stride)
            assert concat.shape[-1] == up_channels + pyramid[skip][-1]
    assert tuple(model.output.shape) == (None, 64, 96, 3)


@pytest.mark.parametrize("backbone", sorted(SMALL_BACKBONES))
def test_any_input_size_and_float32_logits(backbone):
    model = small_unet(backbone, num_classes=5)
    for height, width in [(64, 64), (45, 71)]:
        out = model(random_images(2, height, width), training=False)
        assert tuple(out.shape) == (2, height, width, 5)
        assert out.dtype == tf.float32
        assert np.isfinite(out.numpy()).all()


def test_uses_the_backbone_normalization():
    model = small_unet("resnet34")
    assert model.get_layer("normalize").mode == "torch"
    assert small_unet("vgg16").get_layer("normalize").mode == "caffe"


def test_keras_file_round_trip_and_every_variable_trains(tmp_path):
    model = small_unet("resnet34", num_classes=4)
    x = random_images(2, 64, 64)
    y = np.random.default_rng(1).integers(0, 4, (2, 64, 64))
    assert_every_variable_gets_a_gradient(model, x, y)
    path = tmp_path / "unet_resnet34.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_mixed_bfloat16_keeps_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = small_unet("resnet34")
    assert all(v.dtype == "float32" for v in model.weights)
    assert model.get_layer("decoder1_1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("logits").compute_dtype == "bfloat16"  # as under torch.autocast
    assert model.get_layer("crop_to_input").compute_dtype == "float32"
    out = model(random_images(1, 64, 64), training=False)
    assert out.dtype == tf.float32
    assert np.isfinite(out.numpy()).all()


def test_resnet34_parameters_match_segmentation_models_pytorch():
    model = keras_seg.build("unet", num_classes=21, backbone="resnet34")
    # PyTorch counts weights and BatchNorm gamma/beta (running statistics are buffers), i.e.
    # Keras' trainable parameters. SMP's Unet("resnet34", classes=21) has 24,439,269; ours
    # has 2,688 fewer because its head is a 3x3 convolution and ours a 1x1.
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == 24_436_581
    assert abs(trainable - 24_439_269) / 24_439_269 < 0.01


def test_paper_unet_is_unchanged():
    model = keras_seg.build("unet", num_classes=2, input_shape=(None, None, 1), batch_norm=False)
    assert model.count_params() == 31_030_658
    assert model.name == "unet"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"decoder_filters": (8, 8, 8, 8, 8)}, r"need a backbone.*decoder_filters=\(8, 8"),
        ({"backbone_kwargs": {"width": 8}}, r"need a backbone.*backbone_kwargs=\{'width'"),
        ({"weights": "imagenet"}, r"no pretrained weights.*'imagenet'"),
        ({"backbone": "resnet34", "depth": 3}, r"paper encoder only.*depth=3"),
        ({"backbone": "resnet34", "decoder_filters": (8, 8)}, r"5 positive ints.*\(8, 8\)"),
        ({"backbone": "resnet3000"}, r"Unknown backbone 'resnet3000'.*resnet34"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_seg.build("unet", num_classes=2, **kwargs)


def test_imagenet_weights_reach_the_backbone():
    # resnet34 has no keras.applications weights, so the backbone itself refuses them: proof
    # that `weights` is passed through rather than dropped.
    with pytest.raises(ValueError, match=r"resnet34.*'imagenet'"):
        keras_seg.build("unet", num_classes=2, backbone="resnet34", weights="imagenet")
