"""`train.lr_multipliers`: per-variable learning rates for SGD and AdamW, and their config checks."""

import keras
import numpy as np
import pytest

from keras_seg.config import ConfigError
from keras_seg.config import TrainConfig
from keras_seg.config import config_from_dict
from keras_seg.training import optimizers
from keras_seg.training.optimizers import LayerwiseAdamW
from keras_seg.training.optimizers import LayerwiseSGD
from keras_seg.training.optimizers import variable_factors
from keras_seg.training.schedules import build_optimizer
from tests.training.common import tiny_batch
from tests.training.common import tiny_model

HEAD = {"^logits/": 10.0}


def _moves(train_cfg: TrainConfig) -> dict[str, np.ndarray]:
    """Variable path -> change after one `train_on_batch` step from fixed initial weights."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    before = {v.path: v.numpy() for v in model.trainable_variables}
    model.compile(optimizer=build_optimizer(train_cfg), loss="sparse_categorical_crossentropy")
    model.train_on_batch(*tiny_batch())
    return {v.path: v.numpy() - before[v.path] for v in model.trainable_variables}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_head_multiplier_moves_the_head_ten_times_as_far(optimizer):
    common = {
        "optimizer": optimizer,
        "learning_rate": 0.01,
        "schedule": "constant",
        "weight_decay": 0.05,  # kernels decay, biases and norms do not
    }
    plain = _moves(TrainConfig(**common))
    scaled = _moves(TrainConfig(**common, lr_multipliers=HEAD))
    for path, move in plain.items():
        factor = 10.0 if path.startswith("logits/") else 1.0
        assert np.abs(move).max() > 0, path
        np.testing.assert_allclose(scaled[path], factor * move, rtol=1e-4, atol=1e-7, err_msg=path)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_effective_rate_is_that_of_a_plain_optimizer_at_the_scaled_rate(optimizer):
    """The head steps as a plain optimizer at 10x the rate would (Adam: not 10x gradients)."""
    common = {"optimizer": optimizer, "schedule": "constant", "weight_decay": 0.05}
    scaled = _moves(TrainConfig(**common, learning_rate=0.001, lr_multipliers=HEAD))
    fast = _moves(TrainConfig(**common, learning_rate=0.01))
    slow = _moves(TrainConfig(**common, learning_rate=0.001))
    for path, move in scaled.items():
        want = fast[path] if path.startswith("logits/") else slow[path]
        np.testing.assert_allclose(move, want, rtol=1e-4, atol=1e-8, err_msg=path)
    if optimizer == "adamw":  # first Adam step: lr * g / (|g| + eps), at most about lr
        assert np.abs(scaled["logits/kernel"]).max() == pytest.approx(0.01, rel=0.1)
        assert np.abs(scaled["body_conv/kernel"]).max() == pytest.approx(0.001, rel=0.1)


def test_optimizer_classes_and_first_match_wins():
    cfg = TrainConfig(optimizer="adamw", lr_multipliers={"logits": 10.0, "o": 2.0})
    optimizer = build_optimizer(cfg)
    assert isinstance(optimizer, LayerwiseAdamW) and isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.get_config()["lr_multipliers"] == {"logits": 10.0, "o": 2.0}
    assert isinstance(build_optimizer(TrainConfig(lr_multipliers=HEAD)), LayerwiseSGD)
    assert type(build_optimizer(TrainConfig())) is optimizers.SGD  # none: not layer-wise
    paths = ["body_conv/kernel", "logits/kernel", "body_norm/gamma"]
    assert variable_factors({"logits": 10.0, "o": 2.0}, paths) == [2.0, 10.0, 2.0]
    assert variable_factors({}, paths) == [1.0, 1.0, 1.0]
    with pytest.raises(
        ValueError, match=r"train\.lr_multipliers: pattern 'decode_head' matches no"
    ):
        variable_factors({"logits": 10.0, "decode_head": 10.0}, paths)


MINIMAL = {
    "name": "tiny",
    "model": {"name": "unet", "options": {"base_filters": 4, "depth": 2}},
    "data": {"name": "synthetic"},
}


@pytest.mark.parametrize(
    "multipliers, message",
    [
        ({"logits": "ten"}, r"cfg\.yaml: train\.lr_multipliers\.logits: expected float, got str"),
        ({"(": 2.0}, r"cfg\.yaml: train\.lr_multipliers: key '\(' is not a regular expression"),
        ({"logits": -1.0}, r"train\.lr_multipliers\.logits: value -1\.0 is out of range"),
        ([10.0], r"train\.lr_multipliers: expected dict, got list \[10\.0\]"),
    ],
)
def test_config_errors_name_the_key(multipliers, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**MINIMAL, "train": {"lr_multipliers": multipliers}}, "cfg.yaml")


def test_config_reads_multipliers():
    cfg = config_from_dict({**MINIMAL, "train": {"lr_multipliers": {"^(decoder|logits)": 10}}})
    assert cfg.train.lr_multipliers == {"^(decoder|logits)": 10.0}


def test_training_run_with_multipliers_warmup_and_a_pattern_that_matches_nothing(tmp_path):
    from keras_seg.training.trainer import train
    from tests.training.common import tiny_config

    overrides = ['train.lr_multipliers={"^logits/": 10.0, "decoder": 2.0}']
    _, cfg = tiny_config(tmp_path, overrides)
    with pytest.raises(ConfigError, match=r"tiny: .*pattern 'decoder' matches no trainable"):
        train(cfg, tmp_path / "bad", verbose=0, final_eval=False)
    cfg.train.lr_multipliers = {"^logits/": 10.0}
    cfg.train.warmup_steps = 2
    result = train(cfg, tmp_path / "run", verbose=0, final_eval=False)
    assert np.isfinite(result["history"]["loss"]).all() and len(result["history"]["loss"]) == 2
