"""What `keras-seg export` exports: a `.keras` file or a training run's directory.

A run directory holds `best.keras` / `final.keras` and `config.yaml`; the config's data set
name gives the class names and palette (`keras_seg.data.info`), with generic names and the
VOC palette when the data set is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import yaml

from keras_seg.export.graph import num_classes_of
from keras_seg.export.metadata import ExportMetadata
from keras_seg.export.metadata import dataset_labels

CHECKPOINTS = ("best", "final")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class ExportSource:
    """A loaded model plus what is known about it.

    Attributes:
        model: the Keras model.
        model_path: the `.keras` file it was loaded from.
        run_dir: the training run directory, if the source was one.
        config: the run's `config.yaml` as a dict (empty without one).
        metadata: class names, palette and provenance for the exports.
    """

    model: keras.Model
    model_path: Path
    run_dir: Path | None
    metadata: ExportMetadata
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def data_name(self) -> str:
        return self.metadata.data_name

    @property
    def name(self) -> str:
        model_cfg = self.config.get("model") or {}
        return str(model_cfg.get("name") or self.model.name)

    def export_setting(self, key: str, default: Any = None) -> Any:
        """A value of the config's `export` section (e.g. `input_size`, `tflite_quantize`)."""
        return (self.config.get("export") or {}).get(key, default)


def load_source(path: str | Path, checkpoint: str = "best") -> ExportSource:
    """Load a `.keras` file, or `<checkpoint>.keras` of a run directory (falling back to the other).

    Raises:
        FileNotFoundError: no such file, or a directory without `best.keras`/`final.keras`.
    """
    import keras_seg.layers  # noqa: F401  (registers the custom layers for loading)
    import keras_seg.models  # noqa: F401

    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    path = Path(path)
    run_dir = None
    if path.is_dir():
        run_dir = path
        order = [checkpoint] + [c for c in CHECKPOINTS if c != checkpoint]
        found = [path / f"{c}.keras" for c in order if (path / f"{c}.keras").exists()]
        if not found:
            raise FileNotFoundError(f"{path} has no best.keras or final.keras")
        path = found[0]
    elif not path.exists():
        raise FileNotFoundError(f"no model at {path} (expected a .keras file or a run directory)")
    elif path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras file or a run directory")
    config: dict[str, Any] = {}
    config_file = (run_dir or path.parent) / "config.yaml"
    if config_file.exists():
        config = yaml.safe_load(config_file.read_text()) or {}
    model = keras.saving.load_model(path, compile=False)
    data = config.get("data")
    data = data if isinstance(data, dict) else {"name": data}
    data_name = data.get("name")
    names, palette = dataset_labels(
        data_name, num_classes_of(model), data.get("data_dir"), data.get("options")
    )
    metadata = ExportMetadata.create(
        num_classes_of(model),
        names,
        palette,
        model_name=model.name,
        source=str(run_dir or path),
        data_name=str(data_name or ""),
    )
    return ExportSource(model, path, run_dir, metadata, config)


def read_images(directory: str | Path, size: tuple[int, int], limit: int) -> np.ndarray:
    """Up to `limit` images (JPEG/PNG/BMP) from `directory`, RGB uint8 resized to `size`."""
    import cv2

    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {directory}")
    images = []
    for file in files[:limit]:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {file}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        images.append(cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return np.stack(images)


def sample_images(
    source: ExportSource, size: tuple[int, int], count: int, directory: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Images for int8 calibration and parity checks: `(images, labels or None, description)`.

    From `directory` when given; else the built-in synthetic images (with labels when the
    model was trained on them, so the report can show both mIoUs).
    """
    if directory is not None:
        images = read_images(directory, size, count)
        return images, None, f"{len(images)} images from {directory}"
    from keras_seg.data import synthetic

    images, labels = synthetic.make_dataset(count, size=max(size), seed=12345)
    images, labels = images[:, : size[0], : size[1]], labels[:, : size[0], : size[1]]
    trained_on_it = source.data_name == "synthetic"
    description = f"{count} synthetic images" + ("" if trained_on_it else " (not its data)")
    return images, labels if trained_on_it else None, description
