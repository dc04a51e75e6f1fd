"""`train(config, data_dir, model_dir)`: the whole training run of `keras-seg train`.

Files written to `model_dir` (by the chief only, in multi-worker runs):

    config.yaml         the resolved config (exports read class names from it)
    backup/             resumable checkpoint every `train.checkpoint_every` steps
    logs/               TensorBoard
    best.keras          best model by validation mIoU (+ best.keras.json with the score)
    final.keras         model after the last step
    history.json        every epoch's metrics, kept across resumes
    metrics.json        history, best score, timings and the final full-resolution evaluation

The `.keras` files hold the model only (no optimizer state: that lives in `backup/`).

Re-running with the same `model_dir` resumes from `backup/` at the saved step.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import keras

from keras_seg import inference
from keras_seg import runs
from keras_seg.config import Config
from keras_seg.config import ConfigError
from keras_seg.config import save_config
from keras_seg.losses import build_loss
from keras_seg.losses import count_labels
from keras_seg.losses import median_frequency_weights
from keras_seg.machine import eigen_kernels_note
from keras_seg.machine import onednn_enabled
from keras_seg.machine import pixels_per_step
from keras_seg.machine import refuse_training_if_frozen
from keras_seg.metrics import MeanIoU
from keras_seg.metrics import format_table
from keras_seg.training import callbacks as cb
from keras_seg.training import datasets
from keras_seg.training.distribution import build_strategy
from keras_seg.training.distribution import is_chief
from keras_seg.training.distribution import set_precision
from keras_seg.training.optimizers import variable_factors
from keras_seg.training.schedules import build_optimizer

MONITOR = "val_mean_iou"
MAIN_OUTPUT = "logits"  # of models with several outputs; the others are auxiliary losses


def _check_outputs(cfg: Config, model: keras.Model) -> list[str]:
    """Output names of a multi-output model, which must include the main `logits`."""
    heads = list(model.output)
    if MAIN_OUTPUT not in heads:
        raise ConfigError(
            f"{cfg.name}: {cfg.model.name!r} with options {cfg.model.options} returns outputs "
            f"{', '.join(heads)}; keras-seg train needs one of them named {MAIN_OUTPUT!r}"
        )
    return heads


def compile_for_training(
    cfg: Config, model: keras.Model, info: runs.ClassInfo, class_weights: list[float] | None
):
    """Compile `model` with the config's optimizer and loss and the mIoU metric.

    Returns `(saved, targets)`: the model to save, evaluate and export (a multi-output model
    with deep supervision, e.g. pspnet's aux_head, saves its main output only: the same
    layers without the aux heads), and a `(x, y) -> (x, targets)` map for its datasets (one
    copy of the mask per output; None for single-output models).
    """
    loss = build_loss(cfg.train.loss, class_weights, info.ignore_label)
    mean_iou = MeanIoU(info.num_classes, ignore_class=info.ignore_label)
    if not isinstance(model.output, dict):
        model.compile(optimizer=build_optimizer(cfg.train), loss=loss, metrics=[mean_iou])
        saved, targets = model, None
    else:
        heads = _check_outputs(cfg, model)
        model.compile(
            optimizer=build_optimizer(cfg.train),
            loss={k: loss for k in heads},
            loss_weights={k: 1.0 if k == MAIN_OUTPUT else cfg.train.aux_loss_weight for k in heads},
            metrics={MAIN_OUTPUT: [mean_iou]},
        )
        saved = keras.Model(model.input, model.output[MAIN_OUTPUT], name=model.name)
        targets = lambda x, y: (x, {k: y for k in heads})  # noqa: E731
    # Otherwise Keras builds the optimizer inside the first traced training step, where
    # creating the slots is slow: the ResNet-34 U-Net's first AdamW step took 10.0 s, and
    # 0.25 s + 5.7 s when built here (timed with two `train_on_batch` calls, 2026-11-30).
    model.optimizer.build(model.trainable_variables)
    return saved, targets


def resolve_class_weights(cfg: Config, info: runs.ClassInfo, data_dir) -> list[float] | None:
    """Config class weights; "median_frequency" counts the training split's labels."""
    weights = cfg.train.class_weights
    if weights == "median_frequency":
        masks = (
            m for _, m in runs.load_split(cfg, cfg.data.train_split, data_dir).as_numpy_iterator()
        )
        weights = median_frequency_weights(*count_labels(masks, info.num_classes))
        print("median-frequency class weights:", ", ".join(f"{w:.4f}" for w in weights))
    if weights is not None and len(weights) != info.num_classes:
        raise ValueError(
            f"train.class_weights has {len(weights)} values for {info.num_classes} classes"
        )
    return weights


def _fit_segments(done: int, total: int, per_epoch: int):
    """`(initial_epoch, epochs, steps_per_epoch)` fit calls covering steps `done..total`.

    A run resumed mid-epoch first finishes that epoch with the remaining steps.
    """
    while done < total:
        epoch, offset = divmod(done, per_epoch)
        full = (total - done) // per_epoch if offset == 0 else 0
        if full:
            yield epoch, epoch + full, per_epoch
            done += full * per_epoch
        else:
            steps = min(per_epoch - offset, total - done)
            yield epoch, epoch + 1, steps
            done += steps


