"""SavedModel for TF Serving: what `saved_model_cli` and the model server would see.

The model server binary cannot be installed here, so the export is loaded in a fresh
process (tf_serving_emulator.py, without keras_seg) and fed the exact REST body that
`keras_seg.serving.rest_request` builds, base64-decoded as TF Serving does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keras_seg
import keras_seg.export
from keras_seg import serving
from keras_seg.data import synthetic
from keras_seg.export import ExportMetadata
from keras_seg.export.verify import keras_predict
from keras_seg.export.verify import to_uint8
from tests.helpers import random_images
from tests.helpers import small_model

EMULATOR = Path(__file__).with_name("tf_serving_emulator.py")
C = len(synthetic.CLASS_NAMES)
EXPECTED_SIGNATURES = {
    "serving_default": (
        {"images": ("DT_UINT8", "(-1, -1, -1, 3)")},
        {"class_map": ("DT_INT32", "(-1, -1, -1)"), "probabilities": ("DT_FLOAT", f"(-1, -1, -1, {C})")},
    ),
    "serving_bytes": (
        {"image_bytes": ("DT_STRING", "(-1)")},
        {
            "class_map": ("DT_INT32", "(-1, -1, -1)"),
            "probabilities": ("DT_FLOAT", f"(-1, -1, -1, {C})"),
            "height": ("DT_INT32", "(-1)"),
            "width": ("DT_INT32", "(-1)"),
        },
    ),
    "serving_bytes_class_map": (
        {"image_bytes": ("DT_STRING", "(-1)")},
        {
            "class_map": ("DT_INT32", "(-1, -1, -1)"),
            "height": ("DT_INT32", "(-1)"),
            "width": ("DT_INT32", "(-1)"),
        },
    ),
    "metadata": ({}, {"class_names": ("DT_STRING", f"({C})"), "palette": ("DT_UINT8", f"({C}, 3)")}),
}  # fmt: skip


def _saved_model_cli() -> list[str]:
    script = Path(sys.executable).with_name("saved_model_cli")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_saved_model_cli_lists_the_serving_signatures(saved_model_dir):
    shown = subprocess.run(
        [*_saved_model_cli(), "show", "--dir", str(saved_model_dir), "--all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)(?=signature_def\[|\Z)", shown, re.S))
    for name, (inputs, outputs) in EXPECTED_SIGNATURES.items():
        assert name in blocks, f"signature {name!r} missing; saved_model_cli shows {sorted(blocks)}"
        found = {"inputs": {}, "outputs": {}}
        for kind, key, dtype, shape in re.findall(
            r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (.+)", blocks[name]
        ):
            found[kind][key] = (dtype, shape.strip())
        assert found["inputs"] == inputs, name
        assert found["outputs"] == outputs, name
        assert "Method name is: tensorflow/serving/predict" in blocks[name]


@pytest.fixture(scope="module")
def served(saved_model_dir, request_images, tmp_path_factory) -> dict:
    """Responses of the export, loaded in a fresh process, to the REST bodies built here."""
    encoded, decoded = request_images
    requests = {
        "bytes": serving.rest_request(encoded),
        "class_map_only": serving.rest_request(encoded, "serving_bytes_class_map"),
        "not_an_image": serving.rest_request([encoded[0], b"<html>not an image</html>"]),
        "truncated_png": serving.rest_request([encoded[0][:200]]),
        "images": {
            "signature_name": "serving_default",
            "instances": [{"images": decoded[0].tolist()}],
        },
    }
    folder = tmp_path_factory.mktemp("served")
    (folder / "requests.json").write_text(json.dumps(requests))
    args = [str(saved_model_dir), str(folder / "requests.json"), str(folder / "responses.json")]
    subprocess.run([sys.executable, str(EMULATOR), *args], check=True, timeout=300)
    return json.loads((folder / "responses.json").read_text())


def test_fresh_process_answers_the_rest_request_like_keras(served, request_images, expected_maps):
    maps = serving.parse_rest_response(served["bytes"])
    for got, want, image in zip(maps, expected_maps, request_images[1], strict=True):
        assert got.shape == image.shape[:2]
        assert np.mean(got == want) >= 0.999
    predictions = served["bytes"]["predictions"]
    assert [(p["height"], p["width"]) for p in predictions] == [(64, 64), (45, 71), (70, 50)]
    probs = np.asarray(predictions[1]["probabilities"])
    assert probs.shape == (70, 71, C)
    np.testing.assert_allclose(probs[:45, :71].sum(-1), 1.0, atol=1e-5)


def test_mixed_sizes_are_padded_to_the_largest_with_class_minus_one(served):
    predictions = served["bytes"]["predictions"]
    for p in predictions:
        class_map = np.asarray(p["class_map"])
        assert class_map.shape == (70, 71)
        assert (class_map[: p["height"], : p["width"]] >= 0).all()
        assert (class_map[p["height"] :] == keras_seg.export.PAD_CLASS).all()
        assert (class_map[:, p["width"] :] == keras_seg.export.PAD_CLASS).all()
        assert np.all(np.asarray(p["probabilities"])[p["height"] :] == 0)


def test_class_map_only_signature_gives_the_same_maps(served):
    assert all("probabilities" not in p for p in served["class_map_only"]["predictions"])
    small = serving.parse_rest_response(served["class_map_only"])
    full = serving.parse_rest_response(served["bytes"])
    for a, b in zip(small, full, strict=True):
        np.testing.assert_array_equal(a, b)


def test_uint8_images_signature_matches_keras(served, expected_maps):
    got = np.asarray(served["images"]["predictions"][0]["class_map"])
    assert np.mean(got == expected_maps[0]) >= 0.999


def test_malformed_image_is_a_clean_invalid_argument_error(served):
    error = served["not_an_image"]
    assert error["error_type"] == "InvalidArgumentError"
    assert "image_bytes[1] is not a JPEG or PNG image" in error["error"]
    truncated = served["truncated_png"]
    assert truncated["error_type"] == "InvalidArgumentError"
    assert "PNG" in truncated["error"]
    with pytest.raises(RuntimeError, match=r"image_bytes\[1\] is not a JPEG or PNG"):
        serving.parse_rest_response(error)


def test_class_names_and_palette_travel_with_the_export(served, saved_model_dir):
    meta = served["_metadata"]
    assert meta["class_names"] == list(synthetic.CLASS_NAMES)
    assert meta["palette"] == synthetic.PALETTE.tolist()
    assert meta["keras_seg_imported"] is False  # the export stands alone
    extra = saved_model_dir / "assets.extra"
    assert (extra / "labels.txt").read_text().splitlines() == list(synthetic.CLASS_NAMES)
    stored = ExportMetadata.read(extra / "keras_seg.json")
    assert stored.palette == synthetic.PALETTE.tolist()
    assert stored.extra["signatures"]["serving_bytes"]["input"] == "image_bytes"


def test_tfserving_writes_name_version_layout(tmp_path):
    model = small_model("unet", num_classes=3)
    path = keras_seg.export.tfserving(model, tmp_path, name="seg", version=2)
    assert path == tmp_path / "seg" / "2"
    assert (path / "saved_model.pb").exists() and (path / "variables").is_dir()
    assert (path / "assets.extra" / "labels.txt").read_text() == "class_0\nclass_1\nclass_2\n"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        keras_seg.export.tfserving(model, tmp_path, name="seg", version=2)


@pytest.mark.parametrize("version", [0, -1, "1", True, 1.5])
def test_tfserving_rejects_bad_versions(version, tmp_path):
    with pytest.raises(ValueError, match="version must be a positive integer"):
        keras_seg.export.tfserving(small_model("unet"), tmp_path, name="seg", version=version)


def test_saved_model_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not a SavedModel"):
        keras_seg.export.saved_model(small_model("unet"), tmp_path)
    assert (tmp_path / "notes.txt").exists()


def test_wrong_number_of_class_names_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"2 class names .* 3 classes"):
        keras_seg.export.saved_model(small_model("unet"), tmp_path / "m", class_names=["a", "b"])


def test_fixed_size_model_takes_any_size(tmp_path):
    model = keras_seg.build("unet", num_classes=3, input_shape=(32, 32, 3), base_filters=4, depth=2)
    path = keras_seg.export.saved_model(model, tmp_path / "fixed")
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    x = random_images(1, 32, 32).astype(np.uint8)
    out = serve(images=tf.constant(x))
    np.testing.assert_array_equal(out["class_map"].numpy(), keras_predict(model, x)["class_map"])
    other = serve(images=tf.constant(random_images(2, 40, 24).astype(np.uint8)))
    assert other["class_map"].shape == (2, 40, 24)
    assert other["probabilities"].shape == (2, 40, 24, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", keras_seg.list_models())
def test_every_architecture_exports_a_saved_model_that_matches_keras(name, tmp_path):
    model = small_model(name, num_classes=3)
    signatures = tf.saved_model.load(str(keras_seg.export.saved_model(model, tmp_path))).signatures
    for height, width in [(64, 64), (45, 71)]:
        x = to_uint8(random_images(2, height, width, seed=height))
        out = signatures["serving_default"](images=tf.constant(x))
        ref = keras_predict(model, x)
        np.testing.assert_allclose(out["probabilities"].numpy(), ref["probabilities"], atol=1e-5)
        assert np.mean(out["class_map"].numpy() == ref["class_map"]) >= 0.999
    from_bytes = signatures["serving_bytes"](image_bytes=tf.constant([serving.encode_image(x[1])]))
    assert np.mean(from_bytes["class_map"].numpy()[0] == ref["class_map"][1]) >= 0.999
