"""Pixel normalisation inside the model, so training, SavedModel and TFLite see the same pixels.

Models take float pixels in 0..255 (RGB). Each backbone names the normalisation its
pretrained weights expect; these match `keras.applications.*.preprocess_input`.
"""

from __future__ import annotations

import keras
from keras import ops

# name -> (mean, std, reverse channels to BGR). Values are per channel in 0..255 pixel units.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...], bool]] = {
    # keras.applications "caffe" mode (VGG16, ResNet50/101): BGR, mean subtracted, no scaling.
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
    # keras.applications "tf" mode (MobileNetV2, Xception): scale to [-1, 1].
    "tf": ((127.5,), (127.5,), False),
    # keras.applications "torch" mode / torchvision ImageNet statistics.
    "torch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), False),
}


@keras.saving.register_keras_serializable(package="keras_seg")
class Normalize(keras.layers.Layer):
    """`(x[..., order] - mean) / std` with a named scheme from `NORMALIZATIONS`.

    A single-value mean/std (the "tf" scheme) applies to any number of channels.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        # The pixels arrive as they are (not cast to a mixed policy's compute dtype): `call`
        # normalises in float32 and casts once.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(f"Unknown normalization {mode!r}; allowed: {sorted(NORMALIZATIONS)}")
        self.mode = mode

    def call(self, x):
        mean, std, bgr = NORMALIZATIONS[self.mode]
        # In float32 (float64 for a float64 layer) whatever the policy, rounded once to
        # the compute dtype at the end, as PyTorch's autocast sees normalised float32
        # pixels. Under mixed_bfloat16 the arithmetic in bfloat16 rounded three times (up
        # to 0.03 off, half a pixel level for the "torch" scheme). The op is faster too
        # (1x512x512x3 on the AMX Xeon: 3.75 ms in bfloat16, 2.48 ms in float32 with the
        # cast), though not measurably the whole model's call (bench_results/perf.md, "Two
        # cheaper ops").
        work = keras.backend.result_type(self.compute_dtype, "float32")  # float64 stays
        x = ops.cast(x, work)
        if bgr:
            # A gather, not `ops.flip`: TF 2.21's int8 converter gives REVERSE_V2's output
            # its own calibrated scale (about [-124, 255] here) although the kernel copies
            # the int8 values unchanged, so every pixel after the flip was wrong by up to
            # 125. GATHER keeps its input's scale.
            x = ops.take(x, list(range(x.shape[-1] - 1, -1, -1)), axis=-1)
        mean = ops.convert_to_tensor(mean, dtype=work)
        std = ops.convert_to_tensor(std, dtype=work)
        return ops.cast((x - mean) / std, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
