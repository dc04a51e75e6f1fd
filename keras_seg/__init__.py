"""keras_seg: semantic-segmentation model zoo for Keras 3 on TensorFlow.

Importing the package registers every model and custom layer, so a saved `.keras` file
loads with plain `keras.saving.load_model` after `import keras_seg`.

Example:
    >>> import keras_seg
    >>> model = keras_seg.build("unet", num_classes=21)
"""

__version__ = "0.1.0"

import os

# TensorFlow's C++ start-up lines (oneDNN, CUDA probing) drown the output; a user who wants
# them sets TF_CPP_MIN_LOG_LEVEL=0 (see keras_seg.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_seg.console import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import keras_seg.backbones.mit  # noqa: E402,F401  (its attention and MLP layers, for loading)
import keras_seg.layers  # noqa: E402,F401  (registers the custom layers for loading)
import keras_seg.losses  # noqa: E402,F401  (and the losses and metrics of compiled models)
import keras_seg.metrics  # noqa: E402,F401
import keras_seg.models  # noqa: E402,F401  (registers the architectures)
from keras_seg.config import load_config  # noqa: E402
from keras_seg.registry import build  # noqa: E402
from keras_seg.registry import get_spec  # noqa: E402
from keras_seg.registry import list_models  # noqa: E402
from keras_seg.registry import register_model  # noqa: E402

__all__ = ["__version__", "build", "get_spec", "list_models", "load_config", "register_model"]
