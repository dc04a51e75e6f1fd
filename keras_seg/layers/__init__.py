"""Building blocks shared by the models. Every custom layer is registered for serialization."""

from keras_seg.layers.aspp import ASPP_RATES
from keras_seg.layers.aspp import aspp
from keras_seg.layers.blocks import BN_EPSILON
from keras_seg.layers.blocks import BN_MOMENTUM
from keras_seg.layers.blocks import FoldedBatchNorm
from keras_seg.layers.blocks import conv_bn_act
from keras_seg.layers.blocks import logits_head
from keras_seg.layers.blocks import pytorch_batch_norm
from keras_seg.layers.blocks import stride_safe
from keras_seg.layers.convolution import ATROUS_CLASSES
from keras_seg.layers.convolution import AtrousConv2D
from keras_seg.layers.convolution import AtrousDepthwiseConv2D
from keras_seg.layers.convolution import AtrousSeparableConv2D
from keras_seg.layers.convolution import conv2d_class
from keras_seg.layers.convolution import depthwise_space_to_batch
from keras_seg.layers.convolution import keras_dilated_convolution
from keras_seg.layers.convolution import native_dilated_convolution
from keras_seg.layers.convolution import recompute_in_backward
from keras_seg.layers.initializers import BilinearUpsampling
from keras_seg.layers.initializers import torch_conv_fan_in
from keras_seg.layers.initializers import torch_conv_fan_out
from keras_seg.layers.normalization import FusedBatchNorm
from keras_seg.layers.pooling import AdaptiveAveragePooling2D
from keras_seg.layers.pooling import pyramid_pooling
from keras_seg.layers.preprocessing import NORMALIZATIONS
from keras_seg.layers.preprocessing import Normalize
from keras_seg.layers.shape import CropToMatch
from keras_seg.layers.shape import PadToMultiple
from keras_seg.layers.shape import ResizeToMatch
from keras_seg.layers.unpooling import MaxUnpooling2D

__all__ = [
    "ASPP_RATES",
    "BN_EPSILON",
    "BN_MOMENTUM",
    "AdaptiveAveragePooling2D",
    "ATROUS_CLASSES",
    "AtrousConv2D",
    "AtrousDepthwiseConv2D",
    "AtrousSeparableConv2D",
    "BilinearUpsampling",
    "MaxUnpooling2D",
    "NORMALIZATIONS",
    "CropToMatch",
    "FoldedBatchNorm",
    "FusedBatchNorm",
    "Normalize",
    "PadToMultiple",
    "ResizeToMatch",
    "aspp",
    "conv2d_class",
    "depthwise_space_to_batch",
    "keras_dilated_convolution",
    "native_dilated_convolution",
    "recompute_in_backward",
    "pytorch_batch_norm",
    "conv_bn_act",
    "logits_head",
    "pyramid_pooling",
    "stride_safe",
    "torch_conv_fan_in",
    "torch_conv_fan_out",
]
