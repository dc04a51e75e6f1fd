"""tf.distribute set-up from the config: one device, several GPUs, or several machines.

Multi-worker training reads the cluster from the `TF_CONFIG` environment variable (as
`tf.distribute.MultiWorkerMirroredStrategy` does); the strategy must be created before any
other TensorFlow work in the process. Only the chief writes the run's files; other workers
write theirs to a scratch folder that is removed afterwards.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from keras_seg.config import DISTRIBUTIONS as STRATEGIES
from keras_seg.config import PRECISIONS
from keras_seg.machine import cpu_has_native_bfloat16
from keras_seg.machine import gpu_available


def _cluster() -> dict:
    return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


def build_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy`.

    Args:
        kind: "auto" (multi-worker when TF_CONFIG lists several tasks, mirrored with several
            GPUs, else the default one-device strategy), "one_device", "mirrored" or
            "multi_worker".
    """
    if kind not in STRATEGIES:
        raise ValueError(f"Unknown distribution {kind!r}; allowed: {', '.join(STRATEGIES)}")
    if kind == "auto":
        tasks = sum(len(v) for v in _cluster().get("cluster", {}).values())
        gpus = tf.config.list_physical_devices("GPU")
        kind = "multi_worker" if tasks > 1 else "mirrored" if len(gpus) > 1 else "one_device"
    if kind == "multi_worker":
        if not _cluster().get("cluster"):
            raise ValueError("distribution 'multi_worker' needs TF_CONFIG with a 'cluster'")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_for_multi_worker()
        return strategy
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()  # the default strategy: the first GPU, else the CPU


def is_chief() -> bool:
    """True on the process that writes checkpoints and logs (the only one without TF_CONFIG)."""
    task = _cluster().get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    if kind in (None, "chief"):
        return True
    has_chief = "chief" in _cluster().get("cluster", {})
    return kind == "worker" and index == 0 and not has_chief


def auto_precision() -> str:
    """What `precision: auto` means on this machine.

    mixed_float16 on a GPU; mixed_bfloat16 on CPUs with native bfloat16 (AVX512-BF16, AMX);
    else float32. The CPU choice rests on `keras-seg benchmark precision` (the ISBI 2012
    U-Net, same seed and steps, 2-core AVX512-BF16 EPYC): bfloat16 lost 0.14 validation
    mIoU points against float32 at 1.53x the training speed with seed 0
    (bench_results/precision.json) and gained 0.21 at 1.54x with seed 1
    (precision_seed1.json), within the 0.5 points we accept for a default.
    """
    if gpu_available():
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_native_bfloat16() else "float32"


def set_precision(policy: str) -> str:
    """Set the global Keras dtype policy ("auto": `auto_precision()`); return the policy set.

    Under `mixed_float16`, `model.compile` wraps the optimizer in `LossScaleOptimizer`.
    """
    if policy not in PRECISIONS:
        raise ValueError(f"Unknown precision {policy!r}; allowed: {', '.join(PRECISIONS)}")
    if policy == "auto":
        policy = auto_precision()
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _patch_keras_for_multi_worker() -> None:
    """Work around two Keras 3 (checked on 3.15) bugs that break `fit` under
    MultiWorkerMirroredStrategy (keras-team/keras#20585):

    1. `_maybe_symbolic_build` all-reduces the first data batch across workers just to get
       example shapes, which fails on PerReplica inputs; we take the local replica's batch.
    2. `reduce_per_replica` reduces the scalar loss/metric logs with `axis=0`, which a scalar
       does not have; we reduce scalars with `axis=None`.

    Both replacements keep Keras's behaviour for every other strategy.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_keras_seg_patched", False):
        return
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            return original_reduce(values, strategy, reduction)

        def mean(value):
            if not isinstance(value, tf.distribute.DistributedValues):
                return value
            rank = strategy.experimental_local_results(value)[0].shape.rank
            return strategy.reduce("MEAN", value, axis=None if rank == 0 else 0)

        return tf.nest.map_structure(mean, values)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: (
                        strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    next(it),
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer._keras_seg_patched = True
