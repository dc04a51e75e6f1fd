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

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


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
        return tf.distribute.MultiWorkerMirroredStrategy()
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


def set_precision(policy: str) -> str:
    """Set the global Keras dtype policy; "auto" picks mixed_float16 on GPU, else float32.

    Under `mixed_float16`, `model.compile` wraps the optimizer in `LossScaleOptimizer`.
    """
    if policy == "auto":
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy
