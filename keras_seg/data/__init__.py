"""Data: readers for VOC 2012 (+SBD), Cityscapes, CamVid, folders and TFDS, augmentation,
and the tf.data training/evaluation pipeline.

Example:
    >>> from keras_seg import data
    >>> ds = data.pipeline(data.load("voc2012", "train", "/data"), True, (512, 512), 8, seed=0)
    >>> data.info("voc2012").class_names[:3]
    ('background', 'aeroplane', 'bicycle')
"""

from keras_seg.data import synthetic
from keras_seg.data.datasets import colorize
from keras_seg.data.datasets import info
from keras_seg.data.datasets import load
from keras_seg.data.datasets import names
from keras_seg.data.errors import DataError
from keras_seg.data.info import IGNORE_LABEL
from keras_seg.data.info import DatasetInfo
from keras_seg.data.pipeline import pipeline

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")

__all__ = [
    "IGNORE_LABEL",
    "DatasetInfo",
    "colorize",
    "info",
    "load",
    "names",
    "pipeline",
    "synthetic",
]
