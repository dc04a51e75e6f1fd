"""Hugging Face transformers SegFormer checkpoints: whole models and MiT encoders.

`nvidia/segformer-*` (`SegformerForSemanticSegmentation`) hold `segformer.encoder.*` (the MiT
encoder) and `decode_head.*` (the all-MLP decoder); `nvidia/mit-b*`
(`SegformerForImageClassification`) hold `segformer.encoder.*` and an ImageNet `classifier.*`.
The keys are those that `save_pretrained` writes (transformers 4 and 5 alike); a state dict of
transformers 5's modules (`segformer.stages.*`, `torch.save(model.state_dict())`) is renamed to
them first (`legacy_keys`). Which MiT it is
shows in the tensors (hidden sizes from the patch embeddings, depths from the block indexes);
the attention heads, which the weights can't show, come from `config.json` (MiT's (1, 2, 5, 8)
without one). keras_seg's layer names are those of `backbones/mit.py` and `models/segformer.py`.
"""

from __future__ import annotations

import re
from typing import Any

import keras

from keras_seg.weights.assign import KeyMap
from keras_seg.weights.assign import weighted_layers
from keras_seg.weights.checkpoint import Checkpoint
from keras_seg.weights.checkpoint import WeightsError

ENCODER = "segformer.encoder."
DECODER = "decode_head."
HEAD = f"{DECODER}classifier"
# Keys of an ImageNet classifier checkpoint that the backbone stops before.
HEAD_PREFIXES = ("classifier.", DECODER)
# keras_seg backbone -> (hidden sizes, depths); the same table as backbones/mit.py, kept here
# so that reading a checkpoint imports no model code.
_VARIANTS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}
_HEADS = (1, 2, 5, 8)
_BLOCK = re.compile(re.escape(ENCODER) + r"block\.(\d+)\.(\d+)\.")
# keras_seg block layer suffix -> transformers module under `block.{stage}.{block}.`
_BLOCK_MODULES = {
    "norm1": "layer_norm_1",
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "sr": "attention.self.sr",
    "sr_norm": "attention.self.layer_norm",
    "attn_out": "attention.output.dense",
    "norm2": "layer_norm_2",
    "fc1": "mlp.dense1",
    "dwconv": "mlp.dwconv.dwconv",
    "fc2": "mlp.dense2",
}


