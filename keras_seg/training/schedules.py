"""Learning-rate schedules and optimizers from a `TrainConfig`.

The "poly" schedule of DeepLab and PSPNet, `lr * (1 - step / steps) ** power`, is exactly
`keras.optimizers.schedules.PolynomialDecay(lr, steps, end_lr, power)`, so we use Keras's
(serializable, restored with the optimizer's step counter on resume).
"""

from __future__ import annotations

import keras

from keras_seg.config import TrainConfig
from keras_seg.training.optimizers import LayerwiseAdamW
from keras_seg.training.optimizers import LayerwiseSGD

# Variables whose names contain these get no weight decay unless `decay_norm_and_bias`.
NO_DECAY_NAMES = ("gamma", "beta", "bias")


def build_schedule(cfg: TrainConfig) -> keras.optimizers.schedules.LearningRateSchedule | float:
    """The learning rate (schedule) of `cfg`: poly, cosine or constant over `cfg.steps`."""
    if cfg.schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(
            cfg.learning_rate, cfg.steps, cfg.end_learning_rate, power=cfg.poly_power
        )
    if cfg.schedule == "cosine":
        alpha = cfg.end_learning_rate / cfg.learning_rate if cfg.learning_rate else 0.0
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, cfg.steps, alpha=alpha)
    if cfg.schedule == "constant":
        return cfg.learning_rate
    raise ValueError(f"Unknown schedule {cfg.schedule!r}; allowed: poly, cosine, constant")


def build_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """SGD with momentum or AdamW, with decoupled weight decay.

    Keras applies `weight_decay` as decoupled decay (`w -= lr * wd * w`), which for SGD differs
    from Caffe's L2-in-the-gradient only through the momentum of the decay term.
    Norm-layer gamma/beta (BatchNorm, LayerNorm) and biases are excluded unless
    `cfg.decay_norm_and_bias`. With `cfg.lr_multipliers`, the optimizer is the layer-wise
    subclass (`keras_seg.training.optimizers`) that scales each variable's learning rate.
    """
    schedule = build_schedule(cfg)
    weight_decay = cfg.weight_decay or None
    layerwise = {"lr_multipliers": cfg.lr_multipliers} if cfg.lr_multipliers else {}
    if cfg.optimizer == "sgd":
        optimizer = (LayerwiseSGD if layerwise else keras.optimizers.SGD)(
            schedule,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=weight_decay,
            **layerwise,
        )
    elif cfg.optimizer == "adamw":
        optimizer = (LayerwiseAdamW if layerwise else keras.optimizers.AdamW)(
            schedule, weight_decay=cfg.weight_decay, **layerwise
        )
    else:
        raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; allowed: sgd, adamw")
    if cfg.weight_decay and not cfg.decay_norm_and_bias:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer
