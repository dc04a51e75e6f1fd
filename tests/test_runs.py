"""`keras_seg.runs`: loading trained runs, the one source of class names, config checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from keras_seg import runs
from keras_seg.config import load_config
from keras_seg.config import save_config
from keras_seg.data import synthetic
from tests.helpers import small_model
from tests.training.common import TINY
from tests.training.common import cli_env
from tests.training.common import tiny_config


def _run_folder(tmp_path, cfg=None, num_classes=5):
    folder = tmp_path / "run"
    folder.mkdir()
    small_model("unet", num_classes=num_classes).save(folder / "best.keras")
    if cfg is not None:
        save_config(cfg, folder / "config.yaml")
    return folder


def test_load_run_reads_the_config_and_its_data_sets_class_names(tmp_path):
    _, cfg = tiny_config(tmp_path)
    run = runs.load_run(_run_folder(tmp_path, cfg))
    assert run.config == cfg and run.name == "unet" and run.run_dir == tmp_path / "run"
    assert run.model_path.name == "best.keras"
    assert run.classes.class_names == tuple(synthetic.CLASS_NAMES)
    np.testing.assert_array_equal(run.classes.palette, synthetic.PALETTE)
    assert run.classes.data_name == "synthetic" and run.classes.ignore_label == 255


def test_a_bare_keras_file_gets_generic_names(tmp_path):
    small_model("unet", num_classes=3).save(tmp_path / "m.keras")
    run = runs.load_run(tmp_path / "m.keras")
    assert run.config is None and run.run_dir is None
    assert run.classes.class_names == ("class_0", "class_1", "class_2")


def test_unreadable_or_mismatched_class_names_fall_back_with_a_warning(tmp_path):
    values = {**TINY, "model": {**TINY["model"], "num_classes": 3}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    cfg = load_config(path)
    with pytest.warns(UserWarning, match="says 3 classes but .*best.keras has 5"):
        run = runs.load_run(_run_folder(tmp_path, cfg))
    assert run.classes.class_names[0] == "class_0"

    folder_cfg = yaml.safe_load(path.read_text())
    folder_cfg["model"]["num_classes"] = None
    folder_cfg["data"] = {"name": "folder", "data_dir": str(tmp_path / "not_here")}
    path.write_text(yaml.safe_dump(folder_cfg))
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "run" / "best.keras").rename(other / "best.keras")
    (other / "config.yaml").write_text(path.read_text())
    with pytest.warns(UserWarning, match="cannot read the class names of data set 'folder'"):
        run = runs.load_run(other)
    assert run.classes.class_names == tuple(f"class_{i}" for i in range(5))


def test_class_info_of_a_folder_ignores_reader_options(tmp_path):
    (tmp_path / "classes.txt").write_text("membrane\ncell\n")
    values = {
        **TINY,
        "model": {**TINY["model"], "num_classes": None},
        "data": {
            "name": "folder",
            "data_dir": str(tmp_path),
            "options": {"image_dir": "image", "mask_dir": "label", "label_map": {0: 0, 255: 1}},
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(values))
    info = runs.class_info(load_config(path))
    assert info.class_names == ("membrane", "cell") and info.palette.shape == (2, 3)


def test_find_model_file_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder without best.keras or final.keras"):
        runs.find_model_file(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model at .*x.keras"):
        runs.find_model_file(tmp_path / "x.keras")
    (tmp_path / "m.h5").write_text("")
    with pytest.raises(ValueError, match="m.h5 is not a .keras file"):
        runs.find_model_file(tmp_path / "m.h5")
    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot load the Keras model .*broken.keras"):
        runs.load_model(tmp_path / "broken.keras")


def test_plain_keras_loads_every_saved_model_in_a_fresh_process(tmp_path):
    """`import keras_seg` is all a new interpreter needs to load any zoo model's file."""
    import keras_seg

    names = keras_seg.list_models()
    for name in names:
        small_model(name, num_classes=3).save(tmp_path / f"{name}.keras")
    script = (
        "import keras_seg  # first: it keeps TensorFlow's start-up lines quiet\n"
        "import sys, numpy as np, keras\n"
        "for name in sys.argv[1:]:\n"
        "    m = keras.saving.load_model(f'{name}.keras')\n"
        "    out = m(np.zeros((1, 40, 52, 3), 'float32'))\n"
        "    assert tuple(out.shape) == (1, 40, 52, 3), (name, out.shape)\n"
        "print('loaded', len(sys.argv) - 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *names],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"loaded {len(names)}"
    assert done.stderr == "", "importing keras_seg prints nothing"
