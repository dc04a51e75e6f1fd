"""The data benchmark's generated VOC-like layout is what the readers expect."""

import numpy as np
from PIL import Image

import keras_seg.data as data
from keras_seg.benchmarks.data import make_voc_like
from keras_seg.benchmarks.data import markdown_table
from tests.data import fixtures as fx


def test_generated_layout_loads_and_table_renders(tmp_path):
    make_voc_like(tmp_path, 2, size=(30, 40))
    mask_file = tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2012_000000.png"
    with Image.open(mask_file) as mask_png:
        assert mask_png.mode == "P"  # palette PNGs, as in VOC
    train = fx.as_numpy(data.load("voc2012", "train", tmp_path))
    assert [m.shape for _, m in train] == [(30, 40), (30, 40)]
    assert set(np.unique(np.concatenate([m.ravel() for _, m in train]))) <= set(range(5))
    assert len(fx.as_numpy(data.load("voc2012", "val", tmp_path))) == 1
    row = {"source": "raw", "cores": 1}
    row.update(
        {s: {"images_per_s": 10.0, "per_core": 10.0} for s in ("decode", "geometry", "full")}
    )
    assert "| raw | 1 | 10.0 | 10.0 | 10.0 | 10.0 |" in markdown_table(
        [row, {"source": "tfds", "cores": 2, "error": "x"}]
    )
