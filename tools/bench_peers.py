"""keras_seg against segmentation_models.pytorch, interleaved: a thin wrapper over
`keras-seg benchmark peers`.

Example:
    python tools/bench_peers.py --rounds 5 --output bench_results/peers.json \
        --markdown bench_results/peers.md
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from keras_seg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", "peers", *sys.argv[1:]]))
