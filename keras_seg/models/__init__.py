"""Every architecture lives in one module here; importing this package registers them all."""

from keras_seg.models import deeplab  # noqa: F401
from keras_seg.models import fcn  # noqa: F401
from keras_seg.models import hrnet  # noqa: F401
from keras_seg.models import pspnet  # noqa: F401
from keras_seg.models import segformer  # noqa: F401
from keras_seg.models import segnet  # noqa: F401
from keras_seg.models import unet  # noqa: F401
