"""keras_seg's SGD and AdamW: the same steps as Keras's, with the update after the backward pass."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_seg.config import TrainConfig
from keras_seg.training import optimizers
from keras_seg.training.schedules import build_optimizer
from tests.training.common import tiny_batch
from tests.training.common import tiny_model


def _scheduled_adamw(cls):
    """AdamW as `build_optimizer` makes it: a poly schedule, no decay for biases and norms."""
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-2, 10, 1e-4, power=0.9)
    optimizer = cls(schedule, weight_decay=1e-2)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


PAIRS = {
    # Not bit for bit: with a schedule and excluded variables Grappler's arithmetic passes
    # round a few values differently in the two graphs (identical with constant folding or
    # arithmetic optimisation off); SegNet's training amplifies that (schedules.py).
    "scheduled_adamw": (
        lambda: _scheduled_adamw(keras.optimizers.AdamW),
        lambda: _scheduled_adamw(optimizers.AdamW),
    ),
    "sgd": (
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-2),
        lambda: optimizers.SGD(0.05, momentum=0.9, weight_decay=1e-2),
    ),
    "adamw": (
        lambda: keras.optimizers.AdamW(1e-2, weight_decay=1e-2),
        lambda: optimizers.AdamW(1e-2, weight_decay=1e-2),
    ),
    "nesterov_sgd": (
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    ),
    "plain_sgd": (
        lambda: keras.optimizers.SGD(0.05, weight_decay=1e-2),
        lambda: optimizers.SGD(0.05, weight_decay=1e-2),
    ),
    "layerwise_sgd": (
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: optimizers.LayerwiseSGD(0.05, momentum=0.9, lr_multipliers={"^logits/": 1.0}),
    ),
}


def _train(optimizer, steps: int = 3) -> list[np.ndarray]:
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    for _ in range(steps):
        model.train_on_batch(*tiny_batch())
    return [v.numpy() for v in model.trainable_variables]


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_same_steps_as_keras(name):
    keras_opt, ours = PAIRS[name]
    keras.utils.set_random_seed(0)
    start = [v.numpy() for v in tiny_model().trainable_variables]  # _train's initial weights
    theirs, mine = _train(keras_opt()), _train(ours())
    for a, b, s in zip(theirs, mine, start, strict=True):
        assert np.isfinite(b).all() and not np.allclose(b, s)  # trained, and moved
        if name in ("sgd", "adamw", "plain_sgd"):  # Keras's expressions: bit for bit
            np.testing.assert_array_equal(b, a)
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def _ancestors(op) -> set:
    seen, todo = set(), [op]
    while todo:
        current = todo.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _traced_update(optimizer) -> tuple[list, set]:
    """(ops the optimizer adds to a traced training step, the gradients' ops)."""
    model = tiny_model()
    x, y = tiny_batch()
    optimizer.build(model.trainable_variables)
    created: list = []
    gradient_ops: set = set()

    @tf.function(autograph=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        grads = tape.gradient(loss, model.trainable_variables)
        graph = tf.compat.v1.get_default_graph()
        before = len(graph.get_operations())
        optimizer.apply(grads, model.trainable_variables)
        created.extend(graph.get_operations()[before:])
        gradient_ops.update(g.op for g in grads)

    step.get_concrete_function(tf.constant(x), tf.constant(y))
    assert created and len(gradient_ops) == len(model.trainable_variables)
    return created, gradient_ops


def _update_ops_before_any_gradient(optimizer) -> list[str]:
    """The ops with non-scalar outputs (copies of slots or weights) that the optimizer adds to
    a traced step and that do not wait for a gradient, so can run during the backward pass."""
    created, gradient_ops = _traced_update(optimizer)
    return [
        op.name
        for op in created
        if any(t.shape.rank for t in op.outputs) and not (_ancestors(op) & gradient_ops)
    ]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_updates_wait_for_a_gradient(name):
    keras_opt, ours = PAIRS[name]
    assert _update_ops_before_any_gradient(ours()) == []
    # Keras's own computes momentum * m (SGD) and w * wd * lr (AdamW's decay) from the slot or
    # weight alone, early in the backward pass: what the mixin is for.
    early = _update_ops_before_any_gradient(keras_opt())
    assert any("Mul" in name or "mul" in name for name in early), early


def test_sgd_momentum_is_one_in_place_op_per_variable():
    created, _ = _traced_update(optimizers.SGD(0.05, momentum=0.9))
    fused = [op for op in created if op.type == "ResourceApplyKerasMomentum"]
    assert len(fused) == len(tiny_model().trainable_variables)
    # No element-wise op on a slot or weight beside it.
    assert not [op.name for op in created if op.type in ("Mul", "Sub", "AddV2")
                and any(t.shape.rank for t in op.outputs)]  # fmt: skip


def test_training_builds_keras_segs_optimizers():
    assert type(build_optimizer(TrainConfig(optimizer="sgd"))) is optimizers.SGD
    # Held back: SegNet's user-path run learned less with it (schedules.build_optimizer).
    assert type(build_optimizer(TrainConfig(optimizer="adamw"))) is keras.optimizers.AdamW
    assert isinstance(
        build_optimizer(TrainConfig(lr_multipliers={"^logits/": 10.0})), optimizers.SGD
    )
