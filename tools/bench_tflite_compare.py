"""TFLite latency of several models interleaved: a thin wrapper over `keras-seg benchmark tflite_compare`.

Example (issue 11: SegFormer-B0 against DeepLabv3+ MobileNetV2 and keras-hub's SegFormer-B0):
    python tools/bench_tflite_compare.py --models segformer:mit_b0 deeplabv3plus:mobilenet_v2 \\
        --model-kwargs '{"deeplabv3plus": {"output_stride": 16}}' --num-classes 150 --size 512 \\
        --quantize none int8 --threads 1 2 --kerashub-python /work/venv-kerashub/bin/python \\
        --output bench_results/segformer_tflite.json --markdown bench_results/segformer_tflite.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from keras_seg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", "tflite_compare", *sys.argv[1:]]))
