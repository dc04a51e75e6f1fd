"""Training runs end to end: run files, NaN stop, resume at the saved step, kill/restart,
multi-worker training on two local processes."""

import json
import os
import signal
import socket
import subprocess
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg import runs
from keras_seg.cli import main
from keras_seg.config import load_config
from keras_seg.machine import eigen_kernels_note
from keras_seg.training import TrainingDiverged
from keras_seg.training import callbacks as cb
from keras_seg.training import datasets
from keras_seg.training import train
from tests.helpers import onednn_in_training
from tests.training.common import CLI
from tests.training.common import cli_env
from tests.training.common import tiny_config


def test_train_writes_the_run_files(tmp_path, capsys):
    _, cfg = tiny_config(tmp_path)
    run = tmp_path / "run"
    result = train(cfg, run, verbose=0)
    names = ["config.yaml", "best.keras", "best.keras.json", "final.keras", "metrics.json"]
    for name in [*names, "history.json"]:
        assert (run / name).exists(), name
    assert load_config(run / "config.yaml") == cfg
    assert list((run / "logs" / "train").glob("events.out.tfevents.*"))
    assert list((run / "logs" / "validation").glob("events.out.tfevents.*"))
    assert not (run / "backup").exists(), "the backup is removed once the run completes"

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    val = metrics["history"]["val_mean_iou"]
    assert len(val) == 2 and metrics["resumed_from_step"] == 0
    assert metrics["best"]["value"] == pytest.approx(max(val))
    assert len(metrics["final_eval"]["per_class"]) == 5
    # Per-epoch validation runs at original resolution: it matches the full evaluation.
    assert metrics["final_eval"]["miou"] == pytest.approx(metrics["best"]["value"], rel=1e-4)
    # ... and so does its pixel accuracy, read from the same confusion matrix.
    best_epoch = int(np.argmax(val))
    accuracy = metrics["history"]["val_pixel_accuracy"][best_epoch]
    assert metrics["final_eval"]["pixel_accuracy"] == pytest.approx(accuracy, rel=1e-4)
    assert metrics["history"]["learning_rate"][-1] == pytest.approx(0.0)  # poly reaches 0

    # The per-class table of the final evaluation is printed, as `evaluate` prints it.
    out = capsys.readouterr().out
    assert "best.keras on synthetic/val at full resolution" in out and "rectangle" in out
    # Where TensorFlow chose Eigen's CPU kernels by itself, the run says how to get oneDNN's.
    note = eigen_kernels_note(cfg.model.name, cfg.model.backbone)
    assert (note is not None and note in out) or (note is None and "note: " not in out)

    model = keras.saving.load_model(run / "final.keras")  # no custom_objects needed
    assert getattr(model, "optimizer", None) is None, "the .keras files hold the model only"
    out = model(np.zeros((1, 40, 56, 3), "float32"))
    assert tuple(out.shape) == (1, 40, 56, 5)
    # No optimizer state: the file is about the size of the weights (AdamW would triple it).
    weight_bytes = 4 * model.count_params()
    assert (run / "final.keras").stat().st_size < 1.5 * weight_bytes + 200_000


def test_median_frequency_class_weights_come_from_the_training_labels(tmp_path):
    from keras_seg.losses import count_labels
    from keras_seg.losses import median_frequency_weights
    from keras_seg.training.trainer import resolve_class_weights

    _, cfg = tiny_config(tmp_path, ["train.class_weights=median_frequency"])
    info = runs.class_info(cfg)
    masks = [m for _, m in runs.load_split(cfg, "train").as_numpy_iterator()]
    expected = median_frequency_weights(*count_labels(masks, 5))
    assert resolve_class_weights(cfg, info, None) == pytest.approx(expected)
    _, cfg = tiny_config(tmp_path, ["train.class_weights=[1.0, 2.0]"])
    with pytest.raises(ValueError, match="2 values for 5 classes"):
        resolve_class_weights(cfg, info, None)


