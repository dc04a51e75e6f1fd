"""From an experiment config to its parts, and from a trained run back to a usable model.

Everything that loads a trained model goes through `load_run` (the `evaluate`, `predict`
and `export` commands, the demo). Importing `keras_seg` has registered the custom layers;
`load_run` reads the run's `config.yaml` through the strict config loader and gets the
class names and palette from `class_info`, the one function that answers "what are this
data set's classes".

    OUTPUT/               a training run folder (see `keras_seg.training.trainer`)
      config.yaml         the resolved config
      best.keras          the best model by validation mIoU (weights only, no optimizer)
      final.keras         the model after the last step

Example:
    >>> run = keras_seg.runs.load_run("runs/unet_voc")          # best.keras + config.yaml
    >>> run.model, run.config.data.name, run.classes.class_names[:2]
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_seg import registry
from keras_seg.config import Config
from keras_seg.config import ConfigError
from keras_seg.config import EvalConfig
from keras_seg.config import load_config
from keras_seg.data.info import IGNORE_LABEL
from keras_seg.data.info import voc_palette

CHECKPOINTS = ("best", "final")
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class ClassInfo:
    """What a model's class ids mean.

    Attributes:
        num_classes: logit channels.
        class_names: one name per class id.
        palette: uint8 `[num_classes, 3]` RGB colour per class id.
        ignore_label: the mask value that losses and metrics skip.
        data_name: the data set the names come from ("" when they are generic).
    """

    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    ignore_label: int = IGNORE_LABEL
    data_name: str = ""

    @classmethod
    def generic(cls, num_classes: int, data_name: str = "") -> ClassInfo:
        """Names `class_0..` and the VOC colour map."""
        names = tuple(f"class_{i}" for i in range(num_classes))
        return cls(num_classes, names, voc_palette(num_classes), data_name=data_name)


def class_info(
    cfg: Config, data_dir: str | None = None, num_classes: int | None = None
) -> ClassInfo:
    """Class count, names and palette of the config's data set.

    Args:
        cfg: the experiment; its `data` section names the data set and its options.
        data_dir: data folder (wins over `cfg.data.data_dir`; a folder data set reads its
            `classes.txt` there).
        num_classes: the model's class count (default `cfg.model.num_classes`, else the data
            set's). Extra classes get generic names, surplus names are dropped.

    Raises:
        ValueError, OSError: the data set's classes cannot be read (unknown name, missing
            classes file, ...).
    """
    import keras_seg.data

    found = keras_seg.data.info(
        cfg.data.name, data_dir or cfg.data.data_dir, **dict(cfg.data.options)
    )
    n = num_classes or cfg.model.num_classes or found.num_classes
    names = tuple(found.class_names[:n]) + tuple(
        f"class_{i}" for i in range(len(found.class_names), n)
    )
    palette = found.palette
    if palette is None or len(palette) < n:
        palette = voc_palette(n)
    return ClassInfo(n, names, np.asarray(palette, np.uint8)[:n], found.ignore_label, cfg.data.name)


def build_model(cfg: Config, num_classes: int | None = None) -> keras.Model:
    """The config's model with `num_classes` logits (default `cfg.model.num_classes`), any size."""
    n = num_classes or cfg.model.num_classes
    if n is None:
        raise ValueError(f"{cfg.name}: model.num_classes is not set and no class count was given")
    return registry.build(
        cfg.model.name,
        num_classes=n,
        input_shape=(None, None, cfg.model.input_channels),
        backbone=cfg.model.backbone,
        weights=cfg.model.weights,
        weights_format=cfg.model.weights_format,
        weights_partial=cfg.model.weights_partial,
        **cfg.model.options,
    )


def load_split(cfg: Config, split: str, data_dir: str | None = None):
    """Unbatched `(image uint8 [H, W, 3], mask uint8 [H, W])` pairs of a config's split."""
    import keras_seg.data

    return keras_seg.data.load(
        cfg.data.name, split, data_dir or cfg.data.data_dir, **dict(cfg.data.options)
    )


def eval_settings(cfg: Config | None) -> EvalConfig:
    """`cfg.eval` with the sliding window defaulting to the training crop."""
    if cfg is None:
        return EvalConfig()
    e = cfg.eval
    window = e.window or list(cfg.data.crop_size)
    return EvalConfig(e.mode, window, e.overlap, list(e.scales), e.flip, e.batch_size)


# --- checking a config against the builders ---------------------------------------------------


def _unknown_options(options: dict[str, Any], function, skip: tuple[str, ...] = ()) -> list[str]:
    params = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    return sorted(set(options) - (set(params) - set(skip)))


def _allowed(function, skip: tuple[str, ...] = ()) -> str:
    params = inspect.signature(function).parameters.items()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return ", ".join(n for n, p in params if p.kind in named and n not in skip) or "none"


