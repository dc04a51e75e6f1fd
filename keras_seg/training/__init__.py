"""Training: `train` runs a config end to end (`keras-seg train`).

Evaluation, prediction and loading trained runs live in `keras_seg.inference` and
`keras_seg.runs`; the demo in `keras_seg.demo`.
"""

from keras_seg.training.callbacks import TrainingDiverged
from keras_seg.training.trainer import train

__all__ = ["TrainingDiverged", "train"]
