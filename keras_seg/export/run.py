"""`keras-seg export`: export a `.keras` file or a training run, describe it, gate it.

Defaults come from the run's `config.yaml` (`export.input_size`, `export.tflite_quantize`,
`data.crop_size`) where the command line leaves them open. Every export is compared with
the Keras model on check images and refused below its threshold
(`keras_seg.export.verify.THRESHOLDS`). The check images are, in order of preference: the
`images` folder (also the int8 calibration set), the first images of the run's validation
split (with their labels, so the report shows the mIoU of both), or generated shapes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from keras_seg.export.metadata import ExportMetadata
from keras_seg.export.saved_model_export import SIGNATURES
from keras_seg.export.tflite_export import DEFAULT_INPUT_SIZE
from keras_seg.export.verify import ParityReport
from keras_seg.export.verify import default_check_images
from keras_seg.export.verify import recorded_report
from keras_seg.fold import reduced_policies
from keras_seg.inference import image_files
from keras_seg.inference import read_image
from keras_seg.runs import Run
from keras_seg.runs import load_run
from keras_seg.runs import load_split

FORMATS = ("saved_model", "tflite", "tfserving", "onnx")


@dataclass
class CheckImages:
    """Images an export is calibrated (int8) and checked on."""

    images: np.ndarray
    labels: np.ndarray | None
    description: str


def _input_size(run: Run, input_size: Any) -> tuple[int, int]:
    cfg = run.config
    fixed = run.model.input_shape[1:3]
    candidates = [
        input_size,
        cfg.export.input_size if cfg else None,
        tuple(fixed) if None not in fixed else None,
        cfg.data.crop_size if cfg else None,
        DEFAULT_INPUT_SIZE,
    ]
    size = next(c for c in candidates if c)
    return (int(size[0]), int(size[1]))


def check_images(
    run: Run, size: tuple[int, int], count: int, folder: str | Path | None = None
) -> CheckImages:
    """The images to calibrate and check an export on, resized to `size` (see module doc)."""
    channels = int(run.model.input_shape[-1])
    if folder is not None:
        files = image_files(folder)[:count]
        images = [_resize(read_image(f, channels), size, "bilinear") for f in files]
        return CheckImages(np.stack(images), None, f"{len(images)} images from {folder}")
    if run.config is not None:
        cfg = run.config
        try:
            pairs = list(load_split(cfg, cfg.data.val_split).take(count).as_numpy_iterator())
        except (ValueError, OSError, tf.errors.OpError) as e:
            warnings.warn(
                f"cannot read the {cfg.data.name}/{cfg.data.val_split} images to check the "
                f"export on ({str(e).splitlines()[0]}); using generated shapes (--images "
                "gives your own)",
                stacklevel=2,
            )
        else:
            if pairs and channels == pairs[0][0].shape[-1]:
                images = np.stack([_resize(x, size, "bilinear") for x, _ in pairs])
                labels = np.stack(
                    [_resize(y[..., None], size, "nearest")[..., 0] for _, y in pairs]
                )
                where = f"{cfg.data.name}/{cfg.data.val_split}"
                return CheckImages(images, labels, f"{len(images)} {where} images")
    images = default_check_images(size, channels, count)
    return CheckImages(images, None, f"{count} generated shape images (not the model's data)")


def _resize(image: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    if tuple(image.shape[:2]) == tuple(size):
        return np.asarray(image, np.uint8)
    resized = tf.image.resize(np.asarray(image, np.float32), size, method)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def default_output(run: Run, fmt: str, quantize: str | None) -> Path:
    """Where an export goes when no output is given."""
    root = (
        run.run_dir / "export"
        if run.run_dir
        else run.model_path.parent / (f"{run.model_path.stem}_export")
    )
    names = {
        "saved_model": root / "saved_model",
        "tflite": root / f"{run.name}_{quantize or 'fp32'}.tflite",
        "tfserving": root / "serving",
        "onnx": root / f"{run.name}.onnx",
    }
    return names[fmt]


def _size_text(path: Path) -> str:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return f"{sum(p.stat().st_size for p in files) / 2**20:.2f} MiB"


def _jobs(formats: Sequence[str], quantize: Sequence[str | None]) -> list[tuple[str, str | None]]:
    jobs: list[tuple[str, str | None]] = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        levels = quantize if fmt == "tflite" else [None]
        jobs += [(fmt, None if q in (None, "none") else q) for q in levels]
    return jobs


def export_model(
    model: str | Path,
    fmt: str | Sequence[str],
    output: str | Path | None = None,
    *,
    quantize: str | Sequence[str] | None = None,
    input_size: Any = None,
    name: str | None = None,
    version: int = 1,
    checkpoint: str = "best",
    images: str | Path | None = None,
    num_images: int = 16,
    allow_mismatch: bool = False,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Export, print what was written and its parity with the Keras model.

    Args:
        model: a `.keras` file or a training run folder.
        fmt: one of `FORMATS`, or several.
        output: file or folder to write (for "tfserving" the base folder); only with one
            export (default: `<run>/export/...`).
        quantize: TFLite quantization ("none", "fp16", "dynamic", "int8"), or several;
            default the run config's `export.tflite_quantize`, else float32.
        input_size: TFLite `(H, W)`; default from the config, the model or 512x512.
        name, version: TF Serving model name (default the architecture's) and version.
        checkpoint: "best" or "final" for a run folder.
        images: folder of images for int8 calibration and the check (see module doc).
        num_images: how many images to use.
        allow_mismatch: keep an export below its agreement threshold, with a warning.
        echo: where to print.

    Returns:
        One `{"path", "format", "quantize", "report": ParityReport}` per export.

    Raises:
        ExportMismatch: an export disagrees with the model (earlier ones are kept).
    """
    from keras_seg import export

    formats = [fmt] if isinstance(fmt, str) else list(fmt)
    run = load_run(model, checkpoint)
    if quantize is None or isinstance(quantize, str):
        quantize = [quantize or (run.config.export.tflite_quantize if run.config else None)]
    jobs = _jobs(formats, quantize)
    if output is not None and len(jobs) > 1:
        raise ValueError(f"--output names one export, but {len(jobs)} were asked for")
    size = _input_size(run, input_size)
    check = check_images(run, size, num_images, images)
    c = run.classes
    meta = ExportMetadata.create(
        c.num_classes,
        c.class_names,
        c.palette,
        model_name=run.model.name,
        source=str(run.run_dir or run.model_path),
        data_name=c.data_name,
    )
    echo(
        f"Exporting {run.model_path} ({run.name}, {c.num_classes} classes: "
        f"{', '.join(c.class_names)}); checking on {check.description}"
    )
    reduced = sorted(reduced_policies(run.model))
    if reduced:
        echo(
            f"  the model computes in {', '.join(reduced)}; its exports compute in float32 "
            "with the same weights"
        )
    common = {
        "metadata": meta,
        "check_images": check.images,
        "check_labels": check.labels,
        "allow_mismatch": allow_mismatch,
    }
    results = []
    for fmt, q in jobs:
        path = Path(output) if output else default_output(run, fmt, q)
        if fmt == "saved_model":
            path = export.saved_model(run.model, path, **common)
        elif fmt == "tfserving":
            path = export.tfserving(
                run.model, path, name or run.name, version, overwrite=True, **common
            )
        elif fmt == "onnx":
            path = export.onnx(run.model, path, **common)
        else:
            path = export.tflite(
                run.model,
                path,
                q,
                check.images if q == "int8" else None,
                input_size=size,
                **common,
            )
        _describe(path, fmt, q, echo)
        report: ParityReport | None = recorded_report(path)
        echo(f"  check: {report}")
        results.append({"path": path, "format": fmt, "quantize": q, "report": report})
    return results


def _describe(path: Path, fmt: str, quantize: str | None, echo: Callable[[str], None]) -> None:
    from keras_seg import export

    kind = f"tflite {quantize or 'fp32'}" if fmt == "tflite" else fmt
    echo(f"Wrote {path} ({kind}, {_size_text(path)})")
    if fmt in ("saved_model", "tfserving"):
        for signature, (inp, outs) in SIGNATURES.items():
            echo(f"  signature {signature}: {inp or '()'} -> {', '.join(outs)}")
    if fmt == "tfserving":
        base = path.parent.resolve()
        echo(
            "  serve with: tensorflow_model_server --rest_api_port=8501 --port=8500 "
            f"--model_name={base.name} --model_base_path={base}"
        )
    if fmt == "tflite":
        model_file = export.TFLiteModel(path)
        for line in model_file.input_details_text():
            echo(f"  input  {line}")
        for line in model_file.output_details_text():
            echo(f"  output {line}")
        echo(f"  operators: {', '.join(export.op_names(path))}")
        echo(f"  labels: {path.parent / 'labels.txt'}")
