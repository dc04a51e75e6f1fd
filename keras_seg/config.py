"""Typed experiment configuration: dataclasses plus strict YAML loading and `--set` overrides.

A config file mirrors `Config`: top-level sections `model`, `data`, `train`, `eval` and
`export`. Loading is strict: an unknown key or a value of the wrong type raises
`ConfigError` naming the key and the file. Keys left out take the defaults below.

Example:
    >>> cfg = keras_seg.load_config("zoo_configs/unet_isbi2012.yaml", ["train.batch_size=2"])
    >>> cfg.train.batch_size
    2
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Literal

import yaml

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker")
#: TFLite quantizations ("none"/null is float32).
QUANTIZATIONS = ("fp16", "dynamic", "int8")


class ConfigError(ValueError):
    """A config file or override that does not match the schema."""


@dataclass
class ModelConfig:
    """Which network to build: the arguments of `keras_seg.build`.

    Attributes:
        name: registered model name (`keras_seg.list_models()`).
        backbone: backbone name, or null for the model's default.
        weights: null (random), "imagenet" (pretrained backbone), a `.weights.h5` path, or a
            PyTorch checkpoint (torchvision/timm backbone or segmentation_models.pytorch
            model: a `.pth`/`.safetensors` file, a Hugging Face folder or `hf://owner/repo`).
        weights_format: "torchvision", "timm", "smp" or "transformers" to name the checkpoint's layout.
        weights_partial: load what fits from the checkpoint (e.g. a new class count).
        num_classes: logit channels; null takes the data set's class count.
        input_channels: image channels (3 for RGB).
        options: further keyword arguments of the model's builder.
        expected_params: parameter count this config must build (pinned; checked by tests).
    """

    name: str
    backbone: str | None = None
    weights: str | None = None
    weights_format: Literal["torchvision", "timm", "smp", "transformers"] | None = None
    weights_partial: bool = False
    num_classes: int | None = None
    input_channels: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    expected_params: int | None = None


@dataclass
class DataConfig:
    """Where the images come from and how they are cut into training batches.

    Attributes:
        name: data set name for `keras_seg.data.load` ("synthetic" is built in).
        data_dir: default data folder; `--data-dir` on the command line wins.
        train_split, val_split: split names.
        options: keyword arguments of `keras_seg.data.load` (e.g. the folder data set's
            `image_dir`, `mask_dir`, `label_map`, `num_classes`).
        crop_size: training crop `[height, width]`.
        augment: keyword arguments of `keras_seg.data.pipeline` (scale range, flips...).
        cache: keep the decoded images (training and validation splits) in memory after the
            first epoch, so files are read and decoded once; random crops and flips still
            change every epoch. For data sets that fit in memory (decoded, uint8).
    """

    name: str
    data_dir: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    options: dict[str, Any] = field(default_factory=dict)
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    augment: dict[str, Any] = field(default_factory=dict)
    cache: bool = False


@dataclass
class LossTerm:
    """One term of the training loss: `weight * loss(name, **options)`."""

    name: str = "cross_entropy"  # a key of keras_seg.losses.LOSSES
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation recipe.

    Attributes:
        batch_size: global batch size (split over replicas).
        steps: total optimizer steps; the poly schedule decays over these.
        steps_per_epoch: steps between validations (one Keras "epoch").
        optimizer: "sgd" (momentum) or "adamw".
        learning_rate, end_learning_rate: schedule start and end.
        schedule: "poly" (`(1 - step/steps) ** poly_power`), "cosine" or "constant".
        warmup_steps: linear warmup from 0 to `learning_rate` over these first steps; the
            schedule then decays over the remaining `steps - warmup_steps`.
        momentum, nesterov: SGD momentum.
        weight_decay: decoupled weight decay of the optimizer.
        decay_norm_and_bias: also decay norm-layer gamma/beta (BatchNorm, LayerNorm) and biases.
        lr_multipliers: `{regex on variable path: factor}`: the first pattern that matches a
            variable's path (`variable.path`, e.g. `logits/kernel`) multiplies its learning
            rate (and its weight decay step, as in PyTorch parameter groups); e.g.
            `{"^(decoder|logits)": 10.0}` trains SegFormer's head at 10x. A pattern that
            matches nothing is an error when training starts.
        loss: terms summed into the training loss.
        aux_loss_weight: weight of each auxiliary output's loss, for models built with
            deep supervision (pspnet `aux_head: true` returns `{"logits", "aux_logits"}`);
            0.4 as in PSPNet. The saved and exported models keep the main output only.
        class_weights: per-class loss weights, "median_frequency" (computed from the training
            split, as in SegNet) or null.
        precision: "auto" (mixed_float16 on GPU, mixed_bfloat16 on CPUs with native
            bfloat16, else float32: see `keras_seg.training.distribution.auto_precision`),
            "float32",
            "mixed_float16" or "mixed_bfloat16".
        distribution: "auto" (MirroredStrategy with several GPUs, else one device),
            "one_device", "mirrored" or "multi_worker" (MultiWorkerMirroredStrategy, TF_CONFIG).
        checkpoint_every: steps between resumable checkpoints.
        seed: random seed of weights and data order.
    """

    batch_size: int = 8
    steps: int = 1000
    steps_per_epoch: int = 100
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = 0.01
    end_learning_rate: float = 0.0
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    poly_power: float = 0.9
    warmup_steps: int = 0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = False
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    loss: list[LossTerm] = field(default_factory=lambda: [LossTerm()])
    aux_loss_weight: float = 0.4
    class_weights: list[float] | Literal["median_frequency"] | None = None
    precision: Literal[PRECISIONS] = "auto"
    distribution: Literal[DISTRIBUTIONS] = "auto"
    checkpoint_every: int = 500
    seed: int = 0


