"""Export speed and size: a thin wrapper over `keras-seg benchmark export`.

Example:
    python tools/bench_export.py --models unet fcn8s --size 512 --output bench_results/export.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from keras_seg.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["benchmark", "export", *sys.argv[1:]]))
