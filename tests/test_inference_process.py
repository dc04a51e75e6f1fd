"""A process that only predicts (`keras_seg.machine.inference_only`, what `keras-seg predict`
and `evaluate` declare): TensorFlow's oneDNN kernels keep each convolution's filter after its
first call. The same logits as an ordinary process, training refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_seg.machine import FROZEN_WEIGHTS_VARIABLE
from keras_seg.machine import inference_environment
from keras_seg.machine import inference_only
from keras_seg.machine import onednn_enabled
from keras_seg.machine import refuse_training_if_frozen
from keras_seg.machine import weights_assumed_frozen
from tests.helpers import random_images
from tests.helpers import small_model

REPO = Path(__file__).resolve().parents[1]

# In a new process: declare it inference-only, then for each saved model the logits of two
# different batches through `predict_on_batch` and through `Predictor`; then, for the first
# model, new weights and `predict_on_batch` again (where the setting is in force the kernels
# still compute with the weights they saw first: proof that it is).
_CHILD = """
import json, sys
import numpy as np
import keras_seg
import keras
from keras_seg.inference import Predictor
from keras_seg.machine import inference_only

in_force = inference_only()
paths, images, out = sys.argv[1].split(","), np.load(sys.argv[2]), sys.argv[3]
logits = {}
for path in paths:
    model = keras.saving.load_model(path)
    predictor = Predictor(model)
    for i, x in enumerate(images):
        logits[f"{path}/predict_on_batch/{i}"] = np.array(model.predict_on_batch(x[None]))
        logits[f"{path}/predictor/{i}"] = predictor.logits(x[None])
