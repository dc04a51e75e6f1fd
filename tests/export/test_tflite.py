"""TFLite: every quantization agrees with Keras on a trained model, every architecture converts
with builtin operators only, and the file takes raw pixels."""

from __future__ import annotations

import numpy as np
import pytest

import keras_seg
import keras_seg.export
from keras_seg.data import synthetic
from keras_seg.export import ExportMetadata
from keras_seg.export import TFLiteModel
from keras_seg.export.tflite_export import convert
from keras_seg.export.verify import keras_predict
from keras_seg.export.verify import to_uint8
from tests.export.conftest import SIZE
from tests.helpers import random_images
from tests.helpers import small_model

# quantize -> least share of pixels whose class must agree with Keras on held-out images.
AGREEMENT = {None: 0.999, "fp16": 0.99, "dynamic": 0.98, "int8": 0.95}
MAX_MIOU_DROP = 0.02


def _builtin_only(ops: list[str]) -> bool:
    return bool(ops) and not any(op.startswith("CUSTOM") for op in ops) and "DELEGATE" not in ops


@pytest.mark.parametrize("quantize", list(AGREEMENT), ids=lambda q: q or "fp32")
def test_trained_model_parity_per_quantization(quantize, trained, tmp_path):
    calibration = synthetic.make_dataset(32, size=SIZE, seed=2024)[0]
    path = keras_seg.export.tflite(
        trained.model,
        tmp_path / "unet.tflite",
        quantize,
        calibration if quantize == "int8" else None,
        input_size=(SIZE, SIZE),
        class_names=synthetic.CLASS_NAMES,
        palette=synthetic.PALETTE,
    )
    report = keras_seg.export.verify(trained.model, path, trained.x_val, trained.y_val)
    assert report.keras_miou > 0.6, f"the fixture model is not trained enough: {report}"
    assert report.pixel_agreement >= AGREEMENT[quantize], str(report)
    assert report.keras_miou - report.export_miou <= MAX_MIOU_DROP, str(report)
    assert _builtin_only(keras_seg.export.op_names(path))

    model_file = TFLiteModel(path)
    assert model_file.input["dtype"] == np.uint8
    assert list(model_file.input["shape"]) == [1, SIZE, SIZE, 3]
    if quantize == "int8":
        assert model_file.input["quantization"] == (1.0, 0)  # raw pixels, no rescaling
    outputs = model_file.runner.get_output_details()
    assert outputs["class_map"]["dtype"] == np.int32
    assert list(outputs["probabilities"]["shape"]) == [1, SIZE, SIZE, len(synthetic.CLASS_NAMES)]
    assert (tmp_path / "labels.txt").read_text().splitlines() == list(synthetic.CLASS_NAMES)
    meta = ExportMetadata.read(tmp_path / "unet.json")
    assert meta.palette == synthetic.PALETTE.tolist()
    assert meta.extra["quantize"] == quantize


@pytest.mark.slow
@pytest.mark.parametrize("name", keras_seg.list_models())
def test_every_architecture_converts_with_builtin_ops(name):
    model = small_model(name, num_classes=3)
    images = to_uint8(random_images(3, 64, 64))
    fp32 = convert(model, input_size=64)
    int8 = convert(model, "int8", images, input_size=64)
    assert _builtin_only(keras_seg.export.op_names(fp32))
    assert _builtin_only(keras_seg.export.op_names(int8))
    ours = TFLiteModel(fp32).predict(images)
    ref = keras_predict(model, images)
    np.testing.assert_allclose(ours["probabilities"], ref["probabilities"], atol=1e-4)
    assert TFLiteModel(int8).predict(images[:1])["class_map"].shape == (1, 64, 64)


