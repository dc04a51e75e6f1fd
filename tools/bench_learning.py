"""Learning speed against segmentation_models.pytorch: a thin wrapper over `keras-seg benchmark isbi`.

Example:
    python tools/bench_learning.py --data-dir /data/isbi2012_membrane --seeds 0 1 2 \
        --output bench_results/isbi.json --markdown bench_results/isbi.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from keras_seg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", "isbi", *sys.argv[1:]]))
