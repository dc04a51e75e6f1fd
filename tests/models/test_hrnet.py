"""HRNetV2's segmentation head: four resolutions concatenated at stride 4."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import random_images
from tests.helpers import small_model


def test_head_concatenates_all_branches_at_stride_4():
    model = small_model("hrnet", head_filters=None)
    concat = model.get_layer("head_concat")
    assert concat.output.shape[-1] == 16 + 32 + 64 + 128  # 15C for hrnetv2_w18_small (C=16)
    assert model.get_layer("head_conv").filters == 240
    assert model.get_layer("head_conv").kernel_size == (1, 1)
    for level in ("P3", "P4", "P5"):
        assert model.get_layer(f"head_upsample_{level}").interpolation == "bilinear"
    out = model(random_images(1, 64, 96), training=False)
    assert out.shape == (1, 64, 96, 3)


def test_align_corners_option_and_bad_head_filters():
    model = small_model("hrnet", align_corners=True)
    assert model.get_layer("upsample_logits").align_corners
    assert np.isfinite(model(random_images(1, 45, 71)).numpy()).all()
    with pytest.raises(ValueError, match="head_filters must be a positive integer or None, got 0"):
        small_model("hrnet", head_filters=0)
