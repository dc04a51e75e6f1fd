"""Segmentation metrics from a confusion matrix accumulated over a whole split.

`ConfusionMatrix` (numpy) accumulates `cm[true, pred]` pixel counts over an evaluation
and reports per-class IoU, mIoU, pixel accuracy and mean class accuracy. Label 255 is never
counted. mIoU averages over the classes that occur in the labels or the predictions
(a class absent from both has no defined IoU), as the VOC and Cityscapes tools do.

`MeanIoU` is the Keras metric for `model.compile`: `keras.metrics.MeanIoU` already keeps the
confusion-matrix state and (in Keras 3) averages only over classes with a non-zero
denominator, so we subclass it only to take logits and ignore 255 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_seg.data.info import IGNORE_LABEL


def confusion_matrix(
    y_true, y_pred, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> tf.Tensor:
    """`(num_classes, num_classes)` int64 counts `cm[true, pred]`, skipping `ignore_label`.

    Args:
        y_true: integer labels of any shape.
        y_pred: integer predictions of the same shape (not logits).
    """
    y_true = tf.reshape(tf.cast(y_true, tf.int64), [-1])
    y_pred = tf.reshape(tf.cast(y_pred, tf.int64), [-1])
    keep = tf.not_equal(y_true, ignore_label)
    y_true = tf.boolean_mask(y_true, keep)
    y_pred = tf.boolean_mask(y_pred, keep)
    index = y_true * num_classes + y_pred
    counts = tf.math.bincount(
        index, minlength=num_classes**2, maxlength=num_classes**2, dtype=tf.int64
    )
    return tf.reshape(counts, [num_classes, num_classes])


def metrics_from_confusion(
    cm: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per-class IoU and accuracy plus their means from `cm[true, pred]`.

    Returns:
        dict with `miou`, `pixel_accuracy`, `mean_accuracy`, `per_class` (a list of
        `{class, name, iou, accuracy, pixels}` with `iou`/`accuracy` `None` where undefined),
        `num_pixels` and `num_classes_present`.
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    gt = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    union = gt + pred - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=present)
    acc = np.divide(tp, gt, out=np.full_like(tp, np.nan), where=gt > 0)
    total = cm.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]

    def _num(x):
        return None if np.isnan(x) else float(x)

    return {
        "miou": float(np.nanmean(iou)) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_accuracy": float(np.nanmean(acc)) if (gt > 0).any() else 0.0,
        "num_pixels": int(total),
        "num_classes_present": int(present.sum()),
        "per_class": [
            {
                "class": i,
                "name": names[i],
                "iou": _num(iou[i]),
                "accuracy": _num(acc[i]),
                "pixels": int(gt[i]),
            }
            for i in range(len(tp))
        ],
    }


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches of labels and predictions.

    Example:
        >>> cm = ConfusionMatrix(num_classes=3)
        >>> cm.update(labels, logits.argmax(-1))
        >>> cm.result()["miou"]
    """

    def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL):
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, y_true, y_pred) -> None:
        """Add the pixels of `y_true` vs integer predictions `y_pred` (same shape)."""
        y_true = np.asarray(y_true).astype(np.int64).ravel()
        y_pred = np.asarray(y_pred).astype(np.int64).ravel()
        if y_true.shape != y_pred.shape:
            raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in size")
        keep = y_true != self.ignore_label
        y_true, y_pred = y_true[keep], y_pred[keep]
        values = np.concatenate([y_true, y_pred])
        bad = values[(values < 0) | (values >= self.num_classes)]
        if bad.size:
            raise ValueError(
                f"label/prediction values outside 0..{self.num_classes - 1} "
                f"(and {self.ignore_label}): {sorted(set(bad.tolist()))[:10]}"
            )
        counts = np.bincount(y_true * self.num_classes + y_pred, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another accumulator's counts (e.g. from another worker)."""
        self.matrix += other.matrix

    def reset(self) -> None:
        self.matrix[:] = 0

    def result(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """See `metrics_from_confusion`."""
        return metrics_from_confusion(self.matrix, class_names)


@keras.saving.register_keras_serializable(package="keras_seg")
class MeanIoU(keras.metrics.MeanIoU):
    """`keras.metrics.MeanIoU` over logits with label 255 ignored, for `model.compile`.

    Args:
        num_classes: number of classes.
        ignore_class: label value left out of the confusion matrix (255).
        name: metric name (`val_mean_iou` in the logs for validation data).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_class: int | None = IGNORE_LABEL,
        name: str = "mean_iou",
        **kwargs,
    ):
        kwargs.setdefault("sparse_y_pred", False)
        super().__init__(num_classes=num_classes, ignore_class=ignore_class, name=name, **kwargs)


def format_table(result: dict[str, Any], title: str = "") -> str:
    """A plain-text per-class IoU table for `metrics_from_confusion` output."""
    width = max([len("class")] + [len(r["name"]) for r in result["per_class"]])
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  {'IoU':>7}  {'acc':>7}  {'pixels':>12}")
    lines.append("-" * (width + 34))
    for row in result["per_class"]:
        iou = "-" if row["iou"] is None else f"{100 * row['iou']:.2f}"
        acc = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}"
        lines.append(f"{row['name']:<{width}}  {iou:>7}  {acc:>7}  {row['pixels']:>12}")
    lines.append("-" * (width + 34))
    lines.append(
        f"mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_accuracy']:.2f}  "
        f"mean class acc {100 * result['mean_accuracy']:.2f}  "
        f"({result['num_classes_present']} classes present)"
    )
    return "\n".join(lines)
