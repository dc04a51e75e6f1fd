"""Inference at each image's original resolution and evaluation over a whole split.

`predict_scores` runs one image through the model:
  * "whole": one pass over the full image (models take any size);
  * "sliding": windows of `window` pixels with `overlap`, logits of overlapping windows
    averaged (the image is padded bottom/right when smaller than a window);
  * several `scales` and/or `flip`: each pass's logits are resized back to the image and
    their softmax probabilities averaged (as DeepLab's multi-scale inference does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_seg.config import Config
from keras_seg.config import EvalConfig
from keras_seg.metrics import ConfusionMatrix


class _Forward:
    """`model(x, training=False)` in a tf.function that tolerates changing input sizes."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.fn(tf.convert_to_tensor(images, tf.float32)).numpy().astype(np.float32)


def _forward(model) -> _Forward:
    return model if isinstance(model, _Forward) else _Forward(model)


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering `0..size` with the last window flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def sliding_logits(
    model, image: np.ndarray, window: Sequence[int], overlap: float = 0.25, batch_size: int = 4
) -> np.ndarray:
    """Average the logits of overlapping `window`-sized crops of `image [H, W, C]`."""
    forward = _forward(model)
    h, w = image.shape[:2]
    wh, ww = int(window[0]), int(window[1])
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)))
    sh = max(1, math.ceil(wh * (1 - overlap)))
    sw = max(1, math.ceil(ww * (1 - overlap)))
    boxes = [(y, x) for y in window_starts(ph, wh, sh) for x in window_starts(pw, ww, sw)]
    total = count = None
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        crops = np.stack([image[y : y + wh, x : x + ww] for y, x in chunk])
        logits = forward(crops)
        if total is None:
            total = np.zeros((ph, pw, logits.shape[-1]), np.float32)
            count = np.zeros((ph, pw, 1), np.float32)
        for (y, x), out in zip(chunk, logits, strict=True):
            total[y : y + wh, x : x + ww] += out
            count[y : y + wh, x : x + ww] += 1
    return (total / count)[:h, :w]


def predict_scores(model, image: np.ndarray, cfg: EvalConfig | None = None) -> np.ndarray:
    """Class scores `[H, W, num_classes]` for one image `[H, W, C]` (pixels 0..255).

    One pass (one scale, no flip) returns logits; several passes return averaged softmax
    probabilities. Either way `argmax(-1)` is the prediction.
    """
    cfg = cfg or EvalConfig()
    forward = _forward(model)
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    window = cfg.window
    passes = [(s, f) for s in cfg.scales for f in ([False, True] if cfg.flip else [False])]
    scores = None
    for scale, flip in passes:
        x = image[:, ::-1] if flip else image
        if scale != 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = tf.image.resize(x, size, method="bilinear").numpy()
        if cfg.mode == "sliding":
            if window is None:
                raise ValueError("eval.mode 'sliding' needs eval.window (or data.crop_size)")
            logits = sliding_logits(forward, x, window, cfg.overlap, cfg.batch_size)
        else:
            logits = forward(x[None])[0]
        if scale != 1.0:
            logits = tf.image.resize(logits, (h, w), method="bilinear").numpy()
        if flip:
            logits = logits[:, ::-1]
        if len(passes) == 1:
            return logits
        probs = tf.nn.softmax(logits, axis=-1).numpy()
        scores = probs if scores is None else scores + probs
    return scores / len(passes)


def resolved_eval_config(cfg: Config) -> EvalConfig:
    """`cfg.eval` with the sliding window defaulting to the training crop."""
    e = cfg.eval
    window = e.window or list(cfg.data.crop_size)
    return EvalConfig(e.mode, window, e.overlap, list(e.scales), e.flip, e.batch_size)


def evaluate_model(
    model: keras.Model,
    cfg: Config,
    dataset: tf.data.Dataset,
    info,
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Confusion-matrix metrics of `model` over unbatched `(image, mask)` pairs.

    Each image is predicted at its original resolution with `cfg.eval` settings.
    """
    eval_cfg = resolved_eval_config(cfg)
    forward = _Forward(model)
    cm = ConfusionMatrix(info.num_classes, info.ignore_label)
    bar = keras.utils.Progbar(max_images, unit_name="image") if progress else None
    for i, (image, mask) in enumerate(dataset.as_numpy_iterator()):
        if max_images is not None and i >= max_images:
            break
        scores = predict_scores(forward, image, eval_cfg)
        cm.update(mask, scores.argmax(-1))
        if bar:
            bar.update(i + 1)
    result = cm.result(info.class_names)
    result["confusion_matrix"] = cm.matrix.tolist()
    result["eval"] = {
        "mode": eval_cfg.mode,
        "window": eval_cfg.window,
        "overlap": eval_cfg.overlap,
        "scales": eval_cfg.scales,
        "flip": eval_cfg.flip,
    }
    return result


def evaluate_checkpoint(
    cfg: Config,
    checkpoint: str,
    data_dir: str | None = None,
    split: str | None = None,
    output: str | None = None,
    max_images: int | None = None,
) -> dict[str, Any]:
    """`keras-seg evaluate`: print a per-class IoU table and write it as JSON.

    Args:
        cfg: the experiment (data set, eval settings).
        checkpoint: a `.keras` file or a training run folder (its `best.keras`).
        data_dir: data folder (overrides `cfg.data.data_dir`).
        split: split to evaluate (default `cfg.data.val_split`).
        output: JSON path (default `<checkpoint folder>/eval_<split>.json`).
        max_images: evaluate only the first N images.
    """
    import json
    from pathlib import Path

    from keras_seg.metrics import format_table
    from keras_seg.training import datasets
    from keras_seg.training.prediction import load_run

    model, _ = load_run(checkpoint)
    info = datasets.class_info(cfg, data_dir)
    split = split or cfg.data.val_split
    dataset = datasets.load_split(cfg, split, data_dir)
    result = evaluate_model(model, cfg, dataset, info, max_images, progress=True)
    result.update({"config": cfg.name, "checkpoint": str(checkpoint), "split": split})
    print(format_table(result, title=f"{cfg.name} on {cfg.data.name}/{split}"))
    ckpt = Path(checkpoint)
    output = (
        Path(output) if output else (ckpt if ckpt.is_dir() else ckpt.parent) / f"eval_{split}.json"
    )
    output.write_text(json.dumps(result, indent=2))
    print(f"wrote {output}")
    return result
