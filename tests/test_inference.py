"""Inference modes (whole, sliding window, multi-scale, flip), split evaluation, and the
prediction files of `keras-seg predict`."""

import json
import os

import cv2
import keras
import numpy as np
import pytest

from keras_seg import runs
from keras_seg.cli import main
from keras_seg.config import EvalConfig
from keras_seg.config import save_config
from keras_seg.data import colorize
from keras_seg.data import synthetic
from keras_seg.inference import Predictor
from keras_seg.inference import evaluate
from keras_seg.inference import overlay
from keras_seg.inference import predict_files
from keras_seg.inference import sliding_logits
from keras_seg.inference import window_starts
from keras_seg.machine import FROZEN_WEIGHTS_VARIABLE
from tests.helpers import random_images
from tests.helpers import small_model
from tests.training.common import tiny_config


def predict_scores(model, image, settings=None):
    return Predictor(model, settings).scores(image)


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
    sliding = sliding_logits(Predictor(model).logits, image, window, overlap, batch_size=3)
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
    forward = Predictor(model).logits
    out = sliding_logits(forward, np.zeros((4, 6, 3), "float32"), (4, 4), overlap=0.5)[0, :, 0]
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


def test_evaluate_counts_every_pixel_once(tmp_path):
    _, cfg = tiny_config(tmp_path)
    info = runs.class_info(cfg)
    model = small_model("unet", num_classes=5)
    result = evaluate(Predictor(model), runs.load_split(cfg, "val"), info)
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


def _images(folder, sizes=((40, 56), (33, 47))):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"img{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return folder


def test_colorize_and_overlay():
    palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    mask = np.array([[0, 1], [1, 0]])
    np.testing.assert_array_equal(colorize(mask, palette)[0, 1], [255, 0, 0])
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, mask, palette, alpha=0.5)
    np.testing.assert_array_equal(blended[0, 0], [50, 50, 50])
    np.testing.assert_array_equal(blended[0, 1], [178, 50, 50])  # round(127.5 + 50)


def test_predict_from_a_run_folder_uses_its_palette(tmp_path):
    _, cfg = tiny_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    model = small_model("unet", num_classes=5)
    model.save(run / "best.keras")
    save_config(cfg, run / "config.yaml")
    written = predict_files(run, _images(tmp_path / "in"), tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "img0.png",
        "img0_overlay.png",
        "img1.png",
        "img1_overlay.png",
    ]
    ids = cv2.imread(str(tmp_path / "out" / "img1.png"), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (33, 47) and ids.dtype == np.uint8 and ids.max() < 5
    image = cv2.imread(str(tmp_path / "in" / "img1.png"))[..., ::-1].astype("float32")
    np.testing.assert_array_equal(ids, model(image[None]).numpy()[0].argmax(-1))
    over = cv2.imread(str(tmp_path / "out" / "img1_overlay.png"))[..., ::-1]
    expected = overlay(image.astype(np.uint8), ids, synthetic.PALETTE)
    np.testing.assert_array_equal(over, expected)


def test_cli_predict_with_a_bare_keras_file(tmp_path):
    small_model("unet", num_classes=3).save(tmp_path / "m.keras")
    folder = _images(tmp_path / "in", sizes=((24, 24),))
    code = main(
        ["predict", "--model", str(tmp_path / "m.keras"), "--input", str(folder / "img0.png")]
        + ["--output", str(tmp_path / "out")]
    )
    assert code == 0
    assert (tmp_path / "out" / "img0.png").exists() and (
        tmp_path / "out" / "img0_overlay.png"
    ).exists()
    # Only the console script declares its process inference-only: this process trains later.
    assert FROZEN_WEIGHTS_VARIABLE not in os.environ


def test_predict_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="without best.keras or final.keras"):
        predict_files(tmp_path, tmp_path, tmp_path / "out")
    small_model("unet", num_classes=3).save(tmp_path / "m.keras")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images .* in .*empty"):
        predict_files(tmp_path / "m.keras", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="input .*missing.png does not exist"):
        predict_files(tmp_path / "m.keras", tmp_path / "missing.png", tmp_path / "out")


@pytest.mark.parametrize("native", [True, False])
def test_an_emulated_precision_runs_as_a_float32_copy(monkeypatch, native):
    import keras_seg
    from keras_seg import inference

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16 = keras_seg.build("unet", num_classes=3, backbone="resnet18")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    f32 = keras_seg.build("unet", num_classes=3, backbone="resnet18")
    f32.set_weights(bf16.get_weights())
    monkeypatch.setattr(inference, "runs_natively", lambda policy: native)
    predictor = Predictor(bf16)
    assert predictor.float32_copy is (not native)
    assert predictor.emulated_policies == ([] if native else ["mixed_bfloat16"])
    x = random_images(1, 64, 64)
    got, want = predictor.logits(x), f32.predict_on_batch(x)
    if native:  # bfloat16 arithmetic: near, not equal
        assert not np.allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(got, want, atol=0.15 * np.abs(want).max())
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_which_precisions_run_natively(monkeypatch):
    from keras_seg import machine

    for gpu, bf16_cpu, expected in [
        (False, False, {"float32": True, "mixed_bfloat16": False, "mixed_float16": False}),
        (False, True, {"float32": True, "mixed_bfloat16": True, "mixed_float16": False}),
        (True, False, {"float32": True, "mixed_bfloat16": True, "mixed_float16": True}),
    ]:
        monkeypatch.setattr(machine, "gpu_available", lambda gpu=gpu: gpu)
        monkeypatch.setattr(machine, "cpu_has_native_bfloat16", lambda b=bf16_cpu: b)
        assert {p: machine.runs_natively(p) for p in expected} == expected