def _poison_after(monkeypatch, good_batches: int):
    """Training batches from number `good_batches` on carry NaN pixels."""
    original = datasets.batches

    def batches(cfg, dataset, training, *args, **kwargs):
        ds = original(cfg, dataset, training, *args, **kwargs)
        if not training:
            return ds

        def poison(i, batch):
            images, masks = batch
            return tf.where(i >= good_batches, float("nan"), images), masks

        return ds.enumerate().map(poison)

    monkeypatch.setattr(datasets, "batches", batches)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint_then_resume(tmp_path, monkeypatch):
    _, cfg = tiny_config(tmp_path, ["train.steps=6", "train.steps_per_epoch=3"])
    run = tmp_path / "run"
    _poison_after(monkeypatch, good_batches=2)
    with pytest.raises(TrainingDiverged, match=r"Loss became nan at step 3.*last good.*step 2"):
        train(cfg, run, verbose=0)
    state = json.loads((run / "backup" / cb.BACKUP_STATE).read_text())
    assert state["global_step"] == 2
    assert not (run / "final.keras").exists()
    saved = keras_seg_model_weights(run / "backup" / cb.BACKUP_WEIGHTS, cfg)
    assert all(np.isfinite(w).all() for w in saved)

    # Restart on clean data: continues at step 2 (epoch 1 finishes its last step), not at 0.
    monkeypatch.undo()
    result = train(cfg, run, verbose=0, final_eval=False)
    assert result["resumed_from_step"] == 2
    assert len(result["history"]["val_mean_iou"]) == 2  # epochs 1 (1 step left) and 2
    assert result["steps"] == 6 and (run / "final.keras").exists()


@pytest.mark.parametrize(
    "recipe",
    [[], ['train.lr_multipliers={"^logits/": 10.0}', "train.warmup_steps=2"]],
    ids=["plain", "layerwise_warmup"],
)
def test_a_resumed_run_keeps_the_history_of_the_epochs_before(tmp_path, monkeypatch, recipe):
    overrides = ["train.steps=6", "train.steps_per_epoch=2", "train.checkpoint_every=1", *recipe]
    _, cfg = tiny_config(tmp_path, overrides)
    run = tmp_path / "run"
    _poison_after(monkeypatch, good_batches=3)  # epoch 1 ends; step 4 (epoch 2) is NaN
    with pytest.raises(TrainingDiverged):
        train(cfg, run, verbose=0, final_eval=False)
    before = json.loads((run / "history.json").read_text())
    assert list(before) == ["1"]
    monkeypatch.undo()
    result = train(cfg, run, verbose=0, final_eval=False)
    assert result["resumed_from_step"] == 3
    assert len(result["history"]["val_mean_iou"]) == 3  # epoch 1 from before, 2 and 3 now
    assert result["history"]["loss"][0] == before["1"]["loss"]
    assert json.loads((run / "metrics.json").read_text())["history"] == result["history"]


