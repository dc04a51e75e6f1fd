"""Data: readers for VOC 2012 (+SBD), Cityscapes, CamVid, folders, TFDS and generated shapes,
the up-front file check, augmentation, and the tf.data training/evaluation pipeline.

Bad data (a missing, corrupt or truncated file, image and mask of different sizes, mask
values outside the classes) raises `DataError`, whose message is one line naming the file
and what was expected; `data_error_from` recovers it from the TensorFlow error of a running
pipeline.

Example:
    >>> from keras_seg import data
    >>> ds = data.pipeline(data.load("voc2012", "train", "/data"), True, (512, 512), 8, seed=0)
    >>> data.info("voc2012").class_names[:3]
    ('background', 'aeroplane', 'bicycle')
"""

from keras_seg.data import synthetic
from keras_seg.data.check import IMAGE_SUFFIXES
from keras_seg.data.datasets import colorize
from keras_seg.data.datasets import info
from keras_seg.data.datasets import load
from keras_seg.data.datasets import names
from keras_seg.data.datasets import option_names
from keras_seg.data.errors import DataError
from keras_seg.data.errors import data_error_from
from keras_seg.data.info import IGNORE_LABEL
from keras_seg.data.info import DatasetInfo
from keras_seg.data.pipeline import pipeline

__all__ = [
    "IGNORE_LABEL",
    "IMAGE_SUFFIXES",
    "DataError",
    "DatasetInfo",
    "colorize",
    "data_error_from",
    "info",
    "load",
    "names",
    "option_names",
    "pipeline",
    "synthetic",
]
