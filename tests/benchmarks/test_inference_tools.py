"""The memory and layer tools behind `keras_seg.layers.convolution.banded_taps`, run as users
run them (a new process each): `tools/inference_peak.py` and
`tools/depthwise_fold_vs_shifted.py --inference`."""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_inference_peak_lists_what_the_call_holds_at_its_peak(tmp_path):
    args = [sys.executable, str(REPO / "tools" / "inference_peak.py"),
            "--row", "deeplabv3plus_resnet50", "--small", "--size", "64", "--batch", "2",
            "--top", "4"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        "built",
        "batch 1, two calls",
        "batch 2, two calls",
    ]
    peak = re.match(r"profiled call: allocator peak (\d+) MiB, (\d+) MiB of it", lines[3])
    assert peak and int(peak[1]) >= int(peak[2]) > 0, lines[3]
    listed = lines[4:]
    assert 1 <= len(listed) <= 4
    sizes = [float(line.split()[0]) for line in listed]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0
    assert all(line.split()[-1] for line in listed)  # the op that made it


def test_depthwise_inference_ab_runs_the_fold_and_the_bands(tmp_path):
    out = tmp_path / "ab.json"
    args = [sys.executable, str(REPO / "tools" / "depthwise_fold_vs_shifted.py"),
            "--inference", "--batch", "1", "--repeats", "1", "--case", "18:32", "6:32",
            "--output", str(out)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["step"] == "inference" and report["dtype"] == "float32"
    assert [(r["rate"], r["size"]) for r in report["results"]] == [(18, 32), (6, 32)]
    for row in report["results"]:
        assert row["fold"]["space_to_batch"] and not row["banded"]["space_to_batch"]
        assert row["fold"]["median_ms"] > 0 and row["banded"]["median_ms"] > 0
    assert round(report["results"][0]["padded_ratio"], 2) == 5.06
