"""Exports with the pre/post-processing inside: SavedModel (+ TF Serving layout), TFLite, ONNX.

Every export takes raw RGB pixels (or encoded images) and returns class ids and
probabilities. Each exporter checks its export against the Keras model it came from
(`verify`) and refuses it (`ExportMismatch`) when fewer pixels agree than `THRESHOLDS` asks.

Example:
    >>> import keras_seg.export
    >>> keras_seg.export.saved_model(model, "export/sm", class_names=names, palette=palette)
    >>> keras_seg.export.tflite(model, "export/m.tflite", quantize="int8", representative_data=x)
    >>> print(keras_seg.export.verify(model, "export/m.tflite", x_val))
"""

from keras_seg.export.graph import PAD_CLASS
from keras_seg.export.metadata import ExportMetadata
from keras_seg.export.onnx_export import OnnxModel
from keras_seg.export.onnx_export import onnx
from keras_seg.export.saved_model_export import SIGNATURES
from keras_seg.export.saved_model_export import saved_model
from keras_seg.export.saved_model_export import tfserving
from keras_seg.export.tflite_export import QUANTIZATIONS
from keras_seg.export.tflite_export import TFLiteModel
from keras_seg.export.tflite_export import op_names
from keras_seg.export.tflite_export import tflite
from keras_seg.export.verify import THRESHOLDS
from keras_seg.export.verify import ExportMismatch
from keras_seg.export.verify import ParityReport
from keras_seg.export.verify import verify

__all__ = [
    "PAD_CLASS",
    "QUANTIZATIONS",
    "SIGNATURES",
    "ExportMetadata",
    "ExportMismatch",
    "OnnxModel",
    "ParityReport",
    "THRESHOLDS",
    "TFLiteModel",
    "onnx",
    "op_names",
    "saved_model",
    "tflite",
    "tfserving",
    "verify",
]
