"""Segmentation losses over logits `(B, H, W, C)` and labels `(B, H, W)`; label 255 is ignored.

Every loss returns the batch's scalar: pixel losses are averaged over the valid (non-ignored)
pixels, with per-class weights when given (`sum(w * loss) / sum(w)`, the weighted mean that
Caffe's SegNet and PyTorch's `CrossEntropyLoss(weight=...)` use). The plain cross-entropy is
exactly `keras.losses.SparseCategoricalCrossentropy(ignore_class=255, from_logits=True)`.
All classes are registered for `.keras` serialization.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_seg.data.info import IGNORE_LABEL


def _labels_and_valid(y_true, logits, ignore_label: int):
    """Int labels with ignored pixels set to 0, and the float validity mask."""
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(logits.shape):  # (B, H, W, 1) -> (B, H, W)
        y_true = ops.squeeze(y_true, axis=-1)
    y_true = ops.cast(y_true, "int32")
    valid = ops.not_equal(y_true, ignore_label)
    return ops.where(valid, y_true, 0), ops.cast(valid, "float32")


def _pixel_cross_entropy(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


class _SegmentationLoss(keras.losses.Loss):
    """Base: ignore label and optional class weights; subclasses give per-pixel losses."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        ignore_label: int = IGNORE_LABEL,
        name: str | None = None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_label = int(ignore_label)

    def pixel_losses(self, labels, logits):
        raise NotImplementedError

    def pixel_weights(self, labels, valid):
        if self.class_weights is None:
            return valid
        table = ops.convert_to_tensor(self.class_weights, dtype="float32")
        return ops.take(table, labels) * valid

    def reduce(self, losses, weights):
        """Weighted mean over pixels; 0 when no pixel is valid."""
        return ops.divide_no_nan(ops.sum(losses * weights), ops.sum(weights))

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels, valid = _labels_and_valid(y_true, logits, self.ignore_label)
        losses = self.pixel_losses(labels, logits)
        return self.reduce(losses, self.pixel_weights(labels, valid))

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class_weights": self.class_weights,
            "ignore_label": self.ignore_label,
        }


@keras.saving.register_keras_serializable(package="keras_seg")
class CrossEntropy(_SegmentationLoss):
    """Softmax cross-entropy, optionally class-weighted (e.g. median-frequency balancing).

    Without class weights this equals
    `keras.losses.SparseCategoricalCrossentropy(ignore_class=255, from_logits=True)`.
    """

    def __init__(self, class_weights=None, ignore_label=IGNORE_LABEL, name="cross_entropy"):
        super().__init__(class_weights, ignore_label, name=name)

    def pixel_losses(self, labels, logits):
        return _pixel_cross_entropy(labels, logits)


@keras.saving.register_keras_serializable(package="keras_seg")
class FocalLoss(_SegmentationLoss):
    """Focal loss (Lin et al. 2017): `(1 - p_t) ** gamma * CE`; gamma=0 gives cross-entropy."""

    def __init__(self, gamma=2.0, class_weights=None, ignore_label=IGNORE_LABEL, name="focal"):
        super().__init__(class_weights, ignore_label, name=name)
        self.gamma = float(gamma)

    def pixel_losses(self, labels, logits):
        ce = _pixel_cross_entropy(labels, logits)
        p_true = ops.exp(-ce)
        return ops.power(1.0 - p_true, self.gamma) * ce

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="keras_seg")
class TopKCrossEntropy(_SegmentationLoss):
    """Online hard-example mining: the mean cross-entropy of the hardest `top_k` fraction of
    valid pixels in the batch (Wu et al. 2016 "bootstrapped" CE; OHEM of Shrivastava et al.).

    Class weights scale the pixel losses before ranking.
    """

    def __init__(self, top_k=0.25, class_weights=None, ignore_label=IGNORE_LABEL, name="top_k"):
        super().__init__(class_weights, ignore_label, name=name)
        if not 0 < float(top_k) <= 1:
            raise ValueError(f"top_k must be a fraction in (0, 1], got {top_k!r}")
        self.top_k = float(top_k)

    def reduce(self, losses, weights):
        valid = ops.reshape(ops.cast(weights > 0, "float32"), [-1])
        # Invalid pixels rank last (-1 < any cross-entropy).
        scores = ops.where(valid > 0, ops.reshape(losses * weights, [-1]), -1.0)
        ranked = ops.flip(ops.sort(scores), axis=0)
        k = ops.maximum(ops.ceil(self.top_k * ops.sum(valid)), 1.0)
        keep = ops.cast(ops.arange(ops.shape(ranked)[0]), "float32") < k
        keep = ops.logical_and(keep, ranked >= 0)
        kept = ops.cast(keep, "float32")
        return ops.divide_no_nan(ops.sum(ranked * kept), ops.sum(kept))

    def pixel_losses(self, labels, logits):
        return _pixel_cross_entropy(labels, logits)

    def get_config(self):
        return {**super().get_config(), "top_k": self.top_k}


