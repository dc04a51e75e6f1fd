"""Learning-rate schedules and optimizers from a `TrainConfig`.

The "poly" schedule of DeepLab and PSPNet, `lr * (1 - step / steps) ** power`, is exactly
`keras.optimizers.schedules.PolynomialDecay(lr, steps, end_lr, power)`, so we use Keras's
(serializable, restored with the optimizer's step counter on resume). `warmup_steps` puts a
linear warmup from 0 in front of any of them, which then decays over the remaining steps (as
mmsegmentation's `LinearLR` followed by `PolyLR(begin=warmup)`).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_seg.config import TrainConfig
from keras_seg.training.optimizers import SGD
from keras_seg.training.optimizers import LayerwiseAdamW
from keras_seg.training.optimizers import LayerwiseSGD

# Variables whose names contain these get no weight decay unless `decay_norm_and_bias`.
NO_DECAY_NAMES = ("gamma", "beta", "bias")
#: Adam(W)'s epsilon: PyTorch's 1e-8 (Keras' default is 1e-7). Keras adds it to sqrt(v)
#: before the bias correction, torch after, so the two still differ in the first few hundred
#: steps (Keras' is larger by 1 / sqrt(1 - beta_2 ** step)); with Keras' own 1e-7 they differ
#: ten times more.
ADAM_EPSILON = 1e-8


@keras.saving.register_keras_serializable(package="keras_seg")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`peak * step / warmup_steps` for the first `warmup_steps`, then `after(step - warmup_steps)`.

    Args:
        after: the schedule that follows (or a constant learning rate).
        warmup_steps: length of the warmup.
        peak: the learning rate reached at the end of the warmup.
    """

    def __init__(self, after, warmup_steps: int, peak: float):
        self.after = after
        self.warmup_steps = int(warmup_steps)
        self.peak = float(peak)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * step / self.warmup_steps
        later = ops.maximum(step - self.warmup_steps, 0.0)
        rest = self.after(later) if callable(self.after) else ops.cast(self.after, "float32")
        return ops.where(step < self.warmup_steps, warm, ops.cast(rest, "float32"))

    def get_config(self):
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        return {"after": after, "warmup_steps": self.warmup_steps, "peak": self.peak}

    @classmethod
    def from_config(cls, config):
        after = config["after"]
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        return cls(after, config["warmup_steps"], config["peak"])


def build_schedule(cfg: TrainConfig) -> keras.optimizers.schedules.LearningRateSchedule | float:
    """The learning rate (schedule) of `cfg`: poly, cosine or constant over `cfg.steps`, after
    a linear warmup of `cfg.warmup_steps` (the decay then spans the remaining steps)."""
    steps = cfg.steps - cfg.warmup_steps
    if cfg.schedule == "poly":
        schedule = keras.optimizers.schedules.PolynomialDecay(
            cfg.learning_rate, steps, cfg.end_learning_rate, power=cfg.poly_power
        )
    elif cfg.schedule == "cosine":
        alpha = cfg.end_learning_rate / cfg.learning_rate if cfg.learning_rate else 0.0
        schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps, alpha=alpha)
    elif cfg.schedule == "constant":
        schedule = cfg.learning_rate
    else:
        raise ValueError(f"Unknown schedule {cfg.schedule!r}; allowed: poly, cosine, constant")
    if cfg.warmup_steps:
        return LinearWarmup(schedule, cfg.warmup_steps, cfg.learning_rate)
    return schedule


def build_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """SGD with momentum or AdamW, with decoupled weight decay.

    Keras applies `weight_decay` as decoupled decay (`w -= lr * wd * w`), which for SGD differs
    from Caffe's L2-in-the-gradient only through the momentum of the decay term.
    Norm-layer gamma/beta (BatchNorm, LayerNorm) and biases are excluded unless
    `cfg.decay_norm_and_bias` (PyTorch's `AdamW(model.parameters())` decays them all).
    AdamW's epsilon is PyTorch's (`ADAM_EPSILON`). SGD is keras_seg's subclass
    (`keras_seg.training.optimizers`: each variable's update waits for its gradient); with
    `cfg.lr_multipliers` the layer-wise subclasses scale each variable's learning rate.
    """
    schedule = build_schedule(cfg)
    weight_decay = cfg.weight_decay or None
    layerwise = {"lr_multipliers": cfg.lr_multipliers} if cfg.lr_multipliers else {}
    if cfg.optimizer == "sgd":
        optimizer = (LayerwiseSGD if layerwise else SGD)(
            schedule,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=weight_decay,
            **layerwise,
        )
    elif cfg.optimizer == "adamw":
        # Keras's own AdamW. keras_seg's (update after each gradient) takes the same steps,
        # but with a schedule and variables excluded from decay not bit for bit: Grappler's
        # constant folding / arithmetic optimisation round a few values differently in its
        # graph (identical with either pass off; a SegNet's weights first differ by 2e-9 in
        # its third step), and SegNet's user-path run, whose argmax unpooling amplifies
        # that, then learned less (mIoU 0.486 against >= 0.5, tests/test_user_path.py).
        optimizer = (LayerwiseAdamW if layerwise else keras.optimizers.AdamW)(
            schedule, weight_decay=cfg.weight_decay, epsilon=ADAM_EPSILON, **layerwise
        )
    else:
        raise ValueError(f"Unknown optimizer {cfg.optimizer!r}; allowed: sgd, adamw")
    if cfg.weight_decay and not cfg.decay_norm_and_bias:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return optimizer
