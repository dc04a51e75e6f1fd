"""Do the zoo's gradients agree with oneDNN on and off?

The README tells users of CPUs where TensorFlow leaves oneDNN off (no AVX-512 VNNI/BF16 or
AMX) to train with `TF_ENABLE_ONEDNN_OPTS=1`, and oneDNN once had wrong gradients for
dilated depthwise convolutions (`keras_seg.layers.convolution`). This tool builds each zoo
model (its default architecture at 128x128, batch 2, 5 classes, a band of ignore labels)
and takes the loss and the gradient of every trainable variable in three processes: Eigen
(oneDNN off), Eigen with one intra-op thread, and oneDNN. Per variable the error is
`||g - g_eigen|| / ||g_eigen||`. Summation order alone moves these gradients a lot (a
freshly initialised network, BatchNorm over a batch of two and 4x4 maps deep down): the
one-thread Eigen run is that noise floor. Variables whose gradient is below `--floor` of the
model's largest gradient norm are left out (the gradient of a bias before BatchNorm, or of
an attention key's bias, is zero in exact arithmetic). A model fails when its loss differs
by more than 1e-5 (relative) or its worst oneDNN error exceeds both `--tolerance` and
`--noise-factor` times its worst one-thread error; exit status 1 then (SegNet is reported
but not gated: `UNGATED`). JSON report.

Example (the README's figure):
    python tools/onednn_gradient_check.py --output bench_results/onednn_gradients_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

from keras_seg.benchmarks.common import run_worker  # noqa: E402  (standard library only)
from keras_seg.benchmarks.common import write_report  # noqa: E402

# (model, backbone, builder arguments): every architecture at its default, plus the
# separable ASPP and the MobileNetV2 backbone (dilated depthwise convolutions).
MODELS = (
    ("unet", None, {}),
    ("unet", "resnet34", {}),
    ("segnet", None, {}),
    ("fcn8s", None, {}),
    ("deeplabv3", "resnet50", {}),
    ("deeplabv3plus", "resnet50", {}),
    ("deeplabv3plus", "resnet50", {"separable": True}),
    ("deeplabv3plus", "mobilenet_v2", {}),
    ("pspnet", None, {}),
    ("hrnet", "hrnetv2_w18_small", {}),
    ("segformer", "mit_b0", {}),
)

# Reported, not gated: SegNet's unpooling places values at each window's first maximum, a
# discontinuous choice. Measured (2026-12-01, AVX2 EPYC): oneDNN's forward differs from
# Eigen's by 1e-5 at block 4, which flips 2 of its 65,536 windows (top-two gap 1.3e-5);
# that moves the decoder's activations by 5e-3 and, through BatchNorm over a batch of two,
# the gradients by about 10%; one-thread Eigen moved them by 0.6% (no flip).
UNGATED = {"segnet": "argmax unpooling: near-ties flip with rounding"}

_WORKER = """
import json, sys
import numpy as np
import keras_seg, keras, tensorflow as tf
from keras_seg.machine import onednn_enabled
models, path = json.loads(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (2, 128, 128, 3)).astype("float32")
y = rng.integers(0, 5, (2, 128, 128)).astype("int32")
y[:, :8] = 255
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
meta, arrays = {"onednn": onednn_enabled(), "models": {}}, {}
for i, (name, backbone, kwargs) in enumerate(models):
    keras.utils.set_random_seed(0)
    model = keras_seg.build(name, num_classes=5, backbone=backbone, **kwargs)
    def step(x, y, model=model):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)
    loss, grads = tf.function(step)(x, y)
    names = [v.path for v in model.trainable_variables]
    meta["models"][json.dumps([name, backbone, kwargs])] = {"loss": float(loss), "names": names}
    arrays.update({f"{i}/{j}": np.asarray(g) for j, g in enumerate(grads)})
np.savez(path + ".npz", **arrays)
with open(path, "w") as f:
    json.dump(meta, f)
