"""`keras-seg benchmark tflite_compare` on a tiny model: interleaved latency per file and thread."""

import json
import sys

from keras_seg.benchmarks import tflite_compare as bench


def test_report_has_a_row_per_file_with_latency_params_and_gflops(tmp_path):
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    argv = ["--models", "segformer", "--small", "--size", "32", "--num-classes", "3"]
    argv += ["--quantize", "none", "int8", "--threads", "1", "2", "--repeats", "2"]
    argv += ["--calibration", "2", "--output", str(out), "--markdown", str(md)]
    assert bench.main(argv) == 0

    report = json.loads(out.read_text())
    assert report["benchmark"] == "tflite_compare"
    assert report["machine"]["cpu_count"] >= 1 and report["versions"]["tensorflow"]
    rows = report["results"]
    assert [(r["label"], r["quantize"]) for r in rows] == [
        ("segformer", "none"),
        ("segformer", "int8"),
    ]
    for row in rows:
        assert "error" not in row and row["params"] > 1000 and row["gflops"] > 0
        assert set(row["latency_ms"]) == {"1", "2"}
        assert all(v > 0 for v in row["latency_ms"].values())
        assert row["latency_spread_ms"]["1"]["repeats"] == 2
    assert "| segformer | keras_seg | int8 |" in md.read_text()


def test_a_failing_kerashub_python_is_one_row_with_its_error(tmp_path):
    args = bench.parse_args(["--models", "segformer", "--quantize", "none"])
    args.kerashub_python = sys.executable  # keras_seg's environment has no keras_hub
    import numpy as np

    rows = bench.export_keras_hub(args, np.zeros((1, 32, 32, 3), "uint8"), tmp_path)
    assert len(rows) == 1 and rows[0]["route"] == "keras_hub"
    assert "file" not in rows[0] and "keras_hub" in rows[0]["error"]
