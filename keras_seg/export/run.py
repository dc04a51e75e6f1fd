"""`keras-seg export`: export a `.keras` file or a run directory, describe it, check it.

Defaults come from the run's `config.yaml` (`export.input_size`, `export.tflite_quantize`,
`data.crop_size`) where the command line leaves them open.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from keras_seg.export.metadata import ExportMetadata
from keras_seg.export.saved_model_export import SIGNATURES
from keras_seg.export.sources import ExportSource
from keras_seg.export.sources import load_source
from keras_seg.export.sources import sample_images
from keras_seg.export.tflite_export import DEFAULT_INPUT_SIZE

FORMATS = ("saved_model", "tflite", "tfserving", "onnx")


def _input_size(source: ExportSource, input_size: Any) -> tuple[int, int]:
    candidates = [
        input_size,
        source.export_setting("input_size"),
        tuple(source.model.input_shape[1:3]) if None not in source.model.input_shape[1:3] else None,
        (source.config.get("data") or {}).get("crop_size")
        if isinstance(source.config.get("data"), dict)
        else None,
        DEFAULT_INPUT_SIZE,
    ]
    size = next(c for c in candidates if c)
    return (int(size[0]), int(size[1]))


def default_output(source: ExportSource, fmt: str, quantize: str | None) -> Path:
    """Where an export goes when `--output` is not given."""
    root = (
        source.run_dir / "export"
        if source.run_dir
        else source.model_path.parent / f"{source.model_path.stem}_export"
    )
    names = {
        "saved_model": root / "saved_model",
        "tflite": root / f"{source.name}_{quantize or 'fp32'}.tflite",
        "tfserving": root / "serving",
        "onnx": root / f"{source.name}.onnx",
    }
    return names[fmt]


def _size_text(path: Path) -> str:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return f"{sum(p.stat().st_size for p in files) / 2**20:.2f} MiB"


def export_model(
    model: str | Path,
    fmt: str,
    output: str | Path | None = None,
    *,
    quantize: str | None = None,
    input_size: Any = None,
    name: str | None = None,
    version: int = 1,
    checkpoint: str = "best",
    images: str | Path | None = None,
    num_images: int = 16,
    check: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export, print what was written, and (unless `check=False`) the parity with Keras.

    Args:
        model: a `.keras` file or a training run directory.
        fmt: one of `FORMATS`.
        output: file or directory to write (for "tfserving" the base directory).
        quantize: TFLite quantization (`None` takes the run config's `export.tflite_quantize`;
            "none" forces float32).
        input_size: TFLite `(H, W)`; default from the config, the model or 512x512.
        name, version: TF Serving model name (default the model's) and version.
        checkpoint: "best" or "final" for a run directory.
        images: folder of images for int8 calibration and the parity check; default
            synthetic images.
        num_images: how many images to use.
        check: run `verify` and print the report.
        echo: where to print.

    Returns:
        `{"path": Path, "report": ParityReport | None, "metadata": ExportMetadata}`.
    """
    from keras_seg import export

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    source = load_source(model, checkpoint)
    if fmt == "tflite" and quantize is None:
        quantize = source.export_setting("tflite_quantize")
    quantize = None if quantize in (None, "none") else quantize
    size = _input_size(source, input_size)
    sample, labels, described = sample_images(source, size, num_images, images)
    meta: ExportMetadata = source.metadata
    echo(
        f"Exporting {source.model_path} ({source.model.name}, {meta.num_classes} classes: "
        f"{', '.join(meta.class_names)})"
    )
    path = Path(output) if output else default_output(source, fmt, quantize)
    if fmt == "saved_model":
        path = export.saved_model(source.model, path, metadata=meta)
    elif fmt == "tfserving":
        path = export.tfserving(
            source.model, path, name or source.name, version, metadata=meta, overwrite=True
        )
    elif fmt == "onnx":
        path = export.onnx(source.model, path, metadata=meta)
    else:
        path = export.tflite(
            source.model,
            path,
            quantize,
            sample if quantize == "int8" else None,
            input_size=size,
            metadata=meta,
        )
    echo(f"Wrote {path} ({_size_text(path)})")
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
        if quantize == "int8":
            echo(f"  int8 calibration: {described}")
        echo(f"  labels: {path.parent / 'labels.txt'}")
    report = None
    if check:
        report = export.verify(source.model, path, sample, labels)
        echo(f"Check ({described}): {report}")
    return {"path": path, "report": report, "metadata": meta}
