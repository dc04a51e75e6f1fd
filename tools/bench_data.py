"""Speed of the training input pipeline: a thin wrapper over `keras-seg benchmark data`.

Example:
    python tools/bench_data.py --images 100 --cores 1 2 --output bench_results/data.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from keras_seg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", "data", *sys.argv[1:]]))
