"""`keras-seg benchmark memory`: which forward tensors a training step keeps for its gradient,
on both sides, and what the process pays. The CLI runs as users run it, in a new process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from keras_seg.benchmarks.memory import kept_for_gradient
from keras_seg.benchmarks.memory import live_at_peak
from tests.helpers import onednn_in_training

REPO = Path(__file__).resolve().parents[2]


def test_kept_for_gradient_counts_what_the_backward_pass_reads():
    w = tf.Variable(tf.ones((8, 16)))

    def step(x):
        with tf.GradientTape() as tape:
            with tf.name_scope("net"):
                hidden = tf.nn.relu(tf.matmul(x, w))  # ReluGrad reads the output: kept
                out = tf.reduce_sum(tf.square(hidden) + tf.sin(x[:, :1]))  # Square reads hidden
        return tape.gradient(out, w)

    graph = tf.function(step).get_concrete_function(tf.TensorSpec([4, 8])).graph
    kept = kept_for_gradient(graph, ["net/"])
    # relu's output (4x16 float32), read by ReluGrad and by Square's gradient: once. The input
    # x and the variable are not the forward pass's own tensors; sin's branch has no gradient
    # to w, so nothing of it is read.
    assert kept["kept_by_kind_mib"] == {"Relu": 4 * 16 * 4 / 2**20}
    assert kept["kept_tensors"] == 1 and kept["unsized_tensors"] == []
    assert kept_for_gradient(graph, ["elsewhere/"])["kept_tensors"] == 0


def test_live_at_peak_replays_the_allocators_events():
    def event(kind, addr, mib, in_use, op="", region="output"):
        return {"event": kind, "addr": addr, "bytes": mib * 2**20, "in_use": in_use * 2**20,
                "tf_op": op, "region": region}  # fmt: skip

    events = [
        event("alloc", 1, 8, 108, "net_1/conv_1/convolution"),
        event("alloc", 2, 3, 111, "SGD/Mul_12"),
        event("alloc", 3, 72, 183, "gradient_tape/net_1/conv_1/Conv2DBackpropFilter", "temp"),
        event("alloc", 4, 16, 199, "depthwise_2/SpaceToBatchND"),  # a custom gradient's
        event("free", 3, 72, 127),
        event("alloc", 5, 50, 177, "net_1/conv_2/convolution"),  # less than the peak: ignored
    ]
    live = live_at_peak(events, "net", "sgd")
    assert live["live_at_peak_by_kind_mib"] == {
        "backward temp Conv2DBackpropFilter": 72,
        "other output SpaceToBatchND": 16,
        "forward output convolution": 8,
        "optimizer output Mul": 3,
    }
    assert live["live_at_peak_mib"] == 99 and live["allocator_in_use_at_peak_mib"] == 199


@pytest.mark.slow
def test_the_command_compares_both_libraries(tmp_path):
    out, md = tmp_path / "memory.json", tmp_path / "memory.md"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "keras_seg", "benchmark", "memory", "--small"]
    command += ["--rows", "unet_resnet34", "--size", "64", "--batch", "1", "--steps", "1"]
    command += ["--output", str(out), "--markdown", str(md)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "memory" and report["settings"]["small"] is True
    assert report["versions"]["smp_torch"] and report["versions"]["tensorflow"]
    (row,) = report["results"]
    ours, theirs = row["keras_seg"], row["smp"]
    for side in (ours, theirs):
        assert side["kept_for_gradient_mib"] > 0.5  # activations of a 64x64 U-Net
        assert sum(side["kept_by_kind_mib"].values()) == pytest.approx(
            side["kept_for_gradient_mib"]
        )
        assert side["rss_after_steps_mib"] > side["rss_built_mib"] > 100
    assert {"Conv2D", "Relu"} <= set(ours["kept_by_kind_mib"])
    assert {"ConvolutionBackward0", "ReluBackward0"} <= set(theirs["kept_by_kind_mib"])
    # The BFC allocator was on in keras_seg's worker: its peak covers the step's tensors.
    assert ours["allocator_step_peak_mib"] > ours["kept_for_gradient_mib"]
    assert row["kept_ratio"] == pytest.approx(
        ours["kept_for_gradient_mib"] / theirs["kept_for_gradient_mib"]
    )
    # The profiled step: forward outputs and the backward pass's own allocations at its peak.
    kinds = ours["live_at_peak_by_kind_mib"]
    assert any(k.startswith("forward output") for k in kinds), kinds
    assert any(k.startswith("backward ") for k in kinds), kinds
    assert 0 < ours["live_at_peak_mib"] <= ours["allocator_in_use_at_peak_mib"] + 1
    if (training := onednn_in_training()) is not None:  # as `keras-seg train` would
        assert ours["onednn"] is training
    assert "U-Net ResNet-34 (small)" in md.read_text()
    assert "allocated at TensorFlow's allocator peak" in md.read_text()
    assert "kept for the gradient" in done.stdout


def test_bad_options_get_one_line():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "keras_seg", "benchmark", "memory", "--steps", "0"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "--steps and --batch take 1 or more" in done.stderr
    assert "Traceback" not in done.stderr
