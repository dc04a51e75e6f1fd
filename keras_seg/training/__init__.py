"""Training, evaluation, prediction and the demo.

`train` runs a config end to end; `evaluate_checkpoint` and `predict_paths` are the
`keras-seg evaluate` / `predict` commands; `run_demo` is `keras-seg demo`.
"""

from keras_seg.training.callbacks import TrainingDiverged
from keras_seg.training.demo import run_demo
from keras_seg.training.evaluation import evaluate_checkpoint
from keras_seg.training.evaluation import evaluate_model
from keras_seg.training.evaluation import predict_scores
from keras_seg.training.prediction import load_run
from keras_seg.training.prediction import predict_paths
from keras_seg.training.trainer import train

__all__ = [
    "TrainingDiverged",
    "evaluate_checkpoint",
    "evaluate_model",
    "load_run",
    "predict_paths",
    "predict_scores",
    "run_demo",
    "train",
]
