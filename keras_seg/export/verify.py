"""Parity checks: does an export give the same answers as the Keras model it came from?

`verify(model, export_path, images)` runs both on the same uint8 pixels and reports the
share of pixels whose class agrees, the largest probability difference and, with labels,
both mIoUs. Every exporter writes into a staging folder, verifies, and publishes the export
only when the agreement reaches `THRESHOLDS[kind]` (`publish_checked`): an export that
disagrees is refused with `ExportMismatch`, unless the caller allows the mismatch.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import fields
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_seg.data.info import IGNORE_LABEL
from keras_seg.export import graph
from keras_seg.export.metadata import metadata_file

#: Least share of pixels whose class must agree with the Keras model, per kind of export.
THRESHOLDS = {
    "saved_model": 0.999,
    "onnx": 0.999,
    "fp32": 0.999,
    "fp16": 0.99,
    "dynamic": 0.98,
    "int8": 0.95,
}
#: Images checked when the caller gives none (generated shapes, fixed seed), and their size
#: for exports of any size.
DEFAULT_CHECK_IMAGES = 16
DEFAULT_CHECK_SIZE = (96, 96)
_ADVICE = {
    "int8": "calibrate on more, and more typical, images of the training data (--images, "
    "--num-images), or export with --quantize dynamic or fp16",
    "dynamic": "export with --quantize fp16 or none",
    "fp16": "export with --quantize none",
}


class ExportMismatch(RuntimeError):
    """An export whose answers differ from the Keras model's more than its kind allows."""


@dataclass
class ParityReport:
    """Export vs Keras on the same images.

    Attributes:
        export: path of the export.
        format: "saved_model", "tflite" or "onnx".
        num_images: images compared; image_size: their `(H, W)`.
        pixel_agreement: fraction of pixels with the same class id (1.0 = identical maps).
        max_abs_diff, mean_abs_diff: of the class probabilities.
        keras_miou, export_miou: mean IoU against `labels` (None without labels).
    """

    export: str
    format: str
    num_images: int
    image_size: tuple[int, int]
    pixel_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    keras_miou: float | None = None
    export_miou: float | None = None

    def __str__(self) -> str:
        h, w = self.image_size
        text = (
            f"{self.format} vs Keras on {self.num_images} images {h}x{w}: class maps agree on "
            f"{100 * self.pixel_agreement:.3f}% of pixels, probabilities max |diff| "
            f"{self.max_abs_diff:.2e} (mean {self.mean_abs_diff:.2e})"
        )
        if self.keras_miou is not None:
            text += (
                f"; mIoU Keras {100 * self.keras_miou:.2f} / export {100 * self.export_miou:.2f}"
            )
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def export_format(path: str | Path) -> str:
    """ "tflite", "onnx" or "saved_model" from the path; anything else is an error."""
    path = Path(path)
    if path.suffix in (".tflite", ".onnx"):
        return path.suffix[1:]
    if (path / "saved_model.pb").exists():
        return "saved_model"
    raise ValueError(f"{path} is not a .tflite file, a .onnx file or a SavedModel directory")


def to_uint8(images: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """`[N, H, W, C]` pixels 0..255 as uint8, bilinearly resized to `size` when given."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if size is not None and tuple(images.shape[1:3]) != tuple(size):
        images = tf.image.resize(images.astype(np.float32), size, "bilinear").numpy()
    if images.dtype != np.uint8:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return images


def keras_predict(model: keras.Model, images: np.ndarray, batch_size: int = 8) -> dict:
    """The Keras model's `class_map` and `probabilities`, computed like the exports do."""
    run = graph.logits_fn(model)
    parts = [
        graph.outputs(run(tf.constant(images[i : i + batch_size], tf.float32)))
        for i in range(0, len(images), batch_size)
    ]
    return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}


def export_predict(path: str | Path, images: np.ndarray) -> dict:
    """Run an export on uint8 `images` (at the export's fixed size for TFLite/ONNX)."""
    fmt = export_format(path)
    if fmt == "tflite":
        from keras_seg.export.tflite_export import TFLiteModel

        return TFLiteModel(path).predict(images)
    if fmt == "onnx":
        from keras_seg.export.onnx_export import OnnxModel

        return OnnxModel(path).predict(images)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}


def export_input_size(path: str | Path) -> tuple[int, int] | None:
    """The fixed `(H, W)` of a TFLite export, None for size-agnostic exports."""
    if export_format(path) != "tflite":
        return None
    from keras_seg.export.tflite_export import TFLiteModel

    return TFLiteModel(path).input_size


def mean_iou(labels: np.ndarray, class_map: np.ndarray, num_classes: int) -> float:
    """Mean IoU over classes present in labels or predictions; label 255 is ignored."""
    metric = keras.metrics.MeanIoU(num_classes, ignore_class=IGNORE_LABEL, sparse_y_pred=True)
    metric.update_state(labels, class_map)
    return float(metric.result())


