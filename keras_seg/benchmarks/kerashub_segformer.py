"""Export keras-hub's SegFormer-B0 (random weights) to TFLite through keras-hub's own path.

Run in an interpreter that has keras-hub (not keras_seg's environment; presets need a
download, so the model is built from its classes with the MiT-B0 settings of keras-hub's
`mit_b0_ade20k_512` preset). Prints one JSON line: the file, the parameter count, the
seconds the export took, or the one-line error. Imports nothing from keras_seg, so the
keras-hub environment needs only keras-hub, TensorFlow and LiteRT.

    python keras_seg/benchmarks/kerashub_segformer.py --output /tmp/kh.tflite --size 512
"""

from __future__ import annotations

import argparse
import json
import time

# MiT-B0 as keras-hub's mit_b0 presets (config.json of kaggle://keras/mit/keras/mit_b0_*).
MIT_B0 = {
    "layerwise_depths": [2, 2, 2, 2],
    "num_layers": 4,
    "layerwise_num_heads": [1, 2, 5, 8],
    "layerwise_sr_ratios": [8, 4, 2, 1],
    "max_drop_path_rate": 0.1,
    "layerwise_patch_sizes": [7, 3, 3, 3],
    "layerwise_strides": [4, 2, 2, 2],
    "hidden_dims": [32, 64, 160, 256],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", required=True)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument(
        "--calibration",
        help="uint8 images [N, H, W, 3] (.npy): full-integer int8 through the converter options "
        "that model.export passes on (optimizations, representative_dataset, int8 ops)",
    )
    args = p.parse_args()
    result: dict = {"route": "keras_hub", "file": args.output}
    try:
        import keras
        import keras_hub

        result["keras_hub"] = keras_hub.__version__
        result["keras"] = keras.__version__
        encoder = keras_hub.models.MiTBackbone(image_shape=(args.size, args.size, 3), **MIT_B0)
        backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=256)
        model = keras_hub.models.SegFormerImageSegmenter(
            backbone=backbone, num_classes=args.num_classes
        )
        result["params"] = model.count_params()
        start = time.perf_counter()
        options = {}
        if args.calibration:
            import numpy as np
            import tensorflow as tf

            # keras-hub's preprocessor scales to 0..1 and ImageNet-normalises; calibrate on that.
            mean = np.array([0.485, 0.456, 0.406], "float32")
            std = np.array([0.229, 0.224, 0.225], "float32")
            images = (np.load(args.calibration).astype("float32") / 255.0 - mean) / std
            options = {
                "optimizations": [tf.lite.Optimize.DEFAULT],
                "representative_dataset": lambda: ([x[None]] for x in images),
                "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            }
            result["quantize"] = "int8"
        model.export(args.output, format="litert", verbose=False, **options)
        result["export_s"] = time.perf_counter() - start
        result["succeeded"] = True
    except Exception as e:  # the JSON says what failed, in one line
        result["succeeded"] = False
        result["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