@keras.saving.register_keras_serializable(package="keras_seg")
class DiceLoss(_SegmentationLoss):
    """Soft Dice loss (Milletari et al. 2016): `1 - mean_c (2|P∩G| + s) / (|P| + |G| + s)`.

    Softmax probabilities and one-hot labels are summed over the whole batch per class;
    ignored pixels count in neither. Class weights weight the per-class Dice terms.
    """

    def __init__(self, smooth=1.0, class_weights=None, ignore_label=IGNORE_LABEL, name="dice"):
        super().__init__(class_weights, ignore_label, name=name)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        labels, valid = _labels_and_valid(y_true, logits, self.ignore_label)
        num_classes = logits.shape[-1]
        probs = ops.softmax(logits, axis=-1) * valid[..., None]
        onehot = ops.one_hot(labels, num_classes) * valid[..., None]
        axes = tuple(range(len(logits.shape) - 1))
        inter = ops.sum(probs * onehot, axis=axes)
        total = ops.sum(probs, axis=axes) + ops.sum(onehot, axis=axes)
        dice = (2.0 * inter + self.smooth) / (total + self.smooth)
        if self.class_weights is None:
            return 1.0 - ops.mean(dice)
        w = ops.convert_to_tensor(self.class_weights, dtype="float32")
        return 1.0 - ops.sum(dice * w) / ops.sum(w)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="keras_seg")
class WeightedSum(keras.losses.Loss):
    """`sum_i weights[i] * losses[i](y_true, y_pred)`, e.g. cross-entropy + 0.5 * Dice."""

    def __init__(self, losses, weights=None, name="weighted_sum"):
        super().__init__(name=name)
        self.losses = [
            keras.saving.deserialize_keras_object(loss) if isinstance(loss, dict) else loss
            for loss in losses
        ]
        self.weights = [1.0] * len(self.losses) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.losses):
            raise ValueError(
                f"got {len(self.losses)} losses but {len(self.weights)} weights: {self.weights}"
            )

    def call(self, y_true, y_pred):
        return sum(
            w * loss(y_true, y_pred) for w, loss in zip(self.weights, self.losses, strict=True)
        )

    def get_config(self):
        return {
            "name": self.name,
            "losses": [keras.saving.serialize_keras_object(loss) for loss in self.losses],
            "weights": self.weights,
        }


LOSSES: dict[str, type[_SegmentationLoss]] = {
    "cross_entropy": CrossEntropy,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "top_k": TopKCrossEntropy,
}


def build_loss(
    terms: Sequence[Any],
    class_weights: Sequence[float] | None = None,
    ignore_label: int = IGNORE_LABEL,
) -> keras.losses.Loss:
    """The training loss from config terms (`LossTerm`s or dicts with name/weight/options).

    Args:
        terms: loss terms; one term of weight 1 gives that loss itself.
        class_weights: per-class weights passed to every term.
        ignore_label: label value that no term counts.

    Returns:
        A serializable `keras.losses.Loss`.
    """
    losses, weights = [], []
    for term in terms:
        term = term if isinstance(term, dict) else vars(term)
        name = term.get("name", "cross_entropy")
        if name not in LOSSES:
            raise ValueError(f"Unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
        options = dict(term.get("options") or {})
        losses.append(
            LOSSES[name](class_weights=class_weights, ignore_label=ignore_label, **options)
        )
        weights.append(float(term.get("weight", 1.0)))
    if not losses:
        raise ValueError("need at least one loss term")
    if len(losses) == 1 and weights[0] == 1.0:
        return losses[0]
    return WeightedSum(losses, weights)


# --- class weights ---------------------------------------------------------------------------


def count_labels(
    masks: Iterable[np.ndarray], num_classes: int, ignore_label: int = IGNORE_LABEL
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel statistics for class balancing.

    Returns:
        `(class_pixels, image_pixels)`: per class, the number of pixels of that class, and the
        total number of (non-ignored) pixels in the images where the class is present.
    """
    class_pixels = np.zeros(num_classes, np.int64)
    image_pixels = np.zeros(num_classes, np.int64)
    for mask in masks:
        mask = np.asarray(mask).ravel()
        mask = mask[mask != ignore_label]
        counts = np.bincount(mask, minlength=num_classes)[:num_classes]
        class_pixels += counts
        image_pixels += np.where(counts > 0, mask.size, 0)
    return class_pixels, image_pixels


def median_frequency_weights(
    class_pixels: Sequence[int], image_pixels: Sequence[int]
) -> list[float]:
    """Median-frequency balancing (Eigen & Fergus 2015, used by SegNet).

    `freq(c) = class_pixels[c] / image_pixels[c]` (pixels of c over the pixels of the images
    containing c) and `weight(c) = median(freq) / freq(c)`. Classes never seen get weight 0.
    """
    class_pixels = np.asarray(class_pixels, np.float64)
    image_pixels = np.asarray(image_pixels, np.float64)
    seen = class_pixels > 0
    if not seen.any():
        raise ValueError("no labelled pixels: cannot compute class weights")
    freq = np.divide(class_pixels, image_pixels, out=np.zeros_like(class_pixels), where=seen)
    median = np.median(freq[seen])
    weights = np.divide(median, freq, out=np.zeros_like(freq), where=seen)
    return [float(w) for w in weights]
