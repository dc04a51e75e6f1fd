"""Initialisation and BatchNorm settings of the PyTorch references (issue #13).

torchvision ResNet convolutions: kaiming_normal_(fan_out, relu); SMP decoder convolutions:
kaiming_uniform_(fan_in, relu) with zero bias; SMP head: xavier_uniform; every BatchNorm:
gamma 1, beta 0, eps 1e-5, PyTorch momentum 0.1 (Keras 0.9).
"""

import keras
import numpy as np

import keras_seg


def _model():
    return keras_seg.build(
        "unet",
        num_classes=2,
        backbone="resnet18",
        backbone_kwargs={"width": 32},
        decoder_filters=(64, 32, 32, 16, 16),
        head_kernel_size=3,
    )


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def test_convolutions_start_as_pytorchs():
    layers = {layer.name: layer for layer in _layers(_model())}
    # Backbone 3x3, 64 -> 64: normal, std sqrt(2 / (9 * 64)) (fan_out).
    kernel = layers["conv3_block2_1_conv"].kernel.numpy()
    assert kernel.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(kernel.std(), np.sqrt(2 / (9 * 64)), rtol=0.05)
    assert abs(kernel.mean()) < 0.005
    assert np.abs(kernel).max() > 2.5 * kernel.std()  # untruncated (glorot would be uniform)
    # Decoder 3x3 (P5 upsampled + the P4 skip -> 64): uniform within sqrt(6 / fan_in),
    # so std bound / sqrt(3).
    kernel = layers["decoder1_1_conv"].kernel.numpy()
    bound = np.sqrt(6 / (9 * kernel.shape[2]))
    assert np.abs(kernel).max() <= bound
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.05)
    # Head: xavier/glorot uniform, zero bias.
    head = layers["logits"]
    fan_in, fan_out = 9 * head.kernel.shape[2], 9 * head.kernel.shape[3]
    assert np.abs(head.kernel.numpy()).max() <= np.sqrt(6 / (fan_in + fan_out))
    assert not head.bias.numpy().any()


def test_batchnorms_are_pytorchs():
    norms = [
        layer for layer in _layers(_model()) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert {n.name for n in norms} >= {"conv1_bn", "decoder1_1_bn", "decoder5_2_bn"}
    for norm in norms:
        assert (norm.momentum, norm.epsilon) == (0.9, 1e-5), norm.name
        assert np.all(norm.gamma.numpy() == 1) and not norm.beta.numpy().any()
