"""What travels with an export: class names, palette and where the model came from.

Written as `labels.txt` (one class name per line, line i = class id i, the format TFLite
apps and the TF Serving examples read) and `<stem>.json` / `keras_seg.json` (everything,
including the palette and the input/output contract).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

import keras_seg
from keras_seg.data.info import voc_palette as default_palette

#: SavedModel sub-folder for files that belong with a model but that the graph does not read.
EXTRA_DIR = "assets.extra"
#: The JSON file of a SavedModel export (in `EXTRA_DIR`).
SAVED_MODEL_JSON = "keras_seg.json"


@dataclass
class ExportMetadata:
    """Class names, palette and provenance of an exported model.

    Attributes:
        class_names: one name per class id.
        palette: `[num_classes][3]` RGB colours (0..255) per class id.
        model_name: the Keras model's name (e.g. "unet").
        source: the `.keras` file or run directory it was exported from, if any.
        data_name: the data set it was trained on, if known.
        extra: format-specific details (signatures, input size, quantization...).
    """

    class_names: list[str]
    palette: list[list[int]]
    model_name: str = ""
    source: str = ""
    data_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.class_names = [str(n) for n in self.class_names]
        self.palette = np.asarray(self.palette, np.int64).reshape(-1, 3).tolist()
        if len(self.palette) != len(self.class_names):
            raise ValueError(
                f"palette has {len(self.palette)} colours for {len(self.class_names)} "
                f"class names {self.class_names}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def create(
        cls,
        num_classes: int,
        class_names: list[str] | tuple[str, ...] | None = None,
        palette: Any = None,
        **kwargs: Any,
    ) -> ExportMetadata:
        """Fill in generic names (`class_0`, ...) and the VOC palette where none are given."""
        names = list(class_names) if class_names is not None else None
        if names is None:
            names = [f"class_{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(
                f"{len(names)} class names {names} for a model with {num_classes} classes"
            )
        colours = default_palette(num_classes) if palette is None else np.asarray(palette)
        if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < num_classes:
            raise ValueError(
                f"palette must be [num_classes={num_classes}, 3] RGB, got shape {colours.shape}"
            )
        return cls(names, colours[:num_classes].tolist(), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"keras_seg_version": keras_seg.__version__, **asdict(self)}

    def write(self, directory: str | Path, json_name: str = SAVED_MODEL_JSON) -> list[Path]:
        """Write `labels.txt` and the JSON file into `directory`; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        labels = directory / "labels.txt"
        labels.write_text("".join(f"{name}\n" for name in self.class_names))
        meta = directory / json_name
        meta.write_text(json.dumps(self.to_dict(), indent=2))
        return [labels, meta]

    @classmethod
    def read(cls, path: str | Path) -> ExportMetadata:
        """Read a JSON file written by `write`."""
        values = json.loads(Path(path).read_text())
        values.pop("keras_seg_version", None)
        return cls(**values)


def metadata_file(export_path: str | Path) -> Path:
    """The JSON written with an export: `assets.extra/keras_seg.json` of a SavedModel,
    `<stem>.json` beside a `.tflite`/`.onnx` file."""
    path = Path(export_path)
    if path.suffix in (".tflite", ".onnx"):
        return path.with_suffix(".json")
    return path / EXTRA_DIR / SAVED_MODEL_JSON
