"""keras_seg: semantic-segmentation model zoo for Keras 3 on TensorFlow.

Example:
    >>> import keras_seg
    >>> model = keras_seg.build("unet", num_classes=21)
"""

__version__ = "0.1.0"

import os

# TensorFlow's C++ start-up INFO lines (oneDNN, CUDA probing) drown the CLI's output; a user
# who wants them sets TF_CPP_MIN_LOG_LEVEL themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_seg.config import load_config
from keras_seg.registry import build
from keras_seg.registry import get_spec
from keras_seg.registry import list_models
from keras_seg.registry import register_model

__all__ = ["__version__", "build", "get_spec", "list_models", "load_config", "register_model"]