"""


def _gradients(name: str, env: dict[str, str], tmp: Path) -> dict:
    path = tmp / f"grads_{name}.json"
    run_worker(
        [sys.executable, "-c", _WORKER, json.dumps(MODELS), str(path)],
        {**os.environ, **env},
        "onednn_gradient_check: worker failed",
    )
    import numpy as np

    result = json.loads(path.read_text())
    arrays = np.load(f"{path}.npz")
    for i, model in enumerate(result["models"].values()):
        model["grads"] = [arrays[f"{i}/{j}"] for j in range(len(model["names"]))]
    return result


def errors(reference: dict, other: dict, floor: float) -> dict:
    """Per variable `||other - reference|| / ||reference||` for the variables whose gradient
    norm is above `floor` of the model's largest; the loss's relative difference, the worst
    variable and the median."""
    import numpy as np

    norms = [float(np.linalg.norm(g)) for g in reference["grads"]]
    largest = max(norms)
    found = {
        name: float(np.linalg.norm(b - a) / norm)
        for name, norm, a, b in zip(
            reference["names"], norms, reference["grads"], other["grads"], strict=True
        )
        if norm > floor * largest
    }
    worst = max(found, key=found.get)
    return {
        "loss": other["loss"],
        "loss_relative_difference": abs(other["loss"] - reference["loss"]) / abs(reference["loss"]),
        "variables_compared": len(found),
        "worst": found[worst],
        "worst_variable": worst,
        "median": float(np.median(list(found.values()))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", type=float, default=1e-6)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--noise-factor", type=float, default=10.0)
    parser.add_argument("--output", default="onednn_gradients.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        eigen = _gradients("eigen", {"TF_ENABLE_ONEDNN_OPTS": "0"}, Path(tmp))
        noise = _gradients(
            "eigen1", {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1"}, Path(tmp)
        )
        onednn = _gradients("onednn", {"TF_ENABLE_ONEDNN_OPTS": "1"}, Path(tmp))
    if eigen["onednn"] or not onednn["onednn"]:
        raise SystemExit("onednn_gradient_check: TF_ENABLE_ONEDNN_OPTS did not switch oneDNN")
    rows, failed = [], []
    for key, reference in eigen["models"].items():
        row = {
            "model": json.loads(key),
            "loss_eigen": reference["loss"],
            "variables": len(reference["names"]),
            "eigen_1_thread": errors(reference, noise["models"][key], args.floor),
            "onednn": errors(reference, onednn["models"][key], args.floor),
        }
        worst, floor = row["onednn"]["worst"], row["eigen_1_thread"]["worst"]
        row["passed"] = row["onednn"]["loss_relative_difference"] <= 1e-5 and (
            worst <= args.tolerance or worst <= args.noise_factor * floor
        )
        row["not_gated"] = UNGATED.get(row["model"][0])
        rows.append(row)
        if not row["passed"] and not row["not_gated"]:
            failed.append(key)
        print(
            f"{key:50s} {row['onednn']['variables_compared']}/{row['variables']} variables: "
            f"oneDNN worst {worst:.1e} ({row['onednn']['worst_variable']}), median "
            f"{row['onednn']['median']:.1e}; 1-thread Eigen worst {floor:.1e}, median "
            f"{row['eigen_1_thread']['median']:.1e}{'' if row['passed'] else '  over'}"
            f"{'  (not gated: ' + row['not_gated'] + ')' if row['not_gated'] else ''}"
        )
    command = " ".join(["python", "tools/onednn_gradient_check.py", *sys.argv[1:]])
    settings = {
        "command": command,
        "floor": args.floor,
        "tolerance": args.tolerance,
        "noise_factor": args.noise_factor,
        "input": "batch 2, 128x128, 5 classes, rows 0-7 ignored (255)",
    }
    write_report(Path(args.output), "onednn_gradient_check", settings, rows)
    print(f"wrote {args.output}")
    if failed:
        print(f"onednn_gradient_check: gradients disagree for {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
