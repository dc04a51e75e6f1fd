"""Training callbacks: divergence guard, step-resumable backups, best-model keeping, timings.

`ResumableBackup` plays the role of `keras.callbacks.BackupAndRestore(save_freq=N)`. We write
our own because Keras's restores only the epoch number (a run killed mid-epoch replays the
whole epoch from its first batch), removes its backup in `on_train_end` even when training
was stopped, and writes in place (a kill during the write leaves a broken file). Ours records
the global step, lets the trainer resume at that exact step, writes atomically, and refuses
to save non-finite weights.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_STATE = "state.json"


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) became NaN/inf; the run stopped."""


def _finite(value) -> bool:
    return value is None or bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))


class StopOnNaN(keras.callbacks.Callback):
    """Raise `TrainingDiverged` on the first batch whose loss is not finite.

    Raising (rather than `keras.callbacks.TerminateOnNaN`'s `stop_training`) stops before any
    later callback could save the broken weights, and leaves the last backup in place.
    Must come before `ResumableBackup` in the callback list.
    """

    def __init__(self, backup: ResumableBackup | None = None):
        super().__init__()
        self.backup = backup

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if not _finite(loss):
            step = self.backup.global_step + 1 if self.backup else None
            last = self.backup.last_saved if self.backup else None
            kept = (
                f"the last good checkpoint (step {last}) is kept in {self.backup.backup_dir}"
                if last
                else "no checkpoint had been written yet"
            )
            raise TrainingDiverged(
                f"Loss became {float(np.asarray(loss))} at step {step} "
                f"(batch {batch} of the epoch); training stopped and {kept}. "
                "Lower train.learning_rate or check the data."
            )


class ResumableBackup(keras.callbacks.Callback):
    """Save weights plus optimizer state every `save_freq` steps, for resuming at that step.

    The trainer sets `global_step` before each `fit` and calls `restore` before training.
    Files: `backup_dir/latest.weights.h5` and `backup_dir/state.json` (`{"global_step": n}`).
    """

    def __init__(self, backup_dir: str | os.PathLike, save_freq: int, last_step: int | None = None):
        """`last_step`: the run's final step, where no backup is written (the trainer saves
        `final.keras` right after it and then removes the backup)."""
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.save_freq = int(save_freq)
        self.last_step = last_step
        self.global_step = 0
        self.last_saved = 0

    def restore(self, model: keras.Model, backup_dir: str | os.PathLike | None = None) -> int:
        """Load a backup into `model` (and its optimizer); return its global step, 0 if none.

        Args:
            model: the compiled model.
            backup_dir: where to read from (default: where this callback writes). Workers
                other than the chief write to scratch folders but resume from the chief's.
        """
        backup_dir = Path(backup_dir or self.backup_dir)
        state_path = backup_dir / BACKUP_STATE
        if not state_path.exists():
            return 0
        state = json.loads(state_path.read_text())
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(backup_dir / BACKUP_WEIGHTS)
        self.global_step = self.last_saved = int(state["global_step"])
        return self.global_step

    def on_train_batch_end(self, batch, logs=None):
        self.global_step += 1
        if self.global_step % self.save_freq == 0 and self.global_step != self.last_step:
            self.save()

    def save(self) -> None:
        """Write the backup atomically; raise `TrainingDiverged` instead of saving NaN weights."""
        bad = [w.path for w in self.model.weights if not _finite(keras.ops.convert_to_numpy(w))]
        if bad:
            raise TrainingDiverged(
                f"weights became non-finite by step {self.global_step} ({bad[:3]}); "
                f"the last good checkpoint (step {self.last_saved}) is kept in {self.backup_dir}"
            )
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.backup_dir / f"tmp.{BACKUP_WEIGHTS}"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.backup_dir / BACKUP_WEIGHTS)
        tmp_state = self.backup_dir / f"tmp.{BACKUP_STATE}"
        tmp_state.write_text(json.dumps({"global_step": self.global_step, "time": time.time()}))
        os.replace(tmp_state, self.backup_dir / BACKUP_STATE)
        self.last_saved = self.global_step