def train(
    cfg: Config,
    model_dir: str | Path,
    data_dir: str | None = None,
    *,
    final_eval: bool = True,
    verbose: int | str | None = None,
) -> dict[str, Any]:
    """Train `cfg`'s model, resuming from `model_dir/backup` when it exists.

    Args:
        cfg: the experiment.
        model_dir: run folder (see module docstring).
        data_dir: data set folder (overrides `cfg.data.data_dir`).
        final_eval: evaluate `best.keras` on the validation split at full resolution.
        verbose: Keras `fit` verbosity; default a progress bar on a terminal, else one line
            per epoch (2), so logs written to a file stay readable.

    Returns:
        The metrics written to `metrics.json`.

    Raises:
        TrainingDiverged: the loss or the weights became NaN/inf (the last backup is kept).
    """
    refuse_training_if_frozen()  # before anything is written
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    strategy = build_strategy(cfg.train.distribution)  # before any other TF work
    chief = is_chief()
    model_dir = Path(model_dir)
    out_dir = model_dir if chief else Path(tempfile.mkdtemp(prefix="keras_seg_worker_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    policy = set_precision(cfg.train.precision)
    keras.utils.set_random_seed(cfg.train.seed)
    runs.check_config(cfg)
    if data_dir is not None:  # evaluate/predict/export of this run find the data again
        cfg = copy.deepcopy(cfg)
        cfg.data.data_dir = str(Path(data_dir).resolve())
    if chief:
        save_config(cfg, out_dir / "config.yaml")

    info = runs.class_info(cfg, data_dir)
    splits = {
        s: runs.load_split(cfg, s, data_dir) for s in (cfg.data.train_split, cfg.data.val_split)
    }
    class_weights = resolve_class_weights(cfg, info, data_dir)
    train_ds = datasets.batches(cfg, splits[cfg.data.train_split], True, info.num_classes)
    val_ds = datasets.batches(cfg, splits[cfg.data.val_split], False, info.num_classes)

    with strategy.scope():
        model = runs.build_model(cfg, info.num_classes)
        try:  # a pattern that matches no variable fails now, not at the first step
            variable_factors(cfg.train.lr_multipliers, [v.path for v in model.trainable_variables])
        except ValueError as e:
            raise ConfigError(f"{cfg.name}: {e}") from None
        saved, targets = compile_for_training(cfg, model, info, class_weights)
    if targets is not None:
        train_ds, val_ds = train_ds.map(targets), val_ds.map(targets)
    backup = cb.ResumableBackup(out_dir / "backup", cfg.train.checkpoint_every, cfg.train.steps)
    writer = cb.ModelWriter(saved)
    start = backup.restore(model, model_dir / "backup")  # every worker reads the chief's
    if start and verbose:
        print(f"Resuming from {model_dir / 'backup'} at step {start} of {cfg.train.steps}")
    history_log = cb.HistoryLog(out_dir / "history.json")
    callbacks = [
        cb.MainOutputLogs(MAIN_OUTPUT),  # first: "logits_mean_iou" is "mean_iou" for the rest
        cb.StopOnNaN(backup),  # before the backup: a NaN batch must never be saved
        backup,
        cb.EpochExtras(),
        cb.KeepBest(out_dir / "best.keras", monitor=MONITOR, writer=writer),
        history_log,
        keras.callbacks.TensorBoard(out_dir / "logs"),
    ]
    print(
        f"{cfg.name}: {cfg.model.name} ({model.count_params():,} parameters), "
        f"{info.num_classes} classes, policy {policy}, {strategy.num_replicas_in_sync} replica(s), "
        f"{cfg.train.steps} steps of batch {cfg.train.batch_size}"
    )
    pixels = pixels_per_step(cfg.train.batch_size, cfg.data.crop_size)
    note = eigen_kernels_note(cfg.model.name, cfg.model.backbone, pixels)
    if note and chief:
        print(note)
    t0 = time.perf_counter()
    done = start
    for initial_epoch, epochs, steps in _fit_segments(
        start, cfg.train.steps, cfg.train.steps_per_epoch
    ):
        backup.global_step = done
        with warnings.catch_warnings():
            # The training data repeat forever, so this Keras warning can only come from a
            # validation set of unknown length (file readers) reaching its end, as it should.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            model.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=initial_epoch,
                epochs=epochs,
                steps_per_epoch=steps,
                shuffle=False,  # the pipeline shuffles
                callbacks=callbacks,
                verbose=verbose if chief else 0,
            )
        done += (epochs - initial_epoch) * steps
    train_seconds = time.perf_counter() - t0

    result: dict[str, Any] = {
        "config": cfg.name,
        "steps": cfg.train.steps,
        "resumed_from_step": start,
        "train_seconds": train_seconds,
        "precision": policy,
        "replicas": strategy.num_replicas_in_sync,
        "onednn": onednn_enabled(),  # TensorFlow's CPU kernels (keras-seg train's restart)
        "params": saved.count_params(),
        # As PyTorch's `parameters()` counts (BatchNorm statistics are buffers there).
        "trainable_params": int(sum(math.prod(w.shape) for w in saved.trainable_weights)),
        "history": history_log.history(),
    }
    if chief:
        writer.save(out_dir / "final.keras")
        best_record = out_dir / "best.keras.json"
        if not (out_dir / "best.keras").exists():  # no validation score was ever finite
            writer.save(out_dir / "best.keras")
        if best_record.exists():
            result["best"] = json.loads(best_record.read_text())
        if final_eval:
            best = runs.load_model(out_dir / "best.keras")
            predictor = inference.Predictor(best, runs.eval_settings(cfg))
            split = cfg.data.val_split
            result["final_eval"] = inference.evaluate(
                predictor, runs.load_split(cfg, split, data_dir), info
            )
            title = f"best.keras on {cfg.data.name}/{split} at full resolution"
            print(format_table(result["final_eval"], title=title))
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(backup.backup_dir, ignore_errors=True)
    if not chief:
        shutil.rmtree(out_dir, ignore_errors=True)
    return result
