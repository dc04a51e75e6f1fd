"""Reference-parity cases, shared by the PyTorch side (`reference.py`, run in its own process)
and the Keras side (`test_parity.py`). Plain data: importing this module imports neither
framework.

Each case: the reference constructor (`library`, `factory`, `kwargs`), how keras_seg builds the
counterpart from the saved checkpoint (`backbone` for an encoder, `model` for a whole model),
what to compare ("pyramid": every level P1..P5; "logits") and how the input is padded on the
PyTorch side, as keras_seg pads inside the model (SMP needs divisible sizes): to a multiple
`pad`, bottom/right, with black pixels (U-Net) or, `pad_normalised`, with zeros after the
normalisation, i.e. the mean pixel (DeepLab, as DeepLab's own preprocessing pads).
"""

from __future__ import annotations

# Two sizes per case: one a multiple of 32, one not (a case may choose its own).
SIZES = ((64, 64), (70, 90))
# torchvision's ImageNet statistics in 0..255 pixel units ("torch" normalisation).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
# Max |difference| of outputs, relative to their max |value| (float32).
TOLERANCE = 1e-4

CASES: dict[str, dict] = {}


def _case(
    name,
    library,
    factory,
    compare,
    keras,
    pad=1,
    kwargs=None,
    save="pth",
    drop=(),
    pad_normalised=False,
    sizes=SIZES,
):
    CASES[name] = {
        "sizes": [list(size) for size in sizes],
        "pad_normalised": pad_normalised,
        "library": library,
        "factory": factory,
        "kwargs": kwargs or {},
        "compare": compare,
        "keras": keras,
        "pad": pad,
        "save": save,
        "drop": list(drop),
    }


for _depth in (18, 34, 50, 101):
    _bb = f"resnet{_depth}" + ("_torchvision" if _depth >= 50 else "")
    _case(
        f"torchvision_resnet{_depth}",
        "torchvision",
        f"resnet{_depth}",
        "pyramid",
        {"backbone": _bb},
    )
    _case(
        f"timm_resnet{_depth}",
        "timm",
        f"resnet{_depth}",
        "pyramid",
        {"backbone": _bb},
        save="safetensors",
    )
# VGG's 100M-parameter classifier is dropped from the saved file to keep the test light;
# the loader ignores classifier keys either way.
for _bn in (False, True):
    _suffix = "_bn" if _bn else ""
    _case(
        f"torchvision_vgg16{_suffix}",
        "torchvision",
        f"vgg16{_suffix}",
        "pyramid",
        {"backbone": "vgg16_torchvision"},
        drop=("classifier.",),
    )
    _case(
        f"timm_vgg16{_suffix}",
        "timm",
        f"vgg16{_suffix}",
        "pyramid",
        {"backbone": "vgg16_torchvision"},
        drop=("pre_logits.", "head."),
        save="safetensors",
    )

for _encoder in ("resnet34", "resnet50"):
    _case(
        f"smp_unet_{_encoder}",
        "smp",
        "Unet",
        "logits",
        {"model": "unet"},
        pad=32,
        kwargs={"encoder_name": _encoder, "classes": 5},
        save="hub",
    )
    _case(
        f"smp_deeplabv3plus_{_encoder}",
        "smp",
        "DeepLabV3Plus",
        "logits",
        {"model": "deeplabv3plus"},
        pad=16,
        pad_normalised=True,
        kwargs={"encoder_name": _encoder, "classes": 5},
    )
    _case(
        f"smp_deeplabv3_{_encoder}",
        "smp",
        "DeepLabV3",
        "logits",
        {"model": "deeplabv3"},
        pad=8,
        pad_normalised=True,
        kwargs={"encoder_name": _encoder, "classes": 5},
    )

_case(
    "torchvision_mobilenet_v2",
    "torchvision",
    "mobilenet_v2",
    "pyramid",
    {"backbone": "mobilenet_v2_torchvision"},
)
_case(
    "timm_mobilenetv2_100",
    "timm",
    "mobilenetv2_100",
    "pyramid",
    {"backbone": "mobilenet_v2_torchvision"},
    save="safetensors",
)
_case(
    "smp_unet_mobilenet_v2",
    "smp",
    "Unet",
    "logits",
    {"model": "unet"},
    pad=32,
    kwargs={"encoder_name": "mobilenet_v2", "classes": 5},
)
for _factory, _model, _pad in (
    ("DeepLabV3Plus", "deeplabv3plus", 16),
    ("DeepLabV3", "deeplabv3", 8),
):
    _case(
        f"smp_{_model}_mobilenet_v2",
        "smp",
        _factory,
        "logits",
        {"model": _model},
        pad=_pad,
        pad_normalised=True,
        kwargs={"encoder_name": "mobilenet_v2", "classes": 5},
    )

# SMP's U-Net on VGG: the encoder's last feature at each stride and a centre block.
for _encoder in ("vgg16", "vgg16_bn"):
    _case(
        f"smp_unet_{_encoder}",
        "smp",
        "Unet",
        "logits",
        {"model": "unet"},
        pad=32,
        kwargs={"encoder_name": _encoder, "classes": 5},
    )

# Hugging Face transformers SegFormer: the B0 configuration (SegformerConfig's defaults), saved
# with save_pretrained (config.json + model.safetensors, the hub's keys). No padding on either
# side: the patch embeddings floor, so 70x90 runs as it is.
_case(
    "transformers_segformer_b0",
    "transformers",
    "SegformerForSemanticSegmentation",
    "logits",
    {"model": "segformer"},
    kwargs={"num_labels": 5},
    save="hub",
)
# The MiT-B0 encoder of an ImageNet classifier (as nvidia/mit-b0): hidden states vs P2..P5.
_case(
    "transformers_mit_b0",
    "transformers",
    "SegformerForImageClassification",
    "pyramid",
    {"backbone": "mit_b0"},
    kwargs={"num_labels": 10},
    save="hub",
)
# The same, saved as transformers 5's own state dict (keys `segformer.stages.*`), a lone file.
_case(
    "transformers_segformer_b0_state_dict",
    "transformers",
    "SegformerForSemanticSegmentation",
    "logits",
    {"model": "segformer"},
    kwargs={"num_labels": 5},
    save="safetensors",
)

# timm's HRNet (random weights; its classification head is dropped from the file, the loader
# ignores it either way). timm adds its branches with nearest upsampling by a fixed factor, so
# it runs only where every stride's size doubles to the next finer one: 62x94 (not a multiple
# of 32) does, 70x90 does not.
for _width in ("18_small", "18"):
    _case(
        f"timm_hrnet_w{_width}",
        "timm",
        f"hrnet_w{_width}",
        "pyramid",
        {"backbone": f"hrnetv2_w{_width}"},
        drop=("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."),
        save="safetensors",
        sizes=((64, 64), (62, 94)),
    )

# timm's ResNet-50-C: the deep 3x3 stem (mmsegmentation's ResNetV1c), backbone option
# stem="deep".
_case(
    "timm_resnet50c",
    "timm",
    "resnet50c",
    "pyramid",
    {"backbone": "resnet50_torchvision"},
    drop=("fc.",),
    save="safetensors",
)