model = keras.saving.load_model(paths[0])
model.predict_on_batch(images[:1])
model.set_weights([w * 0.5 for w in model.get_weights()])
logits["changed"] = np.array(model.predict_on_batch(images[:1]))
np.savez(out, **logits)
print(json.dumps({"in_force": in_force}))
"""


def _unset(monkeypatch) -> None:
    # setenv first, so that monkeypatch removes the variable again after the test even when
    # the code under test set it: in this pytest process it would freeze every later test's
    # convolutions (TensorFlow reads it at the first one).
    monkeypatch.setenv(FROZEN_WEIGHTS_VARIABLE, "0")
    monkeypatch.delenv(FROZEN_WEIGHTS_VARIABLE)


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FROZEN_WEIGHTS_VARIABLE}
    return env | {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""} | extra


def test_the_variable_is_read_as_tensorflow_reads_it(monkeypatch):
    _unset(monkeypatch)
    assert not weights_assumed_frozen()
    assert inference_environment() == {FROZEN_WEIGHTS_VARIABLE: "1"}
    for value, on in [("1", True), ("TRUE", True), ("true", True), ("0", False), ("False", False)]:
        monkeypatch.setenv(FROZEN_WEIGHTS_VARIABLE, value)
        assert weights_assumed_frozen() is on, value
        assert inference_environment() == {}, "a user's own setting wins"
    # TensorFlow would abort the process at its first oneDNN convolution on this value.
    monkeypatch.setenv(FROZEN_WEIGHTS_VARIABLE, "yes")
    with pytest.raises(ValueError, match=f"{FROZEN_WEIGHTS_VARIABLE}='yes': TensorFlow accepts"):
        inference_environment()


def test_inference_only_sets_the_variable_and_says_whether_it_is_in_force(monkeypatch):
    _unset(monkeypatch)
    assert inference_only() is onednn_enabled()
    assert os.environ[FROZEN_WEIGHTS_VARIABLE] == "1"
    with pytest.raises(ValueError, match="train in a process without it"):
        refuse_training_if_frozen()
    monkeypatch.setenv(FROZEN_WEIGHTS_VARIABLE, "0")  # the user's choice stands
    assert inference_only() is False
    assert os.environ[FROZEN_WEIGHTS_VARIABLE] == "0"
    refuse_training_if_frozen()


@pytest.mark.slow
def test_a_process_that_only_predicts_gives_the_same_logits(tmp_path):
    paths = []
    for name in ["unet", "deeplabv3plus", "segformer", "fcn8s"]:
        model = small_model(name, num_classes=4)
        paths.append(str(tmp_path / f"{name}.keras"))
        model.save(paths[-1])
    images = random_images(2, 64, 64, seed=3)
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "logits.npz"
    # oneDNN on whatever TensorFlow's default here (AVX2-only CPUs default to Eigen, where
    # the setting would change nothing).
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, ",".join(paths), str(tmp_path / "images.npy"), str(out)],
        env=_child_env(TF_ENABLE_ONEDNN_OPTS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    in_force = json.loads(done.stdout.strip().splitlines()[-1])["in_force"]
    child = np.load(out)

    import keras

    from keras_seg.inference import Predictor

    for path in paths:
        model = keras.saving.load_model(path)
        predictor = Predictor(model)
        for i, x in enumerate(images):
            reference = np.array(model.predict_on_batch(x[None]))
            scale = np.abs(reference).max()
            for route in ("predict_on_batch", "predictor"):
                got = child[f"{path}/{route}/{i}"]
                assert got.shape == reference.shape
                np.testing.assert_allclose(got, reference, atol=1e-4 * scale, err_msg=route)
            np.testing.assert_allclose(predictor.logits(x[None]), reference, atol=1e-4 * scale)
    # What the setting does, and why a process under it must not train: its kernels kept the
    # filters they saw first (the biases follow the variables), so the logits after new
    # weights are not those of the new weights.
    model = keras.saving.load_model(paths[0])
    before = np.array(model.predict_on_batch(images[:1]))
    model.set_weights([w * 0.5 for w in model.get_weights()])
    after = np.array(model.predict_on_batch(images[:1]))
    assert not np.allclose(before, after, atol=1e-3)
    followed = np.allclose(child["changed"], after, atol=1e-4 * np.abs(after).max())
    assert followed is not in_force, f"in force: {in_force}, followed the new weights: {followed}"


# A mixed_bfloat16 model in such a process: the logits of batch 1 and batch 2 (two traces),
# how many folded kernels the model keeps and in which dtype, then the logits after new
# weights.
_BF16_CHILD = """
import json, sys
import numpy as np
import keras_seg
import keras
model = keras.saving.load_model(sys.argv[1])
images = np.load(sys.argv[2])
from keras_seg.inference import Predictor
got = {"one": np.array(model.predict_on_batch(images[:1])), "two": model.predict(images)}
predictor = Predictor(model)
got["predictor"] = predictor.logits(images)
kept = model._fold_once()
model.set_weights([w * 0.5 for w in model.get_weights()])
got["changed"] = np.array(model.predict_on_batch(images))
np.savez(sys.argv[3], **got)
dtypes = sorted({k.dtype.name for k, _ in kept.values()})
print(json.dumps({"kept": len(kept), "dtypes": dtypes, "predictor": predictor.folds_once}))
"""


def test_a_bfloat16_model_in_such_a_process_folds_its_kernels_once(tmp_path):
    """`SegmentationModel` keeps its folded bfloat16 kernels where the weights are declared
    frozen (no multiply and cast of every kernel on each call; keras_seg.fold.FOLD_ONCE_DTYPES):
    one kept kernel per folded convolution, shared by both batch sizes' traces and by
    `Predictor` (which runs the model's predict step there), the logits of an ordinary
    process, and, as the setting promises, not following new weights."""
    import keras

    from keras_seg.fold import foldable_pairs

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = small_model("unet", num_classes=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.save(tmp_path / "model.keras")
    images = random_images(2, 64, 64, seed=5)
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / "logits.npz"
    args = [str(tmp_path / "model.keras"), str(tmp_path / "images.npy"), str(out)]
    done = subprocess.run(
        [sys.executable, "-c", _BF16_CHILD, *args],
        env=_child_env(TF_ENABLE_ONEDNN_OPTS="1", **{FROZEN_WEIGHTS_VARIABLE: "1"}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    convs = [c for c in foldable_pairs(model).values() if type(c) is keras.layers.Conv2D]
    assert report == {"kept": len(convs), "dtypes": ["bfloat16"], "predictor": True} and convs
    child = np.load(out)
    want = np.array(model.predict_on_batch(images))
    scale = np.abs(want).max()
    # bfloat16 under oneDNN there and maybe Eigen here: the kernels' rounding differs.
    np.testing.assert_allclose(child["one"], want[:1], atol=2e-2 * scale)
    np.testing.assert_allclose(child["two"], want, atol=2e-2 * scale)
    # Predictor runs the same predict step there (no float32 copy with per-call casts).
    np.testing.assert_array_equal(child["predictor"], child["two"])
    model.set_weights([w * 0.5 for w in model.get_weights()])
    after = np.array(model.predict_on_batch(images))
    assert not np.allclose(child["two"], after, atol=2e-2 * scale)
    assert not np.allclose(child["changed"], after, atol=2e-2 * scale), "new weights followed"


_TRAIN_CHILD = """
import numpy as np
import keras_seg
from tests.helpers import small_model
model = small_model("unet")
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
x = np.zeros((1, 32, 32, 3), "float32")
try:
    model.train_on_batch(x, np.zeros((1, 32, 32), "int32"))
except ValueError as error:
    print("refused:", error)
else:
    print("trained")
"""


@pytest.mark.slow
def test_training_is_refused_in_such_a_process(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_CHILD],
        env=_child_env(**{FROZEN_WEIGHTS_VARIABLE: "1"}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        done.stdout.strip()
        .splitlines()[-1]
        .startswith(f"refused: {FROZEN_WEIGHTS_VARIABLE} is on in this process")
    )

    # The command line: one line, the bad-input exit code, nothing written.
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "keras_seg", "train", "--config",
         str(REPO / "zoo_configs" / "demo_synthetic.yaml"), "--model-dir", str(run)],
        env=_child_env(**{FROZEN_WEIGHTS_VARIABLE: "true"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"keras-seg train: error: {FROZEN_WEIGHTS_VARIABLE} is on in this process "
        "(keras_seg.machine.inference_only or the environment): oneDNN would keep the first "
        f"weights it saw; train in a process without it (unset {FROZEN_WEIGHTS_VARIABLE})"
    ]
    assert not run.exists()


_CONSOLE_CHILD = """
import os, sys
from keras_seg.cli import main
code = main(sys.argv[1:], restart=True)  # as the console script calls it
print(code, os.environ.get("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"))
"""


@pytest.mark.slow
def test_the_predict_and_evaluate_commands_declare_their_process(tmp_path):
    import cv2

    small_model("unet", num_classes=3).save(tmp_path / "m.keras")
    cv2.imwrite(str(tmp_path / "img.png"), random_images(1, 24, 24)[0].astype("uint8"))
    argv = ["predict", "--model", str(tmp_path / "m.keras"), "--input", str(tmp_path / "img.png")]
    argv += ["--output", str(tmp_path / "out")]

    def run(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _CONSOLE_CHILD, *argv],
            env=_child_env(**env),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = run()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "0 1"
    assert (tmp_path / "out" / "img.png").exists()
    done = run(**{FROZEN_WEIGHTS_VARIABLE: "0"})  # the user's choice stands
    assert done.stdout.strip().splitlines()[-1] == "0 0"
    # A value TensorFlow would abort on: one line, the bad-input code, nothing predicted.
    (tmp_path / "out" / "img.png").unlink()
    done = run(**{FROZEN_WEIGHTS_VARIABLE: "yes"})
    assert done.stdout.strip().splitlines()[-1] == "2 yes"
    assert done.stderr.strip().splitlines()[-1] == (
        f"keras-seg predict: error: {FROZEN_WEIGHTS_VARIABLE}='yes': TensorFlow accepts 1, "
        "true, 0 or false"
    )
    assert not (tmp_path / "out" / "img.png").exists()