# transformers 5's module names -> the saved (legacy) ones, applied in order.
_RENAMES = (
    (r"^segformer\.stages\.(\d+)\.patch_embeddings\.", r"segformer.encoder.patch_embeddings.\1."),
    (r"^segformer\.stages\.(\d+)\.blocks\.(\d+)\.", r"segformer.encoder.block.\1.\2."),
    (r"^segformer\.stages\.(\d+)\.layer_norm\.", r"segformer.encoder.layer_norm.\1."),
    (r"\.layernorm_before\.", ".layer_norm_1."),
    (r"\.layernorm_after\.", ".layer_norm_2."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attention.self.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attention.self.layer_norm."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"^decode_head\.linear_projections\.", "decode_head.linear_c."),
)


def is_transformers(keys: set[str]) -> bool:
    return any(
        k in keys
        for k in (
            f"{ENCODER}patch_embeddings.0.proj.weight",
            "segformer.stages.0.patch_embeddings.proj.weight",
        )
    )


def legacy_keys(tensors: dict) -> dict:
    """`tensors` with transformers 5's module names turned into the saved ones (unchanged
    when they are already)."""
    if not any(k.startswith("segformer.stages.") for k in tensors):
        return tensors
    renamed = {}
    for key, value in tensors.items():
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def _architecture(checkpoint: Checkpoint) -> tuple[tuple[int, ...], tuple[int, ...]]:
    tensors = checkpoint.tensors
    sizes = []
    for stage in range(4):
        key = f"{ENCODER}patch_embeddings.{stage}.proj.weight"
        if key not in tensors:
            raise WeightsError(
                f"{checkpoint.source}: a SegFormer checkpoint with {stage} stages; keras_seg's "
                "MiT has 4"
            )
        sizes.append(int(tensors[key].shape[0]))
    blocks: dict[int, set[int]] = {}
    for key in tensors:
        if m := _BLOCK.match(key):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    depths = tuple(len(blocks.get(stage, ())) for stage in range(4))
    return tuple(sizes), depths


def layout(checkpoint: Checkpoint):
    """The Layout of a transformers SegFormer / MiT checkpoint.

    Raises:
        WeightsError: a configuration keras_seg's MiT can't build (other patch sizes,
            strides, sequence-reduction or MLP ratios).
    """
    from keras_seg.weights.formats import Layout

    checkpoint.tensors = legacy_keys(checkpoint.tensors)
    tensors, source, config = checkpoint.tensors, checkpoint.source, checkpoint.config
    for key, expected in (
        ("patch_sizes", [7, 3, 3, 3]),
        ("strides", [4, 2, 2, 2]),
        ("sr_ratios", [8, 4, 2, 1]),
        ("mlp_ratios", [4, 4, 4, 4]),
        ("num_channels", 3),
        ("hidden_act", "gelu"),
    ):
        if key in config and config[key] != expected:
            raise WeightsError(
                f"{source}: config.json has {key}={config[key]!r}; keras_seg's MiT has {expected!r}"
            )
    sizes, depths = _architecture(checkpoint)
    heads = tuple(config.get("num_attention_heads", _HEADS))
    backbone = next((name for name, v in _VARIANTS.items() if v == (sizes, depths)), None)
    backbone_kwargs: dict[str, Any] = {}
    if backbone is None:  # a non-standard MiT: mit_b0's code with its own sizes
        backbone = "mit_b0"
        backbone_kwargs = {"hidden_sizes": sizes, "depths": depths}
    if heads != _HEADS:
        backbone_kwargs["num_heads"] = heads
    name = backbone.replace("_", "-")
    kwargs = {
        "hidden_sizes": list(sizes),
        "depths": list(depths),
        "num_attention_heads": list(heads),
    }
    if f"{HEAD}.weight" not in tensors:
        return Layout(
            format="transformers",
            backbone=backbone,
            backbone_kwargs=backbone_kwargs,
            description=f"transformers {name} encoder",
            reference={
                "library": "transformers",
                "factory": "SegformerForImageClassification",
                "kwargs": kwargs,
            },
        )
    num_classes = int(tensors[f"{HEAD}.weight"].shape[0])
    decoder_filters = int(tensors[f"{DECODER}linear_fuse.weight"].shape[0])
    return Layout(
        format="transformers",
        backbone=backbone,
        backbone_kwargs=backbone_kwargs,
        model="segformer",
        fixed={"decoder_filters": decoder_filters},
        defaults={"dropout": float(config.get("classifier_dropout_prob", 0.1))},
        num_classes=num_classes,
        description=f"transformers SegFormer on {name}, {num_classes} classes",
        model_map=lambda m: model_map(m, backbone),
        reference={
            "library": "transformers",
            "factory": "SegformerForSemanticSegmentation",
            "kwargs": kwargs | {"decoder_hidden_size": decoder_filters, "num_labels": num_classes},
        },
    )


def mit_map(encoder: keras.Model, prefix: str = "", weights_format: str = "") -> KeyMap:
    """Key map of a MiT backbone: every weighted layer of `encoder` by its name."""
    key_map: KeyMap = {}
    pattern = re.compile(r"stage(\d)_block(\d+)_(\w+)$")
    for name in weighted_layers(encoder):
        stage = int(name[5]) - 1 if name.startswith("stage") else None
        if m := pattern.match(name):
            block = int(m.group(2)) - 1
            key_map[name] = f"{ENCODER}block.{stage}.{block}.{_BLOCK_MODULES[m.group(3)]}"
        elif name.endswith("_patch_embed"):
            key_map[name] = f"{ENCODER}patch_embeddings.{stage}.proj"
        elif name.endswith("_patch_norm"):
            key_map[name] = f"{ENCODER}patch_embeddings.{stage}.layer_norm"
        elif name.endswith("_norm") and stage is not None:
            key_map[name] = f"{ENCODER}layer_norm.{stage}"
        else:
            raise WeightsError(f"MiT layer {name!r} has no transformers counterpart")
    return key_map


def model_map(model: keras.Model, backbone: str) -> KeyMap:
    encoder = next(
        (m for m in model.layers if isinstance(m, keras.Model) and m.name == backbone), None
    )
    if encoder is None:
        raise WeightsError(f"model {model.name!r} has no {backbone!r} backbone to load into")
    return {
        **mit_map(encoder),
        **{f"decoder_linear{i + 1}": f"{DECODER}linear_c.{i}.proj" for i in range(4)},
        "decoder_fuse_conv": f"{DECODER}linear_fuse",
        "decoder_fuse_bn": f"{DECODER}batch_norm",
        "logits": HEAD,
    }
