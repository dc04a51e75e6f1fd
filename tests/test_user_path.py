"""Every registered model through the commands a user runs, each in a fresh process.

For each model (registry-driven: a new architecture is picked up without edits), on a data
set written in the `folder` layout (JPEG images, PNG masks, split lists, classes.txt):
`keras-seg train` for enough steps to give meaningful predictions, then, each in a new
interpreter, `keras-seg evaluate`, `keras-seg predict` and `keras-seg export` to SavedModel,
TF Serving and TFLite fp32/fp16/dynamic/int8, whose parity gates must all pass. Also: user
mistakes end with one line on stderr and exit code 2, and no command prints TensorFlow's
start-up lines.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import keras_seg
from keras_seg.data import synthetic
from keras_seg.machine import runs_natively
from tests.training.common import CLI
from tests.training.common import cli_env

SIZE = 64
#: Shapes are drawn at ZOOM x SIZE and centre-cropped, so objects are large enough for the
#: stride-32 models to resolve at 64 px.
ZOOM = 2
NUM_TRAIN, NUM_VAL = 48, 16
#: Training recipe of the small configs: enough for confident predictions on the shapes.
RECIPE = {"steps": 200, "learning_rate": 3e-3, "batch_size": 8, "size": SIZE}
#: Per-model changes to the recipe, measured to pass MIN_MIOU: more steps where a model
#: learns slower; FCN-32s needs 128 px images (at 64 px its stride-32 scores are 2x2) and
#: still only outlines the shapes (4x4 scores), so it must merely beat all-background;
#: DeepLabv3 runs on the ResNet-18 backbone here, because MobileNetV2's BatchNorm momentum
#: (0.999) leaves the moving statistics near their start in a few hundred steps.
RECIPE_BY_MODEL: dict[str, dict] = {
    "deeplabv3plus": {"learning_rate": 1e-2},
    "deeplabv3": {"learning_rate": 1e-2, "backbone": "resnet18",
                  "options": {"backbone_kwargs": {"width": 8}}},
    "fcn8s": {"steps": 300},
    "fcn16s": {"steps": 300},
    "fcn32s": {"steps": 600, "size": 128, "learning_rate": 3e-4,
               "options": {"fc_channels": 64}, "min_miou": 0.2},
    # SegNet at 300 steps depended on the seed: held-out mIoU 0.80 / 0.43 / 0.55 over seeds
    # 0-2 (Eigen kernels; 0.49 / 0.64 / 0.60 with oneDNN's, 2026-12-02); at 500 steps
    # 0.84 (Eigen, seed 1), 0.87 / 0.73 (oneDNN, seeds 0 and 1).
    "segnet": {"steps": 500, "learning_rate": 1e-2},
}  # fmt: skip
#: The least held-out mIoU that counts as "meaningful predictions" (all background: 0.15).
MIN_MIOU = 0.5
#: Lines TensorFlow's native libraries print at start-up; none may reach the user.
STARTUP_NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit")


def run_cli(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [*CLI, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )
    for noise in STARTUP_NOISE:
        assert noise not in done.stderr, f"start-up noise in {args[0]}: {done.stderr[:2000]}"
    return done


def write_folder_dataset(root: Path, size: int = SIZE) -> Path:
    """Synthetic shapes in the `folder` layout: images/*.jpg, masks/*.png, train/val lists."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    images, masks = synthetic.make_dataset(NUM_TRAIN + NUM_VAL, size=size * ZOOM, seed=7)
    top = (size * ZOOM - size) // 2
    images, masks = (a[:, top : top + size, top : top + size] for a in (images, masks))
    stems = [f"shape_{i:03d}" for i in range(len(images))]
    for stem, image, mask in zip(stems, images, masks, strict=True):
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    (root / "train.txt").write_text("\n".join(stems[:NUM_TRAIN]) + "\n")
    (root / "val.txt").write_text("\n".join(stems[NUM_TRAIN:]) + "\n")
    (root / "classes.txt").write_text("\n".join(synthetic.CLASS_NAMES) + "\n")
    return root


def write_config(path: Path, model: str, precision: str = "float32") -> Path:
    recipe = {**RECIPE, **RECIPE_BY_MODEL.get(model, {})}
    options = {**keras_seg.get_spec(model).small_config, **recipe.get("options", {})}
    backbone = recipe.get("backbone", options.pop("backbone", None))
    options.pop("backbone", None)
    config = {
        "name": f"{model}_shapes",
        "model": {"name": model, "backbone": backbone, "options": options},
        "data": {
            "name": "folder",
            "crop_size": [recipe["size"], recipe["size"]],
            "augment": {"scale_range": [0.75, 1.25], "jitter": False},
        },
        "train": {
            "batch_size": recipe["batch_size"],
            "steps": recipe["steps"],
            "steps_per_epoch": recipe["steps"] // 2,
            "optimizer": "adamw",
            "learning_rate": recipe["learning_rate"],
            "weight_decay": 1.0e-4,
            "precision": precision,
            "distribution": "one_device",
            "checkpoint_every": recipe["steps"],
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """`get(size)`: the folder data set of that image size, written once per module."""
    made: dict[int, Path] = {}

    def get(size: int) -> Path:
        if size not in made:
            made[size] = write_folder_dataset(tmp_path_factory.mktemp(f"shapes{size}"), size)
        return made[size]

    return get


@pytest.fixture(scope="module")
def dataset(datasets) -> Path:
    return datasets(SIZE)


@pytest.mark.slow
@pytest.mark.parametrize("model", keras_seg.list_models())
def test_train_evaluate_predict_export_in_fresh_processes(model, datasets, tmp_path):
    size = {**RECIPE, **RECIPE_BY_MODEL.get(model, {})}["size"]
    dataset = datasets(size)
    config = write_config(tmp_path / "config.yaml", model)
    run = tmp_path / "run"

    done = run_cli("train", "--config", str(config), "--data-dir", str(dataset),
                   "--model-dir", str(run), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ["config.yaml", "best.keras", "final.keras", "metrics.json", "history.json"]:
        assert (run / name).exists(), name
    assert "at full resolution" in done.stdout and "triangle" in done.stdout
    assert "━" not in done.stdout, "no progress bars when the output is not a terminal"

    done = run_cli("evaluate", "--checkpoint", str(run), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "eval_val.json").read_text())
    assert result["num_pixels"] == NUM_VAL * size * size
    assert [r["name"] for r in result["per_class"]] == list(synthetic.CLASS_NAMES)
    least = {**RECIPE, **RECIPE_BY_MODEL.get(model, {})}.get("min_miou", MIN_MIOU)
    assert result["miou"] >= least, f"{model} did not learn: mIoU {result['miou']:.3f}"

    images = dataset / "images"
    done = run_cli("predict", "--model", str(run), "--input", str(images),
                   "--output", str(tmp_path / "pred"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ids = cv2.imread(str(tmp_path / "pred" / "shape_050.png"), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (size, size) and ids.max() < len(synthetic.CLASS_NAMES)
    assert (tmp_path / "pred" / "shape_050_overlay.png").exists()
    assert len(list((tmp_path / "pred").glob("*.png"))) == 2 * (NUM_TRAIN + NUM_VAL)

    done = run_cli("export", "--model", str(run), "--format", "saved_model", "tfserving",
                   "tflite", "--quantize", "none", "fp16", "dynamic", "int8", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, f"{model}: {done.stderr[-3000:]}\n{done.stdout[-3000:]}"
    export = run / "export"
    assert (export / "saved_model" / "saved_model.pb").exists()
    assert (export / "serving" / model / "1" / "saved_model.pb").exists()
    agreement = {}
    for q in ("fp32", "fp16", "dynamic", "int8"):
        tflite = export / f"{model}_{q}.tflite"
        assert tflite.exists(), q
        parity = json.loads(tflite.with_suffix(".json").read_text())["extra"]["parity"]
        assert parity["pixel_agreement"] >= parity["threshold"]
        assert parity["keras_miou"] is not None, "checked on the run's labelled val images"
        agreement[q] = parity["pixel_agreement"]
    print(model, {q: f"{100 * a:.2f}%" for q, a in agreement.items()})


@pytest.mark.slow
def test_a_bfloat16_run_evaluates_and_exports_in_float32(dataset, tmp_path):
    # mixed_bfloat16 is what `precision: auto` trains in on CPUs with native bfloat16; TFLite
    # has no bfloat16 kernels, so the exports must run the same weights in float32.
    config = write_config(tmp_path / "config.yaml", "unet", precision="mixed_bfloat16")
    run = tmp_path / "run"
    done = run_cli("train", "--config", str(config), "--data-dir", str(dataset),
                   "--model-dir", str(run), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "policy mixed_bfloat16" in done.stdout
    assert json.loads((run / "metrics.json").read_text())["precision"] == "mixed_bfloat16"

    done = run_cli("evaluate", "--checkpoint", str(run), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "eval_val.json").read_text())["miou"] >= MIN_MIOU
    # Where bfloat16 is only emulated, evaluation runs a float32 copy, and says so.
    note = "computes in mixed_bfloat16, which this machine only emulates; it runs in float32"
    assert (note in done.stdout) is (not runs_natively("mixed_bfloat16")), done.stdout

    done = run_cli("export", "--model", str(run), "--format", "saved_model", "tflite",
                   "--quantize", "none", "int8", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{done.stdout[-3000:]}"
    assert "computes in mixed_bfloat16; its exports compute in float32" in done.stdout
    for name, least in [("saved_model/saved_model.pb", None), ("unet_fp32.tflite", 0.9999),
                        ("unet_int8.tflite", 0.95)]:  # fmt: skip
        assert (run / "export" / name).exists(), name
        if least is not None:
            report = (run / "export" / name).with_suffix(".json").read_text()
            assert json.loads(report)["extra"]["parity"]["pixel_agreement"] >= least, name


def _stderr_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_user_mistakes_end_with_one_line_and_exit_code_2(dataset, tmp_path):
    config = write_config(tmp_path / "config.yaml", "unet")
    run = tmp_path / "run"
    cases = [
        (["train", "--config", str(config), "--model-dir", str(run), "--set",
          "train.batch_size=eight"], r"--set train.batch_size=eight \(over .*config.yaml\): "
         r"train.batch_size: expected int"),
        (["train", "--config", str(config), "--model-dir", str(run), "--set",
          "model.name=unett"], r"config.yaml: model.name: Unknown model 'unett'"),
        (["train", "--config", str(tmp_path / "missing.yaml"), "--model-dir", str(run)],
         r"config file .*missing.yaml does not exist"),
        (["evaluate", "--checkpoint", str(tmp_path / "nothing")],
         r"no model at .*nothing"),
        (["predict", "--model", str(tmp_path), "--input", str(dataset), "--output",
          str(tmp_path / "p")], r"folder without best.keras or final.keras"),
    ]  # fmt: skip
    import re

    for args, pattern in cases:
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        line = _stderr_line(done)
        assert line.startswith(f"keras-seg {args[0]}: error: "), line
        assert re.search(pattern, line), line
        assert "Traceback" not in done.stderr
    assert not run.exists(), "nothing is written before the config is checked"


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("truncate", r"images/shape_003\.jpg: truncated or corrupt JPEG"),
        ("resize", r"masks/shape_003\.png is 64x48 but .*images/shape_003\.jpg is 64x64"),
        ("values", r"masks/shape_003\.png: \d+ pixels hold values that are not classes"),
        ("remove", r"masks/shape_003\.png does not exist"),
    ],
)
def test_bad_data_ends_training_with_one_line(dataset, tmp_path, damage, pattern):
    import re
    import shutil

    data = Path(shutil.copytree(dataset, tmp_path / "data"))
    image, mask = data / "images" / "shape_003.jpg", data / "masks" / "shape_003.png"
    if damage == "truncate":
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    elif damage == "resize":
        cv2.imwrite(str(mask), np.zeros((48, 64), np.uint8))
    elif damage == "values":
        values = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        values[:4, :4] = 9  # 5 classes: 9 is not one
        cv2.imwrite(str(mask), values)
    else:
        mask.unlink()
    config = write_config(tmp_path / "config.yaml", "unet")
    done = run_cli("train", "--config", str(config), "--data-dir", str(data),
                   "--model-dir", str(tmp_path / "run"), cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    line = _stderr_line(done)
    assert line.startswith("keras-seg train: error: folder: "), line
    assert re.search(pattern, line), line
    assert "terminate called" not in done.stderr and "Traceback" not in done.stderr


def test_help_is_quiet(tmp_path):
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0 and "train" in done.stdout
    assert done.stderr == ""


def test_models_command_answers_in_seconds(tmp_path):
    import time

    start = time.perf_counter()
    done = run_cli("models", "--json", str(tmp_path / "models.json"), cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
    rows = json.loads((tmp_path / "models.json").read_text())["models"]
    assert [r["model"] for r in rows] == keras_seg.list_models()
    assert all(r["params"] > 0 and r["gflops"] is None for r in rows)  # --flops counts them
    # It used to count GFLOPs by default (3.5 minutes); parameters alone take seconds.
    assert seconds < 90, f"keras-seg models took {seconds:.0f} s"
    # The columns line up whatever the names' lengths (pspnet's backbone is the longest).
    lines = done.stdout.splitlines()
    start = lines[0].index("params (M)")
    for row, line in zip(rows, lines[2:], strict=True):
        assert line.index(row["backbone"]) == lines[0].index("backbone"), line
        assert line[start : start + len("params (M)")].strip() == f"{row['params'] / 1e6:.2f}"