def check_config(cfg: Config, source: str | None = None) -> None:
    """Check names and options of the model, data set, losses and augmentation up front.

    The config schema checks types; this checks the values against what the builders take,
    so a typo fails in a second with the key and the file, not after the data are read.

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    from keras_seg.backbones import get_backbone_spec
    from keras_seg.data import option_names
    from keras_seg.data.datasets import LOAD_ARGUMENTS
    from keras_seg.data.pipeline import pipeline
    from keras_seg.losses import LOSSES

    where = source or cfg.name
    try:
        spec = registry.get_spec(cfg.model.name)
    except ValueError as e:
        raise ConfigError(f"{where}: model.name: {e}") from None
    if cfg.model.backbone is not None:
        try:
            get_backbone_spec(cfg.model.backbone)
        except ValueError as e:
            raise ConfigError(f"{where}: model.backbone: {e}") from None
    fixed = ("num_classes", "input_shape", "backbone", "weights")
    bad = _unknown_options(cfg.model.options, spec.builder, fixed)
    if bad:
        raise ConfigError(
            f"{where}: model.options: {cfg.model.name!r} takes no option {bad[0]!r}; "
            f"allowed: {_allowed(spec.builder, fixed)}"
        )
    for i, term in enumerate(cfg.train.loss):
        if term.name not in LOSSES:
            raise ConfigError(
                f"{where}: train.loss[{i}].name: unknown loss {term.name!r}; "
                f"allowed: {', '.join(LOSSES)}"
            )
        loss = LOSSES[term.name].__init__
        skip = ("self", "class_weights", "ignore_label", "name", "reduction", "dtype")
        bad = _unknown_options(term.options, loss, skip)
        if bad:
            raise ConfigError(
                f"{where}: train.loss[{i}].options: loss {term.name!r} takes no option "
                f"{bad[0]!r}; allowed: {_allowed(loss, skip)}"
            )
    try:
        allowed = option_names(cfg.data.name)
    except ValueError as e:
        raise ConfigError(f"{where}: data.name: {e}") from None
    bad = sorted(set(cfg.data.options) - set(allowed) - set(LOAD_ARGUMENTS))
    if bad:
        raise ConfigError(
            f"{where}: data.options: data set {cfg.data.name!r} takes no option {bad[0]!r}; "
            f"allowed: {', '.join((*allowed, *LOAD_ARGUMENTS))}"
        )
    skip = ("dataset", "training", "crop_size", "batch_size", "seed", "num_classes", "repeat")
    bad = _unknown_options(cfg.data.augment, pipeline, skip)
    if bad:
        raise ConfigError(
            f"{where}: data.augment: no augmentation option {bad[0]!r}; "
            f"allowed: {_allowed(pipeline, skip)}"
        )


# --- trained runs ------------------------------------------------------------------------------


@dataclass
class Run:
    """A trained model with what is known about it.

    Attributes:
        model: the Keras model (not compiled).
        model_path: the `.keras` file it was loaded from.
        run_dir: the training run folder, when the source was one.
        config: the run's config (`config.yaml` beside the model), or None.
        classes: class names and palette (from the config's data set, else generic).
    """

    model: keras.Model
    model_path: Path
    run_dir: Path | None
    config: Config | None
    classes: ClassInfo

    @property
    def name(self) -> str:
        """The architecture's registry name (the model's name without a config)."""
        return self.config.model.name if self.config else self.model.name

    @property
    def eval_config(self) -> EvalConfig:
        return eval_settings(self.config)


def find_model_file(path: str | Path, checkpoint: str = "best") -> tuple[Path, Path | None]:
    """`(model file, run folder or None)` for a `.keras` file or a run folder.

    A run folder gives `<checkpoint>.keras`, falling back to the other checkpoint.

    Raises:
        FileNotFoundError: nothing there, or a folder without `best.keras`/`final.keras`.
        ValueError: a file that is not `.keras`.
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    path = Path(path)
    if path.is_dir():
        order = [checkpoint] + [c for c in CHECKPOINTS if c != checkpoint]
        found = [path / f"{c}.keras" for c in order if (path / f"{c}.keras").exists()]
        if not found:
            raise FileNotFoundError(
                f"{path} is a folder without best.keras or final.keras "
                "(expected a training run folder or a .keras file)"
            )
        return found[0], path
    if not path.exists():
        raise FileNotFoundError(f"no model at {path} (expected a .keras file or a run folder)")
    if path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras file or a training run folder")
    return path, None


def load_model(path: str | Path) -> keras.Model:
    """`keras.saving.load_model(path, compile=False)`, with a one-line error for a bad file."""
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot load the Keras model {path}: {first}") from e


def load_run(path: str | Path, checkpoint: str = "best", data_dir: str | None = None) -> Run:
    """Load a `.keras` file or a run folder's checkpoint, with the config beside it.

    Args:
        path: a `.keras` file or a training run folder.
        checkpoint: "best" or "final" for a run folder.
        data_dir: where the data set lives, for data sets whose class names are files there
            (a folder data set's `classes.txt`); default the config's `data.data_dir`.

    Returns:
        A `Run`. Class names come from the config's data set; where they cannot be read
        (no config, the data folder is not on this machine, a different class count) they
        are generic (`class_0..`) and a warning says why.
    """
    model_path, run_dir = find_model_file(path, checkpoint)
    config_path = model_path.parent / CONFIG_FILE
    cfg = load_config(config_path) if config_path.exists() else None
    model = load_model(model_path)
    num_classes = int(model.output_shape[-1])
    classes = ClassInfo.generic(num_classes)
    if cfg is not None:
        try:
            found = class_info(cfg, data_dir, num_classes)
        except (ValueError, OSError) as e:
            warnings.warn(
                f"cannot read the class names of data set {cfg.data.name!r} ({e}); "
                "using class_0.. and the VOC palette",
                stacklevel=2,
            )
        else:
            known = cfg.model.num_classes in (None, num_classes)
            if known:
                classes = found
            else:
                warnings.warn(
                    f"{config_path} says {cfg.model.num_classes} classes but {model_path} has "
                    f"{num_classes}; using class_0.. and the VOC palette",
                    stacklevel=2,
                )
    return Run(model, model_path, run_dir, cfg, classes)