def test_float32_and_int8_inputs(tmp_path):
    model = small_model("unet", num_classes=3)
    images = to_uint8(random_images(2, 32, 48))
    path = keras_seg.export.tflite(
        model, tmp_path / "f.tflite", input_size=(32, 48), input_dtype="float32"
    )
    runner = TFLiteModel(path)
    assert runner.input["dtype"] == np.float32 and runner.input_size == (32, 48)
    np.testing.assert_allclose(
        runner.predict(images)["probabilities"],
        keras_predict(model, images)["probabilities"],
        atol=1e-4,
    )
    int8_in = TFLiteModel(convert(model, "int8", images, (32, 48), input_dtype="int8"))
    assert int8_in.input["dtype"] == np.int8 and int8_in.input["quantization"] == (1.0, -128)


def test_a_model_xnnpack_cannot_prepare_runs_on_the_builtin_kernels(tmp_path, monkeypatch):
    # XNNPACK's kernels differ per CPU: an AVX2-only EPYC refused a trained int8 SegNet.
    from ai_edge_litert import interpreter as litert

    model = small_model("unet", num_classes=3)
    images = to_uint8(random_images(2, 32, 32))
    path = keras_seg.export.tflite(model, tmp_path / "m.tflite", input_size=32)
    with_xnnpack = TFLiteModel(path)
    assert with_xnnpack.interpreter.xnnpack_error is None

    class RefusingXNNPACK(litert.Interpreter):
        def __init__(self, *args, **kwargs):
            self.delegates = "experimental_op_resolver_type" not in kwargs
            super().__init__(*args, **kwargs)

        def allocate_tensors(self):
            if self.delegates:
                raise RuntimeError("failed to create XNNPACK runtimeNode number 7 (...)")
            return super().allocate_tensors()

    monkeypatch.setattr(litert, "Interpreter", RefusingXNNPACK)
    builtin = TFLiteModel(path)
    assert "XNNPACK" in builtin.interpreter.xnnpack_error
    np.testing.assert_allclose(
        builtin.predict(images)["probabilities"],
        with_xnnpack.predict(images)["probabilities"],
        atol=1e-5,
    )


def test_predict_checks_the_fixed_size(tmp_path):
    path = keras_seg.export.tflite(small_model("unet"), tmp_path / "m.tflite", input_size=32)
    with pytest.raises(ValueError, match=r"\[N, 32, 32, C\].*\(1, 40, 32, 3\)"):
        TFLiteModel(path).predict(np.zeros((1, 40, 32, 3), np.uint8))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"quantize": "int4"}, ValueError, r"quantize must be one of .*'int4'"),
        ({"quantize": "int8"}, ValueError, "needs representative_data"),
        ({"input_dtype": "int8"}, ValueError, "needs quantize='int8'"),
        ({"input_dtype": "float16"}, ValueError, "input_dtype must be one of"),
        ({"input_size": (0, 8)}, ValueError, "input_size must be"),
        (
            {"quantize": "int8", "representative_data": np.zeros((2, 8, 8, 4))},
            ValueError,
            r"\[H, W, 3\].*\(1, 8, 8, 4\)",
        ),
    ],
)
def test_bad_options_are_rejected(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        keras_seg.export.tflite(small_model("unet"), tmp_path / "m.tflite", **kwargs)


def test_path_must_end_with_tflite(tmp_path):
    with pytest.raises(ValueError, match=r"must end with \.tflite"):
        keras_seg.export.tflite(small_model("unet"), tmp_path / "m.bin")


def test_op_names_name_custom_ops_from_the_flatbuffer():
    import keras
    import tensorflow as tf

    from keras_seg.export.tflite_export import non_builtin_ops
    from keras_seg.export.tflite_export import op_names
    from keras_seg.export.tflite_export import operators

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 2], tf.float32)])
    def pool(x):
        return tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")[1]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([pool.get_concrete_function()])
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    flex = converter.convert()
    assert non_builtin_ops(flex) == ["CUSTOM:FlexMaxPoolWithArgmax"], op_names(flex)

    inputs = keras.Input((8, 8, 2))
    builtin = tf.lite.TFLiteConverter.from_keras_model(
        keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    ).convert()
    # the file's operators, not the interpreter's (XNNPACK takes the conv: DELEGATE)
    assert op_names(builtin) == ["CONV_2D"] and non_builtin_ops(builtin) == []
    assert operators(builtin) == [("CONV_2D", "FLOAT32")]
