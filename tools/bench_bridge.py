"""SMP U-Net to TFLite: keras_seg against litert-torch and onnx2tf, a thin wrapper over
`keras-seg benchmark bridge`.

Example:
    python tools/bench_bridge.py --litert-venv /work/venv-litert --onnx2tf-venv /work/venv-onnx2tf
    python tools/bench_bridge.py --quick --routes keras_seg --output /tmp/bridge.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from keras_seg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", "bridge", *sys.argv[1:]]))
