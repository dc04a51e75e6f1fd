"""`tools/bench_bridge.py` on its keras_seg route (peers are not in CI), and its file harness."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg import export
from keras_seg.benchmarks import bridge
from keras_seg.benchmarks import bridge_routes
from keras_seg.benchmarks.tflite_harness import TFLiteFile
from keras_seg.benchmarks.tflite_harness import agreement

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_bridge.py"
# Without importing them: torchvision (via SMP) crashes in a process that has TensorFlow.
needs_torch = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "segmentation_models_pytorch")),
    reason="torch and segmentation_models_pytorch build the reference",
)


@needs_torch
def test_keras_seg_route_report(tmp_path):
    out, md, work = tmp_path / "bridge.json", tmp_path / "bridge.md", tmp_path / "work"
    argv = ["--quick", "--routes", "keras_seg", "--size", "64", "--threads", "1", "2"]
    argv += ["--output", str(out), "--markdown", str(md), "--workdir", str(work)]
    done = subprocess.run(
        [sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["benchmark"] == "bridge"
    assert report["machine"]["cpu_count"] >= 1 and report["versions"]["tensorflow"]
    assert report["settings"]["size"] == 64 and report["settings"]["repeats"] == 3
    results = report["results"]
    assert results["reference"]["params"] > 20_000_000  # U-Net ResNet-34
    assert "--routes keras_seg" in results["command"]
    routes = results["routes"]
    assert [(e["route"], e["variant"]) for e in routes] == [
        ("keras_seg", "fp32"),
        ("keras_seg", "int8"),
    ]
    for entry in routes:
        assert entry["succeeded"] and entry["error"] is None, entry
        assert entry["builtin_only"] and entry["non_builtin_ops"] == []
        assert entry["size_bytes"] == (work / entry["file"]).stat().st_size
        assert set(entry["latency_ms"]) == {"1", "2"}
        assert all(v > 0 for v in entry["latency_ms"].values())
        assert entry["latency_spread_ms"]["1"]["repeats"] == 3
        assert 0 <= entry["agreement"] <= 1 and entry["max_abs_logit_diff"] is None
        assert entry["input"].startswith("uint8") and "NHWC" in entry["input"]
        assert entry["keras_gate"]["kind"] in ("fp32", "int8")
        assert entry["reproduce"].startswith("python tools/bench_bridge.py --routes keras_seg")
    fp32, int8 = routes
    keras_model = fp32["keras_model_vs_pytorch"]
    assert keras_model["agreement"] > 0.999
    assert keras_model["max_abs_logit_diff"] < 1e-3 * keras_model["max_abs_logit"]
    assert fp32["keras_gate"]["passed"] and fp32["agreement"] > 0.999
    assert int8["size_bytes"] < fp32["size_bytes"] / 3
    assert fp32["float32_compute_ops"] > 40 and fp32["operator_counts"]["CONV_2D FLOAT32"] > 40
    assert int8["float32_compute_ops"] == 0 and int8["operator_counts"]["CONV_2D INT8"] > 40

    # The agreement is measured, not copied: recompute it from the files the run left.
    data = np.load(work / "reference.npz")
    for entry in routes:
        maps = export.TFLiteModel(work / entry["file"]).predict(data["images"])["class_map"]
        expected = np.mean(maps == data["logits"].argmax(-1))
        assert entry["agreement"] == pytest.approx(expected)

    table = md.read_text()
    assert "| keras_seg | fp32 | yes | yes |" in table and "| keras_seg | int8 |" in table
    assert results["command"] in table and "export gate (file vs Keras model)" in table

    # A rerun for timings reuses the reference and the files, and measures them again.
    stamps = {e["file"]: (work / e["file"]).stat().st_mtime_ns for e in routes}
    again = tmp_path / "again.json"
    argv = ["--quick", "--routes", "keras_seg", "--size", "64", "--threads", "1"]
    argv += ["--output", str(again), "--markdown", "", "--workdir", str(work), "--reuse"]
    done = subprocess.run(
        [sys.executable, str(TOOL), *argv], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rerun = json.loads(again.read_text())["results"]["routes"]
    assert {e["file"]: (work / e["file"]).stat().st_mtime_ns for e in rerun} == stamps
    assert [e["agreement"] for e in rerun] == [e["agreement"] for e in routes]
    assert all(set(e["latency_ms"]) == {"1"} for e in rerun)


def _nchw_logits_file(path: Path, num_classes: int) -> keras.Model:
    """A tiny float model as the PyTorch converters leave one: NCHW in, NCHW logits out."""
    inputs = keras.Input((3, 32, 32), batch_size=1)
    x = keras.layers.Permute((2, 3, 1))(inputs)
    x = keras.layers.Conv2D(num_classes, 3, padding="same")(x)
    model = keras.Model(inputs, keras.layers.Permute((3, 1, 2))(x))
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return model


def test_harness_reads_nchw_normalised_logits(tmp_path):
    path = tmp_path / "nchw.tflite"
    model = _nchw_logits_file(path, num_classes=4)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    normalised = (images - bridge.bridge_torch.MEAN) / bridge.bridge_torch.STD
    logits = np.asarray(model(normalised.transpose(0, 3, 1, 2).astype(np.float32)))
    data = {"images": images, "logits": logits.transpose(0, 2, 3, 1)}

    file = TFLiteFile(path, threads=1, normalised=True, num_classes=4)
    assert file.channels_first
    expected = "float32 [1x3x32x32] NCHW, ImageNet-normalised by the caller"
    assert file.describe_input() == expected
    result = agreement(file, data)
    assert result["agreement"] == 1.0
    assert result["max_abs_logit_diff"] < 1e-4 and result["max_abs_prob_diff"] < 1e-4

    # Fed raw pixels, the same file disagrees: the harness's normalisation is what matters.
    raw = agreement(TFLiteFile(path, threads=1, normalised=False, num_classes=4), data)
    assert raw["max_abs_logit_diff"] > 1


def test_log_error_line_and_bad_sizes():
    log = "INFO: start\n\x1b[31mERROR:\x1b[0m conversion failed\nTraceback...\nValueError: x\n"
    assert bridge_routes.log_error_line(log) == "ValueError: x"
    assert bridge_routes.log_error_line("just text\n\n") == "just text"
    with pytest.raises(SystemExit, match="multiple of 32 .SMP., got 48"):
        bridge.main(["--size", "48"])