@dataclass
class EvalConfig:
    """How predictions are made at each image's original resolution.

    Attributes:
        mode: "whole" (one pass over the full image) or "sliding" (windows of `window`).
        window: sliding-window `[height, width]`; null uses `data.crop_size`.
        overlap: fraction of the window shared by neighbouring windows (0 <= overlap < 1).
        scales: image scales whose softmax scores are averaged (multi-scale inference).
        flip: also average the horizontally flipped image's scores.
        batch_size: windows per forward pass.
    """

    mode: Literal["whole", "sliding"] = "whole"
    window: list[int] | None = None
    overlap: float = 0.25
    scales: list[float] = field(default_factory=lambda: [1.0])
    flip: bool = False
    batch_size: int = 4


@dataclass
class ExportConfig:
    """What `keras-seg export` and the demo write.

    Attributes:
        formats: any of "keras", "saved_model", "tflite".
        tflite_quantize: null, "fp16", "dynamic" or "int8".
        input_size: fixed `[height, width]` for exports that need one; null keeps it dynamic.
    """

    formats: list[str] = field(default_factory=lambda: ["keras", "saved_model", "tflite"])
    tflite_quantize: Literal[QUANTIZATIONS] | None = None
    input_size: list[int] | None = None


@dataclass
class Config:
    """One experiment: a zoo config file."""

    name: str
    model: ModelConfig
    data: DataConfig
    description: str = ""
    reference: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-ready), in the order the zoo files use."""
        values = dataclasses.asdict(self)
        order = ("name", "description", "reference", "model", "data", "train", "eval", "export")
        return {key: values[key] for key in order}


# --- YAML -----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_scalar(text: str) -> Any:
    """Parse an override value as YAML (`8` -> 8, `1e-4` -> 0.0001, `[1, 2]` -> list)."""
    return yaml.load(text, Loader=_Loader)


# --- validation -----------------------------------------------------------------------------


@dataclass
class _Origin:
    """Where config values come from: a file, and `--set` overrides of some keys."""

    path: str
    overrides: dict[str, str] = field(default_factory=dict)  # dotted key -> "key=value"

    def at(self, key: str) -> str:
        """`path`, or `--set key=value (over path)` when `key` came from an override."""
        for dotted, text in self.overrides.items():
            if key == dotted or key.startswith((f"{dotted}.", f"{dotted}[")):
                return f"--set {text} (over {self.path})"
        return self.path

    def __str__(self) -> str:
        return self.path


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: _Origin) -> Any:
    """Check `value` against type `tp` and build dataclasses; raise ConfigError on mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, key, source)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{source.at(key)}: {key}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(
            f"{source.at(key)}: {key}: got {value!r}, allowed: "
            f"{', '.join(map(repr, typing.get_args(tp)))}"
        )
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, key, source)
    elif origin is list:
        if isinstance(value, list | tuple):
            (item,) = typing.get_args(tp)
            return [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            _, item = typing.get_args(tp)
            return {k: _convert(v, item, f"{key}.{k}", source) for k, v in value.items()}
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp in (int, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
    else:  # pragma: no cover - a schema type this function does not know
        raise TypeError(f"unsupported schema type {tp!r} at {key}")
    raise ConfigError(
        f"{source.at(key)}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _build(cls: type, values: dict[str, Any], prefix: str, source: _Origin) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    where = f"in {prefix!r}" if prefix else "at top level"
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"{source.at(name)}: unknown key {name!r}; allowed keys {where}: {', '.join(fields)}"
        )
    missing = [
        n
        for n, f in fields.items()
        if n not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"{source.at(prefix)}: missing required key(s) {where}: {', '.join(missing)}"
        )
    kwargs = {
        n: _convert(v, hints[n], f"{prefix}.{n}" if prefix else n, source)
        for n, v in values.items()
    }
    return cls(**kwargs)


def _check_values(cfg: Config, source: _Origin) -> None:
    """Range checks the types alone do not express."""
    c = cfg
    checks = [
        (
            "data.crop_size",
            c.data.crop_size,
            len(c.data.crop_size) == 2 and min(c.data.crop_size) > 0,
        ),
        ("train.batch_size", c.train.batch_size, c.train.batch_size > 0),
        ("train.steps", c.train.steps, c.train.steps > 0),
        ("train.steps_per_epoch", c.train.steps_per_epoch, c.train.steps_per_epoch > 0),
        ("train.warmup_steps", c.train.warmup_steps, 0 <= c.train.warmup_steps < c.train.steps),
        ("train.checkpoint_every", c.train.checkpoint_every, c.train.checkpoint_every > 0),
        ("train.aux_loss_weight", c.train.aux_loss_weight, c.train.aux_loss_weight >= 0),
        ("eval.overlap", c.eval.overlap, 0 <= c.eval.overlap < 1),
        ("eval.scales", c.eval.scales, bool(c.eval.scales) and min(c.eval.scales) > 0),
        ("eval.window", c.eval.window, c.eval.window is None or len(c.eval.window) == 2),
    ]
    for key, value, ok in checks:
        if not ok:
            raise ConfigError(f"{source.at(key)}: {key}: value {value!r} is out of range")
    for pattern, factor in cfg.train.lr_multipliers.items():
        key = f"train.lr_multipliers.{pattern}"
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ConfigError(
                f"{source.at(key)}: train.lr_multipliers: key {pattern!r} is not a regular "
                f"expression ({e})"
            ) from None
        if factor < 0:
            raise ConfigError(f"{source.at(key)}: {key}: value {factor!r} is out of range (>= 0)")
    bad = sorted(set(cfg.export.formats) - {"keras", "saved_model", "tflite"})
    if bad:
        raise ConfigError(
            f"{source.at('export.formats')}: export.formats: unknown {bad}; allowed: keras, "
            "saved_model, tflite"
        )


def config_from_dict(values: dict[str, Any], source: str | _Origin = "<dict>") -> Config:
    """Validate a nested dict against the schema and return a `Config`.

    `source` names where the values came from (a file name) in error messages.
    """
    source = source if isinstance(source, _Origin) else _Origin(str(source))
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping at top level, got {type(values).__name__}")
    cfg = _build(Config, values, "", source)
    _check_values(cfg, source)
    return cfg


def apply_overrides(
    values: dict[str, Any], overrides: Sequence[str], source: str
) -> dict[str, str]:
    """Apply `section.key=value` overrides in place; values are parsed as YAML.

    Returns:
        `{dotted key: "key=value"}` of the overrides applied.
    """
    applied = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        dotted = dotted.strip()
        applied[dotted] = item
        parts = dotted.split(".")
        node, cls = values, Config
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if cls is not None:
                hints = typing.get_type_hints(cls)
                if part not in hints:
                    raise ConfigError(
                        f"--set {item} (over {source}): unknown key {part!r}; allowed: "
                        f"{', '.join(hints)}"
                    )
                tp = hints[part]
                cls = tp if dataclasses.is_dataclass(tp) else None
            if last:
                try:
                    node[part] = parse_scalar(text)
                except yaml.YAMLError as e:
                    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                    raise ConfigError(
                        f"--set {item} (over {source}): the value is not valid YAML ({problem})"
                    ) from None
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ConfigError(f"--set {item} (over {source}): {part!r} is not a section")
                node = child
    return applied


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config strictly and apply `--set` style overrides.

    Args:
        path: YAML file.
        overrides: `"section.key=value"` strings; values are YAML scalars or flow lists.

    Returns:
        The validated `Config`.

    Raises:
        ConfigError: unknown key, wrong type or out-of-range value (names key and file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist"
            if not path.exists()
            else f"config {path} is not a file"
        )
    try:
        with open(path) as f:
            values = yaml.load(f, Loader=_Loader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at top level")
    applied = apply_overrides(values, overrides, str(path))
    return config_from_dict(values, _Origin(str(path), applied))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (keys in schema order)."""
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False, default_flow_style=None)