def verify(
    model: keras.Model,
    export_path: str | Path,
    images: np.ndarray,
    labels: np.ndarray | None = None,
) -> ParityReport:
    """Compare an export with `model` on `images`.

    Args:
        model: the Keras model the export was made from.
        export_path: a `.tflite`/`.onnx` file or a SavedModel directory.
        images: `[N, H, W, C]` pixels 0..255 (uint8 or float); resized to a TFLite
            export's fixed size (both models then see the same resized uint8 pixels).
        labels: optional `[N, H, W]` class ids (255 = ignore) for the mIoU of both.

    Returns:
        A `ParityReport`; `str(report)` is the line the CLI prints.
    """
    size = export_input_size(export_path)
    images = to_uint8(images, size)
    ours = export_predict(export_path, images)
    ref = keras_predict(model, images)
    diff = np.abs(ours["probabilities"] - ref["probabilities"])
    report = ParityReport(
        export=str(export_path),
        format=export_format(export_path),
        num_images=len(images),
        image_size=tuple(int(s) for s in images.shape[1:3]),
        pixel_agreement=float(np.mean(ours["class_map"] == ref["class_map"])),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
    )
    if labels is not None:
        labels = np.asarray(labels)
        if size is not None and tuple(labels.shape[1:3]) != size:
            labels = tf.image.resize(labels[..., None], size, "nearest").numpy()[..., 0]
        num_classes = graph.num_classes_of(model)
        report.keras_miou = mean_iou(labels, ref["class_map"], num_classes)
        report.export_miou = mean_iou(labels, ours["class_map"], num_classes)
    return report


def default_check_images(
    size: tuple[int, int] = DEFAULT_CHECK_SIZE,
    channels: int = 3,
    count: int = DEFAULT_CHECK_IMAGES,
) -> np.ndarray:
    """Generated shapes (uint8 `[count, H, W, channels]`) for checking an export without
    user images.

    They catch a broken conversion; how well a quantized model keeps its answers on real
    data shows only on real images (`check_images`, `--images`).
    """
    from keras_seg.data import synthetic

    images, _ = synthetic.make_dataset(count, size=max(16, *size), seed=12345)
    images = images[:, : size[0], : size[1]]
    if channels == 1:
        images = images.mean(-1, keepdims=True).round().astype(np.uint8)
    return images


def recorded_report(export_path: str | Path) -> ParityReport | None:
    """The parity report stored with an export by `publish_checked`, if any."""
    file = metadata_file(export_path)
    if not file.exists():
        return None
    values = json.loads(file.read_text()).get("extra", {}).get("parity")
    if not values:
        return None
    names = {f.name for f in fields(ParityReport)}
    report = ParityReport(**{k: v for k, v in values.items() if k in names})
    report.image_size = tuple(report.image_size)
    return report


def gate(report: ParityReport, kind: str, allow_mismatch: bool = False) -> None:
    """Raise `ExportMismatch` when `report` is below `THRESHOLDS[kind]` (warn if allowed)."""
    threshold = THRESHOLDS[kind]
    if report.pixel_agreement >= threshold:
        return
    message = (
        f"{kind} export agrees with the Keras model on {100 * report.pixel_agreement:.2f}% of "
        f"pixels ({report.num_images} images {report.image_size[0]}x{report.image_size[1]}), "
        f"below the required {100 * threshold:g}%"
    )
    if allow_mismatch:
        warnings.warn(f"{message}; kept because the mismatch is allowed", stacklevel=3)
        return
    advice = _ADVICE.get(kind, "report it as a bug, with the model")
    raise ExportMismatch(
        f"{message}; not written. Try: {advice}; or allow the mismatch "
        "(--allow-mismatch) to keep the file anyway"
    )


def publish_checked(
    model: keras.Model,
    path: str | Path,
    write: Callable[[Path], Path],
    kind: str,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    allow_mismatch: bool = False,
) -> tuple[Path, ParityReport]:
    """Write an export into a staging folder, verify it, then move it to `path`.

    `write(staging_path)` writes the export (and any files beside it) at `staging_path`,
    which has `path`'s name inside a fresh folder next to `path`. What exists at `path` is
    replaced only by an export that passed `gate`, so a refused export never destroys an
    earlier good one.

    Returns:
        `(path, report)`.

    Raises:
        ExportMismatch: the agreement is below the threshold of `kind`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        written = write(staging / path.name)
        report = verify(model, written, images, labels)
        report.export = str(path)
        gate(report, kind, allow_mismatch)
        meta_file = metadata_file(written)
        if meta_file.exists():  # the proof travels with the export
            values = json.loads(meta_file.read_text())
            values.setdefault("extra", {})["parity"] = {
                **report.to_dict(),
                "kind": kind,
                "threshold": THRESHOLDS[kind],
            }
            meta_file.write_text(json.dumps(values, indent=2))
        for item in staging.iterdir():
            target = path.parent / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(item), str(target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path, report
