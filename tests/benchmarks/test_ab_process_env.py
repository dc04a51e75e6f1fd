"""`tools/ab_process_env.py --config`, run as users run it: a zoo config's model trained in
fresh processes under each candidate's environment, with the report it writes."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_config_ab_times_each_candidate_in_its_own_process(tmp_path):
    out = tmp_path / "ab.json"
    args = [sys.executable, str(REPO / "tools" / "ab_process_env.py"),
            "--config", str(REPO / "zoo_configs" / "demo_synthetic.yaml"),
            "--size", "32", "--batch", "1", "--rounds", "2", "--steps", "1", "--warmup", "0",
            "--candidate", "eigen", "TF_ENABLE_ONEDNN_OPTS=0",
            "--candidate", "onednn", "TF_ENABLE_ONEDNN_OPTS=1", "--output", str(out)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    # Interleaved: A, B, A, B, one process each.
    rounds = [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("round")]
    assert rounds == ["round 1 eigen", "round 1 onednn", "round 2 eigen", "round 2 onednn"]
    report = json.loads(out.read_text())
    assert "--config" in report["command"] and "demo_synthetic.yaml" in report["command"]
    assert report["candidates"] == {
        "eigen": ["TF_ENABLE_ONEDNN_OPTS=0"],
        "onednn": ["TF_ENABLE_ONEDNN_OPTS=1"],
    }
    for row in report["results"].values():
        assert len(row["samples"]) == 2
        assert row["median_step_s"] > 0 and row["median_peak_rss_mib"] > 100


def test_a_failing_candidate_is_one_line_and_exit_1(tmp_path):
    args = [sys.executable, str(REPO / "tools" / "ab_process_env.py"),
            "--config", str(tmp_path / "missing.yaml"), "--rounds", "1",
            "--candidate", "eigen", "TF_ENABLE_ONEDNN_OPTS=0"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("ab_process_env: candidate eigen failed:")
    assert "missing.yaml" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
