"""Speed of the model zoo: a thin wrapper over `keras-seg benchmark models`.

Example:
    python tools/bench_models.py --models unet:resnet34 --size 512 --markdown bench_results/models.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from keras_seg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", "models", *sys.argv[1:]]))
