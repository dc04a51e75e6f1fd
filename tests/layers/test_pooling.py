"""AdaptiveAveragePooling2D equals PyTorch's adaptive_avg_pool2d at any size."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg.layers import AdaptiveAveragePooling2D

SIZES = [(6, 6), (7, 9), (13, 17), (1, 1), (2, 5)]
BINS = [1, 2, 3, 6]


def torch_formula(x: np.ndarray, bins: int) -> np.ndarray:
    """PyTorch's bin boundaries: start = floor(i * H / bins), end = ceil((i + 1) * H / bins)."""
    _, h, w, _ = x.shape
    out = np.zeros((x.shape[0], bins, bins, x.shape[3]), np.float64)
    for i in range(bins):
        top, bottom = (i * h) // bins, -(-((i + 1) * h) // bins)
        for j in range(bins):
            left, right = (j * w) // bins, -(-((j + 1) * w) // bins)
            out[:, i, j] = x[:, top:bottom, left:right].mean(axis=(1, 2))
    return out


def random(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, h, w, 4)).astype("float32")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("bins", BINS)
def test_equals_the_pytorch_formula(size, bins):
    x = random(*size)
    ours = AdaptiveAveragePooling2D(bins)(x).numpy()
    np.testing.assert_allclose(ours, torch_formula(x, bins), rtol=1e-5, atol=1e-6)


def test_equals_torch_itself():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (pip install -e '.[reference]')")
    # In its own process: torch next to TensorFlow is not safe (see tests/weights).
    script = (
        "import sys, numpy as np, torch\n"
        "x = np.load(sys.argv[1])\n"
        "t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())\n"
        "out = {f'{b}': torch.nn.functional.adaptive_avg_pool2d(t, b).numpy().transpose(0, 2, 3, 1)"
        " for b in (1, 2, 3, 6)}\n"
        "np.savez(sys.argv[2], **out)\n"
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for h, w in [(7, 9), (13, 17), (6, 6)]:
            x = random(h, w, seed=h)
            np.save(Path(tmp) / "x.npy", x)
            subprocess.run(
                [sys.executable, "-c", script, str(Path(tmp) / "x.npy"), str(Path(tmp) / "y.npz")],
                check=True,
                timeout=300,
            )
            theirs = np.load(Path(tmp) / "y.npz")
            for bins in BINS:
                ours = AdaptiveAveragePooling2D(bins)(x).numpy()
                np.testing.assert_allclose(ours, theirs[str(bins)], rtol=1e-5, atol=1e-6)


def _model(bins: int) -> keras.Model:
    inputs = keras.Input((None, None, 4))
    return keras.Model(inputs, AdaptiveAveragePooling2D(bins, name="pool")(inputs))


def test_any_size_in_one_graph_and_round_trip(tmp_path):
    model = _model(3)
    assert model.output.shape == (None, 3, 3, 4)
    fn = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 4))])
    for size in [(7, 9), (13, 17), (3, 3)]:
        x = random(*size)
        np.testing.assert_allclose(fn(x).numpy(), torch_formula(x, 3), rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = random(13, 17)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy())
    with pytest.raises(ValueError, match="bins must be a positive integer, got 0"):
        AdaptiveAveragePooling2D(0)


def test_tflite_builtin_ops_only():
    from ai_edge_litert.interpreter import Interpreter

    model = _model(6)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(model).get_concrete_function(tf.TensorSpec((1, 13, 17, 4)))], model
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    x = random(13, 17)[:1]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, torch_formula(x, 6), rtol=1e-5, atol=1e-6)


def test_onnx_with_dynamic_height_and_width(tmp_path):
    tf2onnx = pytest.importorskip("tf2onnx", reason="extra 'onnx' not installed")
    ort = pytest.importorskip("onnxruntime", reason="extra 'onnx' not installed")
    model = _model(6)
    spec = [tf.TensorSpec((None, None, None, 4), name="x")]
    fn = tf.function(lambda x: model(x), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, output_path=str(tmp_path / "p.onnx"))
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    for size in [(7, 9), (13, 17)]:
        x = random(*size)
        (out,) = session.run(None, {"x": x})
        np.testing.assert_allclose(out, torch_formula(x, 6), rtol=1e-5, atol=1e-6)
