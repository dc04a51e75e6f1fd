"""Inference modes (whole, sliding window, multi-scale, flip) and split evaluation."""

import json

import keras
import numpy as np
import pytest

from keras_seg.cli import main
from keras_seg.config import EvalConfig
from keras_seg.training import datasets
from keras_seg.training.evaluation import evaluate_model
from keras_seg.training.evaluation import predict_scores
from keras_seg.training.evaluation import sliding_logits
from keras_seg.training.evaluation import window_starts
from tests.helpers import random_images
from tests.helpers import small_model
from tests.training.common import tiny_config


def pointwise_model(num_classes=3):
    """1x1 convolutions only: each pixel's logits depend on that pixel alone, so any tiling
    of the image must give exactly the full-image logits."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 1, activation="relu")(inputs / 255.0)
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(x))


def test_window_starts_cover_the_image_flush_with_the_end():
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(100, 40, 40) == [0, 40, 60]
    assert window_starts(30, 40, 30) == [0]
    for size, window, stride in [(97, 32, 24), (64, 64, 48), (65, 64, 48)]:
        starts = window_starts(size, window, stride)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + window] = True
        assert covered.all() and starts[-1] + window == max(size, window)


@pytest.mark.parametrize("window, overlap", [((32, 48), 0.25), ((40, 40), 0.5), ((64, 128), 0.0)])
def test_sliding_window_equals_whole_image_for_a_pointwise_model(window, overlap):
    model = pointwise_model()
    image = random_images(1, 70, 90)[0]
    whole = model(image[None]).numpy()[0]
    sliding = sliding_logits(model, image, window, overlap, batch_size=3)
    assert sliding.shape == whole.shape
    np.testing.assert_allclose(sliding, whole, rtol=1e-5, atol=1e-5)
    cfg = EvalConfig(mode="sliding", window=list(window), overlap=overlap)
    np.testing.assert_allclose(predict_scores(model, image, cfg), whole, rtol=1e-5, atol=1e-5)


def test_sliding_window_averages_overlapping_logits():
    # A model whose logits are the window-local x coordinate exposes the averaging.
    inputs = keras.Input((None, None, 3))
    ramp = keras.layers.Lambda(
        lambda x: keras.ops.cumsum(keras.ops.ones_like(x[..., :1]), axis=2) - 1.0
    )(inputs)
    model = keras.Model(inputs, ramp)
    out = sliding_logits(model, np.zeros((4, 6, 3), "float32"), (4, 4), overlap=0.5)[0, :, 0]
    # Windows start at x = 0 and 2: columns 2-3 are seen twice, as 2,3 and as 0,1.
    np.testing.assert_allclose(out, [0, 1, (2 + 0) / 2, (3 + 1) / 2, 2, 3])


def test_flip_averaging_is_symmetric():
    model = small_model("unet", num_classes=4)
    image = random_images(1, 48, 64)[0]
    cfg = EvalConfig(flip=True)
    scores = predict_scores(model, image, cfg)
    mirrored = predict_scores(model, image[:, ::-1], cfg)
    np.testing.assert_allclose(mirrored, scores[:, ::-1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)  # averaged probabilities


def test_multi_scale_returns_probabilities_at_the_input_size():
    model = small_model("unet", num_classes=4)
    image = random_images(1, 45, 61)[0]
    scores = predict_scores(model, image, EvalConfig(scales=[0.5, 1.0, 1.5], flip=True))
    assert scores.shape == (45, 61, 4)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)
    # One scale, no flip: the model's own logits.
    np.testing.assert_allclose(
        predict_scores(model, image), model(image[None]).numpy()[0], rtol=1e-5, atol=1e-5
    )


def test_evaluate_model_counts_every_pixel_once(tmp_path):
    _, cfg = tiny_config(tmp_path)
    info = datasets.class_info(cfg)
    model = small_model("unet", num_classes=5)
    result = evaluate_model(model, cfg, datasets.load_split(cfg, "val"), info)
    assert result["num_pixels"] == 4 * 48 * 48
    assert np.asarray(result["confusion_matrix"]).sum() == 4 * 48 * 48
    assert [r["name"] for r in result["per_class"]] == list(info.class_names)


def test_cli_evaluate_prints_the_table_and_writes_json(tmp_path, capsys):
    path, _ = tiny_config(tmp_path)
    small_model("unet", num_classes=5).save(tmp_path / "model.keras")
    out = tmp_path / "eval.json"
    code = main(
        ["evaluate", "--config", str(path), "--checkpoint", str(tmp_path / "model.keras")]
        + ["--output", str(out), "--max-images", "2", "--set", "eval.flip=true"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "rectangle" in text and "mIoU" in text
    result = json.loads(out.read_text())
    assert result["num_pixels"] == 2 * 48 * 48 and result["eval"]["flip"] is True
