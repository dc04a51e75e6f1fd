"""keras_seg: semantic-segmentation model zoo for Keras 3 on TensorFlow.

Importing the package registers every model and custom layer, so a saved `.keras` file
loads with plain `keras.saving.load_model` after `import keras_seg`.

Example:
    >>> import keras_seg
    >>> model = keras_seg.build("unet", num_classes=21)
"""

__version__ = "0.1.0"

import contextlib
import os

# TensorFlow's C++ start-up lines (oneDNN, CUDA probing) drown the output; a user who wants
# them sets TF_CPP_MIN_LOG_LEVEL=0 (see keras_seg.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU tensors come from malloc unless this is set; its BFC allocator (the one it
# uses on GPUs) pools them instead: steps measured as fast or up to 5% faster, U-Net's
# training peak RSS 4% lower, DeepLabV3+'s within noise (README, "Memory";
# tools/ab_process_env.py), and `tf.config.experimental.get_memory_info("CPU:0")` works.
# Like the line above it only counts when keras_seg is imported before TensorFlow; a user's
# own setting (`TF_CPU_ALLOCATOR_USE_BFC=false`) wins.
if "TF_CPU_ALLOCATOR_USE_BFC" not in os.environ:
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    # The BFC allocator refuses to grow past 64 GiB unless told: allow what the machine has,
    # as malloc would (tf.data caches of large data sets live there too).
    with contextlib.suppress(ValueError, OSError, AttributeError):
        _ram_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        os.environ.setdefault("TF_CPU_BFC_MEM_LIMIT_IN_MB", str(max(_ram_mib, 1 << 16)))

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
