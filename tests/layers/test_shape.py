import numpy as np
import pytest
import tensorflow as tf

from keras_seg.layers import CropToMatch
from keras_seg.layers import PadToMultiple
from keras_seg.layers import ResizeToMatch


def test_pad_to_multiple_pads_bottom_right_with_zeros_and_crop_undoes_it():
    x = np.arange(1, 1 + 5 * 7, dtype="float32").reshape(1, 5, 7, 1)
    padded = PadToMultiple(4)(x).numpy()
    assert padded.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(padded[:, :5, :7], x)
    assert not padded[:, 5:].any() and not padded[:, :, 7:].any()
    np.testing.assert_array_equal(CropToMatch()([padded, x]).numpy(), x)
    assert PadToMultiple(4)(np.zeros((1, 8, 4, 1), "float32")).shape == (1, 8, 4, 1)
    with pytest.raises(ValueError, match="multiple must be >= 1, got 0"):
        PadToMultiple(0)


def test_resize_to_match_follows_the_reference_at_run_time():
    x = np.random.default_rng(0).random((1, 5, 7, 3)).astype("float32")
    reference = np.zeros((1, 11, 13, 1), "float32")
    np.testing.assert_allclose(
        ResizeToMatch()([x, reference]).numpy(), tf.image.resize(x, (11, 13)).numpy(), atol=1e-6
    )
    corners = ResizeToMatch(align_corners=True)([x, reference]).numpy()
    # align_corners keeps the four corner pixels exactly.
    np.testing.assert_allclose(
        corners[0, [0, 0, -1, -1], [0, -1, 0, -1]], x[0, [0, 0, -1, -1], [0, -1, 0, -1]]
    )
    nearest = ResizeToMatch("nearest")([x, reference]).numpy()
    assert set(np.unique(nearest)) <= set(np.unique(x))
    with pytest.raises(ValueError, match="'bilinear' or 'nearest', got 'cubic'"):
        ResizeToMatch("cubic")
