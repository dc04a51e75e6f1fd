"""`keras-seg predict`: class-id PNGs and colour overlays for images (OpenCV I/O).

The model is a `.keras` file or a training run folder (`best.keras`, else `final.keras`).
When a `config.yaml` sits beside the model, its data set's palette and class names and its
eval settings (sliding window, scales, flip) are used; otherwise the VOC colour map.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np

from keras_seg.config import Config
from keras_seg.config import EvalConfig
from keras_seg.config import load_config
from keras_seg.data.datasets import colorize
from keras_seg.data.info import voc_palette

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")


def load_run(path: str | Path) -> tuple[keras.Model, Config | None]:
    """Load a `.keras` model (or a run folder's best/final model) and the config beside it."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "best.keras", path / "final.keras"]
        found = [p for p in candidates if p.exists()]
        if not found:
            raise FileNotFoundError(f"{path} has neither best.keras nor final.keras")
        path = found[0]
    if path.suffix != ".keras" or not path.exists():
        raise FileNotFoundError(f"expected a .keras file or a training run folder, got {path}")
    model = keras.saving.load_model(path, compile=False)
    config_path = path.parent / "config.yaml"
    return model, load_config(config_path) if config_path.exists() else None


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5):
    """Blend the colourised mask over an RGB image: `(1 - alpha) * image + alpha * colours`."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, 1 - alpha, colorize(mask, palette), alpha, 0)


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """An RGB (or grayscale for 1-channel models) `uint8 [H, W, C]` image."""
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return image[..., None] if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    return [path]


def predict_paths(
    model_path: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    alpha: float = 0.5,
) -> list[Path]:
    """Write `<stem>.png` (class ids) and `<stem>_overlay.png` for each input image.

    Args:
        model_path: `.keras` file or training run folder.
        input_path: one image or a folder of images.
        output_dir: created if missing.
        alpha: overlay opacity of the class colours.

    Returns:
        The written files.
    """
    from keras_seg.training import datasets
    from keras_seg.training.evaluation import _Forward
    from keras_seg.training.evaluation import predict_scores
    from keras_seg.training.evaluation import resolved_eval_config

    model, cfg = load_run(model_path)
    num_classes = model.output_shape[-1]
    palette, eval_cfg = voc_palette(num_classes), EvalConfig()
    if cfg is not None:
        eval_cfg = resolved_eval_config(cfg)
        try:
            palette = datasets.class_info(cfg).palette
        except (ValueError, OSError) as e:  # e.g. a folder data set's classes.txt is not here
            print(f"using the default palette ({e})")
    channels = model.input_shape[-1]
    forward = _Forward(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in _inputs(Path(input_path)):
        image = read_image(path, channels)
        pred = predict_scores(forward, image, eval_cfg).argmax(-1).astype(np.uint8)
        ids, over = output_dir / f"{path.stem}.png", output_dir / f"{path.stem}_overlay.png"
        cv2.imwrite(str(ids), pred)
        cv2.imwrite(
            str(over), cv2.cvtColor(overlay(image, pred, palette, alpha), cv2.COLOR_RGB2BGR)
        )
        written += [ids, over]
    print(f"wrote {len(written)} files to {output_dir}")
    return written
