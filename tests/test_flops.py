import keras

from keras_seg.flops import count_flops


def test_counts_a_convolution_exactly():
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    model = keras.Model(inputs, outputs)
    # One multiply-add (2 FLOPs) per output element per kernel tap per input channel.
    assert count_flops(model, 16, 20) == 2 * 16 * 20 * 8 * 3 * 3 * 3
    assert count_flops(model, 16, 20, batch_size=2) == 2 * 2 * 16 * 20 * 8 * 3 * 3 * 3
