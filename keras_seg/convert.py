"""`keras-seg convert`: a PyTorch checkpoint -> a checked `.keras` file.

Builds the model through `registry.build`'s checkpoint path (`keras_seg.weights`), compares it
with the reference implementation where that package is installed
(`keras_seg.weights.parity`), and writes the file only when they agree (or when asked to keep
a mismatch), atomically, so an earlier file at the same path survives a refusal.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import keras

from keras_seg import registry
from keras_seg.backbones import build_backbone
from keras_seg.weights import ParityMismatch
from keras_seg.weights import build_from_checkpoint
from keras_seg.weights import parity


def convert(
    source: str,
    model: str,
    output: str | Path,
    *,
    backbone: str | None = None,
    num_classes: int | None = None,
    weights_format: str | None = None,
    partial: bool = False,
    check: bool = True,
    allow_mismatch: bool = False,
    echo: Callable[[str], None] = print,
    **options,
) -> keras.Model:
    """Convert checkpoint `source` into model `model` and save it to `output` (.keras).

    Args:
        source: checkpoint file, Hugging Face folder or `hf://owner/repo`.
        model: registered model name.
        output: the `.keras` file to write.
        backbone, num_classes: as `keras_seg.build` (default: the checkpoint's).
        weights_format: "torchvision" / "timm" / "smp" / "transformers" instead of recognising the keys.
        partial: load what fits and list what was skipped.
        check: compare with the reference implementation when it is installed.
        allow_mismatch: write the model even when the comparison fails (with a warning).
        echo: where to print.
        **options: further model options.

    Returns:
        The converted model.

    Raises:
        keras_seg.weights.WeightsError: the checkpoint can't be read or doesn't fit.
        ParityMismatch: the outputs differ from the reference's (nothing is written).
    """
    output = Path(output)
    built, layout, report = build_from_checkpoint(
        registry.get_spec(model).builder,
        model,
        num_classes,
        (None, None, 3),
        backbone,
        source,
        weights_format,
        partial,
        **options,
    )
    echo(f"read {layout.description} from {source}: {report.summary()}")
    whole = layout.model == model
    if check and report.skipped:
        echo("parity not checked: a partial load has no reference to compare with")
    elif check:
        kwargs = {**options.get("backbone_kwargs", {}), **layout.backbone_kwargs}
        _check(built, layout, report.path, whole, kwargs, allow_mismatch, echo)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.stem}.partial.keras")
    built.save(staging)
    os.replace(staging, output)
    echo(f"wrote {output} ({built.name}, {built.count_params():,} parameters)")
    return built


def _check(model, layout, path, whole, backbone_kwargs, allow_mismatch, echo) -> None:
    # A backbone is compared at output stride 32, as its reference computes it (the model's
    # copy may be dilated; it holds the same weights).
    if not whole:
        backbone_kwargs = {k: v for k, v in backbone_kwargs.items() if k != "dilation_rule"}
        model = build_backbone(layout.backbone, weights=path, **backbone_kwargs)
    target = model
    try:
        result = parity.check(target, layout, path, backbone=not whole)
    except RuntimeError as e:  # e.g. a width the reference package can't build
        echo(f"parity not checked: {e}")
        return
    if result is None:
        echo(
            f"parity not checked: the reference ({layout.reference.get('library', 'unknown')}) "
            "is not installed here (pip install 'keras-seg[reference]')"
        )
        return
    levels = sorted({key.split("@")[0] for key in result.per_output})
    what = "logits" if whole else f"backbone features {levels[0]}..{levels[-1]}"
    line = (
        f"parity with {result.reference} (PyTorch): max difference of {what} "
        f"{result.max_relative:.1e} of their largest value (limit {parity.TOLERANCE:.0e}), "
        f"{len(parity.SIZES)} random images"
    )
    if result.ok:
        echo(line)
        return
    if not allow_mismatch:
        raise ParityMismatch(f"{line}; nothing written (--allow-mismatch keeps it)")
    warnings.warn(f"{line}; written anyway (--allow-mismatch)", stacklevel=3)
