"""Fold inference BatchNorm into the convolution before it.

In inference a BatchNormalization is a per-channel affine map, `y = x * s + t` with
`s = gamma / sqrt(moving_variance + epsilon)` and `t = beta - moving_mean * s`. Keras 3 runs
it on TensorFlow as two unfused elementwise passes over the activation
(`tf.nn.batch_normalization`: a Mul and an AddV2), which Grappler cannot fold into the
convolution because the weights are variables, not constants. When the BatchNorm reads the
output of a convolution that nothing else reads, the map folds into that convolution's
weights: `conv(x, W) * s + t == conv(x, W * s) + (b * s + t)`. `fold_batch_norm` returns a
copy of the model where each such pair is one convolution with a bias (the BatchNorm becomes
a `FoldedBatchNorm` identity layer, so the graph keeps its shape and layer names); Grappler
then fuses the bias add, the ReLU and a residual add into oneDNN's fused convolution.

Folded: `Conv2D`, `DepthwiseConv2D`, `SeparableConv2D` (into the pointwise kernel) and
`Conv2DTranspose`, in channels_last, each with one call and a BatchNorm over the last axis.
Everything else is copied as it is, nested models (backbones) included.

The folded model is for inference only: it has no BatchNorm statistics left to train.

Example:
    >>> folded = fold_batch_norm(model)
    >>> np.allclose(folded.predict(x), model.predict(x), rtol=1e-4, atol=1e-4)
    True
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

# Keras has no public way to run a Functional graph with another callable for some of its
# nodes; these two are what `Functional.call` itself uses (Keras 3.15).
from keras.src.models.functional import operation_fn as keras_operation_fn
from keras.src.models.functional import unpack_singleton

from keras_seg.layers import FoldedBatchNorm

FOLDABLE = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)


def walk_layers(model: keras.Model):
    """Every layer of `model` and of the Functional models nested in it."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def _model_outputs(model: keras.Model) -> set[int]:
    ids = {id(t) for t in keras.tree.flatten(model.outputs)}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            ids |= _model_outputs(layer)
    return ids


