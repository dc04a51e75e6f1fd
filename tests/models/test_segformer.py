"""SegFormer: parameter counts of B0..B5 equal transformers', decoder widths, errors, export.

The shared registry checks (tests/models/test_all_models.py) cover shapes, any input size,
serialization, gradients and mixed precision; parity of the logits with transformers is in
tests/weights (cases `transformers_*`).
"""

import numpy as np
import pytest

import keras_seg
import keras_seg.export
from keras_seg.data import synthetic

# Trainable parameters of transformers' SegformerForSemanticSegmentation with 150 classes,
# `sum(p.numel() for p in model.parameters())` on SegformerConfig(hidden_sizes, depths,
# decoder_hidden_size, num_labels=150) with transformers 5.24 (computed once in a torch
# process; the configs are those of nvidia/segformer-b{0..5}-finetuned-ade-512-512).
# Keras also counts BatchNorm's moving statistics (2 * decoder width), which torch keeps as
# buffers, so the trainable counts are compared.
REFERENCE_PARAMS = {
    "mit_b0": 3_752_694,
    "mit_b1": 13_715_798,
    "mit_b2": 27_461_974,
    "mit_b3": 47_337_814,
    "mit_b4": 64_108_374,
    "mit_b5": 84_708_694,
}


def _trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize(
    "backbone",
    [
        pytest.param(b, marks=[pytest.mark.slow] if b not in ("mit_b0", "mit_b1") else [])
        for b in REFERENCE_PARAMS
    ],
)
def test_parameter_count_equals_transformers(backbone):
    model = keras_seg.build("segformer", num_classes=150, backbone=backbone)
    assert _trainable(model) == REFERENCE_PARAMS[backbone]
    decoder = 256 if backbone in ("mit_b0", "mit_b1") else 768
    assert model.get_layer("decoder_fuse_conv").filters == decoder


def test_logits_at_input_size_without_padding():
    model = keras_seg.build(
        "segformer", num_classes=4, **keras_seg.get_spec("segformer").small_config
    )
    names = [layer.name for layer in model.layers]
    assert "pad_to_stride" not in names  # transformers doesn't pad either
    assert tuple(model(np.zeros((1, 70, 90, 3), "float32")).shape) == (1, 70, 90, 4)


def test_backbone_without_a_level_is_a_one_line_error():
    with pytest.raises(
        ValueError, match=r"^unet needs pyramid level\(s\) P1, which backbone 'mit_b0'"
    ):
        keras_seg.build("unet", num_classes=2, backbone="mit_b0")


@pytest.mark.parametrize("bad", [0, 2.5, True])
def test_bad_decoder_filters(bad):
    with pytest.raises(ValueError, match="decoder_filters must be a positive integer"):
        keras_seg.build("segformer", num_classes=2, decoder_filters=bad)


def test_exports_with_builtin_ops_and_passes_the_parity_gates(tmp_path):
    """SavedModel and float32 TFLite pass keras_seg's gates (0.999 of pixels), int8 its 0.95."""
    model = keras_seg.build(
        "segformer", num_classes=3, **keras_seg.get_spec("segformer").small_config
    )
    images = synthetic.make_dataset(8, size=64, seed=5)[0]
    keras_seg.export.saved_model(model, tmp_path / "saved", check_images=images[:4])
    for quantize in (None, "int8"):
        path = keras_seg.export.tflite(
            model,
            tmp_path / f"m_{quantize}.tflite",
            quantize,
            images if quantize else None,
            input_size=(64, 64),
            check_images=images[:4],
        )
        ops = keras_seg.export.op_names(path)
        assert {"BATCH_MATMUL", "SOFTMAX", "GELU", "RESIZE_BILINEAR"} <= set(ops)
        assert not any(op.startswith("CUSTOM") for op in ops), ops


def test_deeplab_on_mit_names_what_is_missing():
    from keras_seg.backbones import require_levels

    with pytest.raises(ValueError, match=r"deeplabv3plus needs pyramid level\(s\) P1"):
        require_levels("mit_b0", ("P1", "P2", "P5"), "deeplabv3plus")
    # MiT has P2 and P5, but no atrous output stride 16.
    with pytest.raises(ValueError, match=r"'mit_b0' supports output_stride in \(32,\), got 16"):
        keras_seg.build("deeplabv3plus", num_classes=2, backbone="mit_b0")