class ModelWriter:
    """Saves `model` as `.keras` files without its optimizer state, atomically.

    Keras 3 writes the optimizer's variables into `.keras` files (`include_optimizer` only
    applies to legacy `.h5`), which triples the file of an Adam-trained model. The
    optimizer belongs in the resumable backup, so the saved file holds a copy built from the
    model's config, never compiled (`clone_model` would compile it like the original). The
    copy is built once and given the current weights at each save: rebuilding a ResNet-34
    U-Net from its config takes seconds, and a run saves after every better validation.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self._copy: keras.Model | None = None

    def save(self, path: str | os.PathLike) -> None:
        if self._copy is None:
            self._copy = type(self.model).from_config(self.model.get_config())
        self._copy.set_weights(self.model.get_weights())
        path = Path(path)
        tmp = path.with_name(f"tmp.{path.name}")
        self._copy.save(tmp)
        os.replace(tmp, path)


class KeepBest(keras.callbacks.Callback):
    """Save the model (without optimizer) whenever `monitor` reaches a new maximum.

    The best value is stored in `<filepath>.json` and read back, so a resumed run does not
    overwrite a better model with a worse one.
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_mean_iou",
        writer: ModelWriter | None = None,
    ):
        """`writer`: what saves (default: the model being trained), e.g. its main output."""
        super().__init__()
        self.writer = writer
        self.filepath = Path(filepath)
        self.monitor = monitor
        self.record = Path(f"{filepath}.json")
        self.best = -math.inf
        if self.record.exists():
            self.best = float(json.loads(self.record.read_text()).get("value", -math.inf))

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) <= self.best:
            return
        self.best = float(value)
        if self.writer is None:
            self.writer = ModelWriter(self.model)
        self.writer.save(self.filepath)
        self.record.write_text(
            json.dumps({"monitor": self.monitor, "value": self.best, "epoch": epoch + 1})
        )


class MainOutputLogs(keras.callbacks.Callback):
    """Log a multi-output model's main-output metrics under their plain names.

    Keras prefixes the metrics of an output named `logits` ("val_logits_mean_iou"); this
    adds the same values as "val_mean_iou", so the best-model monitor, the history and
    TensorBoard read the same for single- and multi-output models. Must come first in the
    callback list (later callbacks see the same logs dict).
    """

    def __init__(self, output: str):
        super().__init__()
        self.prefix = f"{output}_"

    def _rename(self, logs):
        if not logs:
            return
        for key in list(logs):
            for split in ("", "val_"):
                if key.startswith(split + self.prefix) and not key.endswith("_loss"):
                    logs.setdefault(split + key[len(split + self.prefix) :], logs[key])

    def on_train_batch_end(self, batch, logs=None):
        self._rename(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._rename(logs)


class HistoryLog(keras.callbacks.Callback):
    """Keep every epoch's logs in `path` (JSON `{epoch: logs}`), across resumes.

    A resumed run starts again at the epoch of its backup; epochs it repeats replace the
    earlier record, so the history always reads as one uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.epochs: dict[int, dict[str, float]] = {}
        if self.path.exists():
            self.epochs = {int(k): v for k, v in json.loads(self.path.read_text()).items()}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch + 1] = {k: float(v) for k, v in (logs or {}).items()}
        tmp = self.path.with_name(f"tmp.{self.path.name}")
        tmp.write_text(json.dumps(self.epochs, indent=1))
        os.replace(tmp, self.path)

    def history(self) -> dict[str, list[float]]:
        """`{metric: [value per epoch]}` in epoch order, like `keras.callbacks.History`."""
        result: dict[str, list[float]] = {}
        for epoch in sorted(self.epochs):
            for key, value in self.epochs[epoch].items():
                result.setdefault(key, []).append(value)
        return result


def _mean_iou_metrics(metrics) -> list:
    """The `keras.metrics.MeanIoU` objects among `model.metrics` (nested in CompileMetrics)."""
    found = []
    for metric in metrics:
        if isinstance(metric, keras.metrics.MeanIoU):
            found.append(metric)
        else:
            found += _mean_iou_metrics(getattr(metric, "metrics", []))
    return found


class EpochExtras(keras.callbacks.Callback):
    """Adds `learning_rate`, `epoch_seconds` and `val_pixel_accuracy` to the epoch logs (so
    TensorBoard and the history get them).

    The pixel accuracy (correct over non-ignored pixels, as `keras_seg.metrics`) is read from
    the mIoU metric's confusion matrix, which after `fit`'s validation holds the validation
    split's (Keras resets the compiled metrics before validating and reuses them): a second
    metric would count the same pixels again. Must come after `MainOutputLogs` and before
    `TensorBoard` in the callback list.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        if callable(lr):
            lr = lr(optimizer.iterations)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        logs["epoch_seconds"] = time.perf_counter() - self._start
        found = _mean_iou_metrics(self.model.metrics)
        if "val_mean_iou" in logs and len(found) == 1:
            cm = keras.ops.convert_to_numpy(found[0].total_cm)
            if cm.sum() > 0:
                logs["val_pixel_accuracy"] = float(np.trace(cm) / cm.sum())