def foldable_pairs(model: keras.Model) -> dict[int, keras.layers.Layer]:
    """`{id(batch_norm): conv}` for every BatchNorm that can fold into the conv it reads."""
    outputs = _model_outputs(model)
    pairs = {}
    for bn in walk_layers(model):
        if not isinstance(bn, keras.layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
            continue
        if bn.axis not in (-1, len(bn.input.shape) - 1) or bn.renorm:
            continue
        tensor = bn._inbound_nodes[0].input_tensors[0]
        conv = tensor._keras_history.operation
        if (
            isinstance(conv, FOLDABLE)
            and conv.data_format == "channels_last"
            and conv.activation in (None, keras.activations.linear)
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1
            and id(tensor) not in outputs
        ):
            pairs[id(bn)] = conv
    return pairs


def _batch_norm_affine(bn: keras.layers.BatchNormalization, read):
    """`bn`'s inference map as `(scale, shift)`, `y = x * scale + shift`, computed on
    `read(variable)` (float64 arrays for the static copy, tensors for the live fold)."""
    scale = 1.0 / (read(bn.moving_variance) + bn.epsilon) ** 0.5
    if bn.scale:
        scale = scale * read(bn.gamma)
    shift = -read(bn.moving_mean) * scale
    if bn.center:
        shift = shift + read(bn.beta)
    return scale, shift


def _folded_weights(conv: keras.layers.Layer, bn: keras.layers.BatchNormalization):
    """The conv's kernel(s) and bias with `bn`'s affine map folded in (float64 arithmetic)."""
    scale, shift = _batch_norm_affine(bn, lambda v: np.asarray(v, np.float64))
    weights = [np.asarray(w, np.float64) for w in conv.get_weights()]
    bias = weights.pop() if conv.use_bias else 0.0
    if isinstance(conv, keras.layers.SeparableConv2D):
        depthwise, pointwise = weights
        kernels = [depthwise, pointwise * scale]
    elif isinstance(conv, keras.layers.DepthwiseConv2D):
        (kernel,) = weights
        kernels = [kernel * scale.reshape(kernel.shape[2:])]
    elif isinstance(conv, keras.layers.Conv2DTranspose):
        (kernel,) = weights  # [kh, kw, filters, in]
        kernels = [kernel * scale[:, None]]
    else:
        (kernel,) = weights  # [kh, kw, in, filters]
        kernels = [kernel * scale]
    return [*kernels, bias * scale + shift]


def fold_batch_norm(model: keras.Model, dtype: str | None = None) -> keras.Model:
    """A copy of `model` for inference with each Conv -> BatchNorm pair folded into the conv.

    Args:
        model: a Functional `keras.Model` (nested Functional models are folded too).
        dtype: a Keras dtype policy for every layer of the copy, e.g. "float32" for a model
            trained in mixed precision whose exports must compute in float32 (TFLite has no
            bfloat16 kernels); None keeps each layer's policy.

    Returns:
        A new Functional model (`model` itself when nothing folds) with the same inputs,
        outputs and layer names; folded BatchNorms are `FoldedBatchNorm` (the identity).
        Outputs agree with `model(x, training=False)` to float32 round-off. `model` itself
        is not changed.
    """
    pairs = foldable_pairs(model)
    if not pairs and all(_has_policy(layer, dtype) for layer in walk_layers(model)):
        return model
    convs = {id(conv) for conv in pairs.values()}
    copies: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone(layer):
        if id(layer) in pairs:
            return FoldedBatchNorm(name=layer.name, dtype=dtype or layer.dtype_policy.name)
        config = layer.get_config()
        if dtype is not None:
            config["dtype"] = dtype
        if id(layer) in convs:
            config["use_bias"] = True
            config["bias_initializer"] = "zeros"
        new = layer.__class__.from_config(config)
        copies.append((layer, new))
        return new

    folded = keras.models.clone_model(model, clone_function=clone, recursive=True)
    bn_of = {id(conv): bn for bn in walk_layers(model) for conv in [pairs.get(id(bn))] if conv}
    for old, new in copies:
        if id(old) in convs:
            weights = _folded_weights(old, bn_of[id(old)])
            new.set_weights([w.astype(v.dtype) for w, v in zip(weights, new.weights, strict=True)])
        elif old.weights:
            new.set_weights(old.get_weights())
    return folded


def _has_policy(layer: keras.layers.Layer, dtype: str | None) -> bool:
    return (
        dtype is None
        or isinstance(layer, keras.layers.InputLayer)
        or (layer.dtype_policy.name == dtype)
    )


def reduced_policies(model: keras.Model) -> set[str]:
    """The dtype policies other than float32 that `model`'s layers compute in."""
    return {layer.dtype_policy.name for layer in walk_layers(model)} - {"float32"}


def inference_model(model: keras.Model, dtype: str | None = None) -> keras.Model:
    """`fold_batch_norm(model, dtype)`, or `model` itself with a warning when it cannot be
    cloned (a subclassed model, a custom layer without `get_config`): the default of the
    inference paths, which must not fail on a model that runs."""
    try:
        return fold_batch_norm(model, dtype)
    except (ValueError, TypeError, NotImplementedError) as error:
        warnings.warn(
            f"BatchNorm not folded in {model.name!r} ({type(error).__name__}: {error}); "
            "running the model as it is",
            stacklevel=2,
        )
        return model


def _calls_convolution_op(conv: keras.layers.Layer) -> bool:
    """A Conv2D whose call is Keras' `convolution_op(x, kernel)` + bias (+ activation), so that
    `live_folded_call` can run it on a folded kernel (keras_seg's AtrousConv2D included)."""
    return isinstance(conv, keras.layers.Conv2D) and type(conv).call is keras.layers.Conv2D.call


# Compute dtypes whose folded kernels wait for their layer's input. TensorFlow runs an op as
# soon as its inputs exist, so the kernel-sized products of variables alone all ran when the
# call started and each folded kernel stayed allocated until its convolution ran: in float32
# a second copy of the weights at the activations' peak. Deferred, at 512 float32 (AMX Xeon,
# 2026-12-03, tools/ab_process_env.py; bench_results/perf.md, "Folded kernels wait"): peak
# RSS DeepLabV3+ ResNet-50 batch 4 1590 -> 1495 MiB (1.177 -> 1.183 s a call), U-Net
# ResNet-34 batch 1 990 -> 950 MiB (0.302 -> 0.282 s). In bfloat16 the copies are half the
# size and the multiply, then on the convolutions' path, made U-Net ResNet-34 at batch 1 11%
# slower (0.087 -> 0.097 s), so there the folds keep running early.
DEFERRED_FOLD_DTYPES = frozenset({"float32"})


# Compute dtypes whose folded kernels `live_folded_call` computes once when given `once` (a
# process whose weights are frozen). Each call's fold is a multiply (and in bfloat16 a cast)
# of every kernel, whose results oneDNN ignores once it keeps its first filters. At 512 under
# TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1, batch 1 and 4 in one process (AMX Xeon; perf.md,
# "Folded once"): bfloat16 (2026-12-03, bench_results/ab_fold_once_*_bf16.json): U-Net
# ResNet-34 0.061 -> 0.050 s a call at batch 1, 0.169 -> 0.159 s at 4, peak RSS 1125 -> 1155
# MiB; DeepLabV3+ ResNet-50 0.090 -> 0.070 s and 0.254 -> 0.239 s, 1305 -> 1287 MiB (the kept
# kernels are half the float32 weights' size, about what each call's products took).
# In float32 the kept copy is as large as the weights (2026-12-04,
# bench_results/ab_fold_once_*_f32.json): U-Net 0.204 -> 0.186 s and 0.746 -> 0.735 s, peak
# RSS 1395 -> 1474 MiB; DeepLabV3+ 0.246 -> 0.226 s and 0.926 -> 0.872 s, 1491 -> 1557 MiB.
# With it the peers command's DeepLabV3+ float32 inference row held 1.09x and then 1.15x
# SMP's peak RSS (its memory check is 1.1; without it 0.95x), so float32 folds on each call.
FOLD_ONCE_DTYPES = frozenset({"bfloat16", "float16"})


def _start_of(inputs: tf.Tensor) -> tf.Tensor:
    """The tensor a layer's folded kernel waits for: its input, or the input of the `Pad`
    that made it. oneDNN's graph pass merges a Pad into the convolution it feeds
    (`_MklPadWithConv2D`) and gives the merged op the Pad's control edges, so a fold waiting
    for the Pad itself would wait for its own convolution: a cycle, which TensorFlow refuses."""
    while inputs.op.type in ("Pad", "PadV2"):
        inputs = inputs.op.inputs[0]
    return inputs


def _fold_tensors(conv: keras.layers.Layer, bn: keras.layers.BatchNormalization, waits=()):
    """`conv`'s kernel and bias with `bn`'s inference map folded in, as tensors in the conv's
    compute dtype, read from the variables now; the kernel's product waits for `waits`."""
    scale, shift = _batch_norm_affine(bn, tf.convert_to_tensor)
    if conv.use_bias:
        shift = shift + conv.bias * scale
    dtype = conv.compute_dtype
    # The read outside the wait (no copy). Inside a model's `__call__` (test_step) Keras
    # autocasts the read to the compute dtype, so the product is taken in scale's.
    kernel = tf.convert_to_tensor(conv.kernel)
    with tf.control_dependencies(list(waits)):
        kernel = tf.cast(tf.cast(kernel, scale.dtype) * scale, dtype)
    return kernel, tf.cast(shift, dtype)


def _live_folded_conv(
    conv: keras.layers.Layer,
    bn: keras.layers.BatchNormalization,
    once: dict | None = None,
):
    """`x -> bn(conv(x))` in inference as one convolution with a bias, folded from the
    variables' values at this call (so it follows training; TensorFlow's graph does the
    kernel-sized multiply on each call, beside the convolutions), or read from `once`
    where `_keep_folds` has kept it (see `live_folded_call`)."""

    def call(inputs, **kwargs):
        dtype = conv.compute_dtype
        if once is not None and (id(conv), dtype) in once:  # see `_keep_folds`
            kernel, shift = once[(id(conv), dtype)]
        else:
            # Eagerly (run_eagerly) every op runs in order anyway.
            deferred = dtype in DEFERRED_FOLD_DTYPES and not tf.executing_eagerly()
            kernel, shift = _fold_tensors(conv, bn, [_start_of(inputs)] if deferred else [])
        outputs = conv.convolution_op(tf.cast(inputs, dtype), kernel)
        # BiasAdd (not Keras' AddV2): the op Grappler fuses into the convolution.
        return tf.nn.bias_add(outputs, shift)

    return call


def _keep_folds(once: dict, folded) -> None:
    """Compute into `once` the folded kernel and bias of each `(bn, conv)` in `folded` whose
    compute dtype is in `FOLD_ONCE_DTYPES` and that `once` lacks, keyed `(id(conv), dtype)`.

    Outside the graph being traced (which captures the results), but in a graph of their
    own: there Grappler rewrites the fold's arithmetic as it does in each call's graph (such
    as `1 / sqrt(variance + epsilon)` into one `Rsqrt`), so the kept kernels round to
    bfloat16 exactly as each call's did. Computed eagerly they did not quite: the ISBI 2012
    U-Net's logits moved by up to 0.03 and 163 of 1.57M pixels changed class.
    """
    missing = [
        (bn, conv)
        for bn, conv in folded
        if conv.compute_dtype in FOLD_ONCE_DTYPES and (id(conv), conv.compute_dtype) not in once
    ]
    if not missing:
        return
    with tf.init_scope():
        values = tf.function(lambda: [_fold_tensors(conv, bn) for bn, conv in missing])()
    for (_, conv), (kernel, shift) in zip(missing, values, strict=True):
        once[(id(conv), conv.compute_dtype)] = (kernel, shift)


def live_folded_call(model: keras.Model, inputs, once: dict | None = None):
    """`model(inputs, training=False)` with each Conv2D -> BatchNorm pair run as one
    convolution whose kernel and bias are folded from the variables at each call, or, given
    a dict `once`, folded at the first call that needs them, kept in `once` and read by
    every later call and trace (for a process whose weights no longer change, see
    `SegmentationModel`; the dict is the caller's, so that its traces share one copy).

    The static copy (`fold_batch_norm`) serves the exports and `Predictor`; this is for a
    model's own `predict`, which must follow its weights through training. Why not leave it to
    TensorFlow: in float32 Grappler fuses Conv2D -> FusedBatchNorm -> ReLU by itself
    (`keras_seg.layers.normalization`), but not in bfloat16, where oneDNN then runs every
    BatchNorm as a primitive of its own over the activation. Depthwise, separable and
    transposed convolutions keep their BatchNorm. Outputs equal `model(inputs,
    training=False)` to the precision's round-off.
    """
    folded = [(bn, conv) for bn, conv in _pairs_with_layers(model) if _calls_convolution_op(conv)]
    pairs = {id(bn): conv for bn, conv in folded}
    convs = {id(conv): bn for bn, conv in folded}
    if once is not None:
        _keep_folds(once, folded)

    def operation(op):
        if id(op) in convs:
            return _live_folded_conv(op, convs[id(op)], once)
        if id(op) in pairs:
            return lambda inputs, **kwargs: inputs
        if isinstance(op, keras.Model) and hasattr(op, "_run_through_graph"):
            return lambda inputs, **kwargs: run(op, inputs)
        return keras_operation_fn(op, training=False)

    def run(functional, inputs):
        outputs = functional._run_through_graph(
            functional._standardize_inputs(inputs), operation_fn=operation
        )
        return unpack_singleton(outputs)  # as Functional.call

    return run(model, inputs)


def _pairs_with_layers(model: keras.Model):
    """(batch_norm, conv) for each pair in `foldable_pairs(model)`."""
    pairs = foldable_pairs(model)
    return [(layer, pairs[id(layer)]) for layer in walk_layers(model) if id(layer) in pairs]
