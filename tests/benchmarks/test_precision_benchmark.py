"""`keras-seg benchmark precision` in a new process: two real training runs of a tiny config,
the JSON it writes, and the exit code of its accuracy check."""

import json
import subprocess

import pytest
import yaml

from tests.training.common import CLI
from tests.training.common import TINY
from tests.training.common import cli_env


@pytest.mark.slow
def test_precision_benchmark_compares_two_runs_and_enforces_its_limit(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "precision.json"
    base = [*CLI, "benchmark", "precision", "--config", str(config), "--output", str(out)]
    proc = subprocess.run(base, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    runs = report["results"]["runs"]
    assert [r["precision"] for r in runs] == ["float32", "mixed_bfloat16"]
    for run in runs:
        assert 0 <= run["miou"] <= 1 and run["train_seconds"] > 0
    (row,) = report["results"]["comparison"]["against"]
    assert row["miou_loss_points"] == pytest.approx(100 * (runs[0]["miou"] - runs[1]["miou"]))
    assert row["speedup"] == pytest.approx(runs[0]["train_seconds"] / runs[1]["train_seconds"])
    assert row["holds"] == (row["miou_loss_points"] <= 0.5)
    assert "cpu_model" in report["machine"] and report["versions"]["tensorflow"]

    # A limit no run can meet: the JSON is still written, then one line and exit 1.
    out.unlink()
    proc = subprocess.run(
        [*base, "--max-loss", "-1000", "--precisions", "float32", "float32"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1
    assert out.exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("keras-seg benchmark precision: float32 loses"), proc.stderr
