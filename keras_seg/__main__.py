import sys

from keras_seg.cli import main

sys.exit(main())