def keras_seg_model_weights(path, cfg):
    from keras_seg.training.schedules import build_optimizer

    model = runs.build_model(cfg, 5)
    model.compile(optimizer=build_optimizer(cfg.train), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return model.get_weights()


def test_cli_train_reports_divergence(tmp_path, capsys):
    path, _ = tiny_config(tmp_path)
    code = main(
        [
            "train",
            "--config",
            str(path),
            "--model-dir",
            str(tmp_path / "run"),
            "--set",
            "train.optimizer=sgd",
            "--set",
            "train.learning_rate=1e30",
            "--set",
            "train.checkpoint_every=1",
        ]
    )
    assert code == 3
    err = capsys.readouterr().err
    assert "error:" in err and ("Loss became" in err or "non-finite" in err), err
    assert "last good checkpoint (step 1)" in err
    assert (tmp_path / "run" / "backup" / cb.BACKUP_STATE).exists()


@pytest.mark.parametrize(
    ("setting", "backbone"), [(None, "resnet18"), ("0", "resnet18"), (None, None)]
)
def test_cli_train_restarts_with_the_training_environment(tmp_path, monkeypatch, setting, backbone):
    """`keras-seg train`, in a fresh process as users run it, restarts itself with
    `training_environment()`'s settings for the config's model (oneDNN where TensorFlow chose
    Eigen by itself, on an AVX2-only CPU for example, and the model trains faster on it: a
    ResNet U-Net, not the plain one) and records the kernels it trained with; a user's own
    `TF_ENABLE_ONEDNN_OPTS=0` wins."""
    from keras_seg.machine import training_environment

    if (training := onednn_in_training("unet", backbone)) is None:
        pytest.skip("this process's TensorFlow started with TF_ENABLE_ONEDNN_OPTS set")
    path, _ = tiny_config(tmp_path)
    run = tmp_path / "run"
    env = cli_env() if setting is None else cli_env(TF_ENABLE_ONEDNN_OPTS=setting)
    model = []
    if backbone is not None:  # a small ResNet U-Net
        options = "model.options={decoder_filters: [8, 8, 8, 8, 8]}"
        model = ["--set", f"model.backbone={backbone}", "--set", options]
    args = [*CLI, "train", "--config", str(path), *model, "--model-dir", str(run)]
    args.append("--no-final-eval")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    restarts = setting is None and training_environment("unet", backbone) == {
        "TF_ENABLE_ONEDNN_OPTS": "1"
    }
    assert ("note: restarting with TF_ENABLE_ONEDNN_OPTS=1" in done.stdout) is restarts
    assert "oneDNN custom operations" not in done.stderr
    assert "note: TensorFlow runs its Eigen" not in done.stdout  # the restart answered it
    onednn = json.loads((run / "metrics.json").read_text())["onednn"]
    assert onednn is (training if setting is None else False)
    # Run in-process (tests, notebooks), `main` never restarts: it is not its process's to end.
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("main() restarted the process"))
    assert main(["train", "--config", str(path), *model, "--model-dir", str(tmp_path / "again"),
                 "--no-final-eval", "--set", "train.steps=1"]) == 0  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    overrides = ["train.steps=20", "train.steps_per_epoch=5", "train.checkpoint_every=5"]
    path, cfg = tiny_config(tmp_path, overrides)
    run = tmp_path / "run"
    args = [*CLI, "train", "--config", str(path), "--model-dir", str(run), "--no-final-eval"]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.Popen(
        args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state_path = run / "backup" / cb.BACKUP_STATE
    deadline = time.monotonic() + 120
    try:
        while not state_path.exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run / "final.keras").exists(), "the run finished before it was killed"
    killed_at = json.loads(state_path.read_text())["global_step"]
    assert killed_at % 5 == 0 and 0 < killed_at < 20

    history_file = run / "history.json"
    before = json.loads(history_file.read_text()) if history_file.exists() else {}
    result = train(cfg, run, verbose=0, final_eval=False)
    assert result["resumed_from_step"] >= killed_at  # a later checkpoint may have landed
    # The history keeps the epochs that ended before the kill (an epoch killed between its
    # last checkpoint and its end never got its validation) and adds the resumed ones.
    resumed_epochs = 4 - result["resumed_from_step"] // 5
    assert len(result["history"]["loss"]) == len(before) + resumed_epochs
    assert result["history"]["loss"][: len(before)] == [e["loss"] for e in before.values()]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"] == result["history"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_training_on_two_local_processes(tmp_path):
    path, _ = tiny_config(tmp_path)
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = cli_env(TF_CONFIG=json.dumps(tf_config))
        args = [*CLI, "train", "--config", str(path), "--model-dir", str(run)]
        args += ["--set", "train.distribution=multi_worker", "--no-final-eval"]
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(args, env=env, stdout=log, stderr=log), log))
    try:
        for proc, _ in procs:
            proc.wait(timeout=150)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], logs
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["replicas"] == 2
    assert len(metrics["history"]["val_mean_iou"]) == 2
    assert (run / "final.keras").exists() and (run / "best.keras").exists()


def test_backup_skips_the_last_step_and_the_writer_builds_its_copy_once(tmp_path, monkeypatch):
    from tests.helpers import small_model

    model = small_model("unet", num_classes=3)
    backup = cb.ResumableBackup(tmp_path / "backup", save_freq=2, last_step=4)
    backup.set_model(model)
    for batch in range(4):
        backup.on_train_batch_end(batch)
    # Step 2 is saved; step 4 is the run's last, where final.keras is written instead.
    assert json.loads((tmp_path / "backup" / cb.BACKUP_STATE).read_text())["global_step"] == 2

    built = []
    original = type(model).from_config.__func__
    monkeypatch.setattr(
        type(model), "from_config", classmethod(lambda cls, c: built.append(1) or original(cls, c))
    )
    writer = cb.ModelWriter(model)
    writer.save(tmp_path / "a.keras")
    logits = model.get_layer("logits")
    logits.kernel.assign(logits.kernel + 1.0)  # trained further
    writer.save(tmp_path / "b.keras")
    assert len(built) == 1, "the copy is built once and given the weights at each save"
    monkeypatch.undo()
    a, b = (keras.saving.load_model(tmp_path / n) for n in ("a.keras", "b.keras"))
    kernel = {n: m.get_layer("logits").kernel.numpy() for n, m in [("a", a), ("b", b)]}
    np.testing.assert_array_equal(kernel["b"], logits.kernel.numpy())
    assert not np.array_equal(kernel["a"], kernel["b"])
    assert getattr(b, "optimizer", None) is None
