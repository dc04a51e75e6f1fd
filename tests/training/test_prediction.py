"""`keras-seg predict`: class-id PNGs and overlays for a .keras model or a run folder."""

import cv2
import numpy as np
import pytest

from keras_seg.cli import main
from keras_seg.config import save_config
from keras_seg.data import synthetic
from keras_seg.training.prediction import colorize
from keras_seg.training.prediction import overlay
from keras_seg.training.prediction import predict_paths
from tests.helpers import small_model
from tests.training.common import tiny_config


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
    written = predict_paths(run, _images(tmp_path / "in"), tmp_path / "out")
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


def test_predict_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither best.keras nor final.keras"):
        predict_paths(tmp_path, tmp_path, tmp_path / "out")
    small_model("unet", num_classes=3).save(tmp_path / "m.keras")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images .* in .*empty"):
        predict_paths(tmp_path / "m.keras", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="input .*missing.png does not exist"):
        predict_paths(tmp_path / "m.keras", tmp_path / "missing.png", tmp_path / "out")
