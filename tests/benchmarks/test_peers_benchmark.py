"""`keras-seg benchmark peers`: interleaved samples, the figures derived from them, and the one
line a failing worker gives. The CLI runs as users run it, in a fresh interpreter."""

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from keras_seg.benchmarks import peers
from keras_seg.benchmarks import peers_report
from keras_seg.machine import onednn_enabled
from tests.helpers import onednn_in_training

REPO = Path(__file__).resolve().parents[2]
TINY = ["--small", "--rows", "unet_resnet34", "--precisions", "float32", "--size", "64"]
TINY += ["--train-size", "64", "--rounds", "2", "--iters", "1", "--warmup", "1"]


def _cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "keras_seg", "benchmark", "peers", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_samples_interleave_and_figures_follow_from_them(tmp_path):
    out, md, readme = tmp_path / "peers.json", tmp_path / "peers.md", tmp_path / "README.md"
    readme.write_text("# x\n<!-- benchmark:peers begin -->\nold\n<!-- benchmark:peers end -->\n")
    # --max-rss-ratio 0.01 cannot hold: the command writes every report, then exits 1 with
    # one line naming the first phase over it.
    done = _cli(*TINY, "--cases", "infer_bs1", "train_bs2", "--output", str(out),
                "--markdown", str(md), "--readme", str(readme),
                "--max-rss-ratio", "0.01", "--rss-calls", "2")  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.fullmatch(
        r"keras-seg benchmark peers: unet_resnet34 float32 inference: peak RSS keras_seg \d+ "
        r"MiB / SMP \d+ MiB = [\d.]+, over --max-rss-ratio 0.01 \(1 more such phases\)",
        done.stderr.strip().splitlines()[-1],
    ), done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["benchmark"] == "peers"
    assert report["machine"]["cpu_count"] >= 1
    for package in ("tensorflow", "keras", "torch", "segmentation-models-pytorch", "timm"):
        assert report["versions"][package], package
    assert report["settings"]["rounds"] == 2 and report["settings"]["small"] is True
    results = report["results"]
    assert [(g["phase"], g["precision"]) for g in results["groups"]] == [
        ("inference", "float32"),
        ("training", "float32"),
    ]
    for group in results["groups"]:
        samples = group["samples"]
        # One sample at a time, in the order asked: each ends before the next starts.
        for before, after in zip(samples, samples[1:], strict=False):
            assert before["start"] + before["elapsed_s"] <= after["start"] + 1e-3
        user = peers.USER_PATH[group["phase"]]
        pair = [s["library"] for s in samples if s["path"] in (user, "eager")]
        assert pair == ["keras_seg", "smp", "keras_seg", "smp"]
        assert {s["path"] for s in samples if s["library"] == "keras_seg"} == set(
            peers._paths("keras_seg", group["phase"])
        )
        assert isinstance(group["workers"]["keras_seg"]["tf_onednn"], bool)
        for library, worker in group["workers"].items():
            assert worker["peak_rss_mib"] >= worker["rss_warm"] >= worker["rss_user_path_warm"] > 50
            # Warmed up in order, the user path first: its peak is that of the user path alone.
            keys = list(worker["rss_warm_by_key"])
            first = peers._paths(library, group["phase"])[0]
            user_keys = [k for k in keys if k.endswith("/" + first)]
            assert keys[: len(user_keys)] == user_keys and user_keys
            assert worker["rss_user_path_warm"] == worker["rss_warm_by_key"][user_keys[-1]]
            # --rss-calls 2 for the user path (its figure), --warmup 1 for the others.
            assert worker["warm_calls_by_key"] == {k: 2 if k in user_keys else 1 for k in keys}
            assert worker["params"] > 1e6
        # The same network on both sides (trainable parameters: PyTorch's count).
        assert group["workers"]["keras_seg"]["params"] == group["workers"]["smp"]["params"]
        assert group["workers"]["smp"]["threads"] == report["settings"]["threads"]

    assert [c["case"] for c in results["cases"]] == ["infer_bs1", "train_bs2"]
    for case in results["cases"]:
        ours, smp = case["impls"]["keras_seg"], case["impls"]["smp"]
        for figures in [*ours.values(), *smp.values()]:
            values = figures["images_per_s"]
            assert len(values) == 2 and figures["median"] == statistics.median(values)
            assert figures["spread"] == pytest.approx(
                (max(values) - min(values)) / figures["median"]
            )
        assert case["best_peer"] == "smp"
        peer = smp["eager"]["median"]
        assert case["ratio"] == pytest.approx(ours[case["user_path"]]["median"] / peer)
        assert case["ratio_inner"] == pytest.approx(ours["inner"]["median"] / peer)
    for memory in results["memory"]:
        rss, user = memory["peak_rss_mib"], memory["user_path_rss_mib"]
        assert memory["ratio"] == pytest.approx(rss["keras_seg"] / rss["smp"])
        assert memory["user_path_ratio"] == pytest.approx(user["keras_seg"] / user["smp"])

    table = md.read_text()
    assert "keras-seg benchmark peers --small" in table.splitlines()[0]
    assert "peak after 2 calls of the user path per case" in table
    kernels = {
        True: "oneDNN",
        False: "Eigen (oneDNN off)",
        "frozen": "oneDNN, filters reordered once (TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1)",
    }
    for group in results["groups"]:
        worker = group["workers"]["keras_seg"]
        # The inference worker runs as `keras-seg predict` does (`inference_only()`: in force
        # under oneDNN); training never does.
        frozen = worker["tf_onednn_frozen_weights"]
        assert frozen == (group["phase"] == "inference" and worker["tf_onednn"])
        label = "frozen" if frozen else worker["tf_onednn"]
        assert f"{group['phase']} {kernels[label]}" in table.splitlines()[0]
    if (training := onednn_in_training()) is not None:
        # Training runs with what `keras-seg train` restarts itself with; inference does not.
        onednn = {g["phase"]: g["workers"]["keras_seg"]["tf_onednn"] for g in results["groups"]}
        assert onednn == {"inference": onednn_enabled(), "training": training}
    body = [line for line in table.splitlines() if line.startswith("| U-Net ResNet-34 (--small")]
    assert len(body) == 2 and "infer_bs1 @64" in body[0] and "train_bs2 @64" in body[1]
    assert table in readme.read_text()


def _fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_crashing_worker_gives_one_line_and_a_nonzero_exit(tmp_path):
    python = _fake_python(
        tmp_path, "echo \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 3"
    )
    done = _cli(*TINY, "--cases", "infer_bs1", "--torch-python", python, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert lines == [
        "keras-seg benchmark peers: error: smp worker (unet_resnet34, float32, inference) "
        "exited with code 3 before answering: ModuleNotFoundError: No module named 'torch'"
    ]


def test_a_silent_worker_is_killed_after_the_timeout(tmp_path):
    python = _fake_python(tmp_path, "exec sleep 600")
    done = _cli(
        *TINY, "--cases", "infer_bs1", "--torch-python", python, "--timeout", "3", timeout=120
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("keras-seg benchmark peers: error: not ready within 3.0 s, killed: ")
    assert "smp worker (unet_resnet34, float32, inference)" in last


def test_cases_are_parsed_and_checked():
    cases = peers.parse_cases(["infer_bs4", "train_bs2"], size=512, train_size=256)
    assert cases == {
        "infer_bs4": {"phase": "inference", "batch": 4, "size": 512},
        "train_bs2": {"phase": "training", "batch": 2, "size": 256},
    }
    with pytest.raises(SystemExit, match="infer_bsN or train_bsN.*'infer4'"):
        peers.parse_cases(["infer4"], 64, 64)


def test_the_fastest_peer_is_the_reference():
    def sample(library, path, value):
        return {"library": library, "path": path, "case": "infer_bs1", "images_per_s": value}

    group = {
        "row": "r",
        "title": "R",
        "precision": "bf16",
        "phase": "inference",
        "workers": {
            lib: {"peak_rss_mib": rss, "rss_user_path_warm": rss - 10}
            for lib, rss in [("keras_seg", 300), ("smp", 200), ("keras_hub", 400)]
        },
        "samples": [
            sample("keras_seg", "predict_on_batch", 6.0),
            sample("keras_seg", "inner", 8.0),
            sample("smp", "eager", 3.0),
            sample("keras_hub", "predict_on_batch", 4.0),
            sample("keras_hub", "inner", 99.0),  # not keras-hub's user path: not its figure
        ],
    }
    (case,) = peers_report.summarise([group], peers.USER_PATH, peers.INNER_PATH)["cases"]
    assert case["best_peer"] == "keras_hub"
    assert case["ratio"] == 1.5 and case["ratio_inner"] == 2.0
    assert case["ratio_by_peer"] == {"smp": 2.0, "keras_hub": 1.5}


def test_min_ratio_gate_names_the_first_case_under_it(capsys):
    cases = [
        {"title": "U-Net", "precision": "float32", "case": "infer_bs1", "ratio": 1.4,
         "best_peer": "smp"},
        {"title": "U-Net", "precision": "bf16", "case": "train_bs4", "ratio": 0.8,
         "best_peer": "smp"},
        {"title": "DeepLab", "precision": "bf16", "case": "infer_bs4", "ratio": 0.9,
         "best_peer": "smp"},
    ]  # fmt: skip
    assert peers._check_ratios(cases, [("float32", 1.0)]) == 0
    assert peers._check_ratios(cases, []) == 0
    assert peers._check_ratios(cases, [("float32", 1.0), ("bf16", 0.85)]) == 1
    line = capsys.readouterr().err.strip()
    assert line == (
        "keras-seg benchmark peers: U-Net bf16 train_bs4: keras_seg at 0.80x smp, "
        "under --min-ratio bf16=0.85"
    )
    with pytest.raises(SystemExit):
        peers.build_parser().parse_args(["--min-ratio", "fp64=1"])


def test_max_rss_ratio_gate_reads_the_user_path_figure(capsys):
    def phase(name, user_ratio, worker_ratio):
        return {"row": "unet_resnet34", "precision": "float32", "phase": name,
                "user_path_rss_mib": {"keras_seg": 1000 * user_ratio, "smp": 1000},
                "user_path_ratio": user_ratio, "ratio": worker_ratio}  # fmt: skip

    # The worker's final peak (all paths timed) is not the gate's figure.
    memory = [phase("inference", 0.9, 1.3), phase("training", 1.16, 1.05)]
    assert peers._check_memory(memory, None) == 0
    assert peers._check_memory(memory, 1.2) == 0
    assert capsys.readouterr().err == ""
    assert peers._check_memory(memory, 1.1) == 1
    assert capsys.readouterr().err.strip() == (
        "keras-seg benchmark peers: unet_resnet34 float32 training: peak RSS keras_seg 1160 MiB"
        " / SMP 1000 MiB = 1.16, over --max-rss-ratio 1.1"
    )
    assert peers._check_memory(memory, 0.5) == 1
    assert "(1 more such phases)" in capsys.readouterr().err


def test_the_fit_path_runs_without_the_autotuner():
    """The `fit` samples' dataset carries no tf.data autotuner: with it, deleting the iterator
    at `fit`'s end could wait for the tuner's next wake-up (0.01 s x (2^k - 1)), which timed
    U-Net's 7-8 s of steps as 10.24 s and made oneDNN look 1.6x slower (perf.md)."""
    job = {
        "library": "keras_seg",
        "spec": peers.ROWS["unet_resnet34"]["small"]["keras_seg"],
        "phase": "training",
        "precision": "float32",
        "cases": peers.parse_cases(["train_bs2"], 64, 64),
        "num_classes": 3,
        "tf_threads": None,
        "iters": 2,
    }
    _, calls = peers.keras_setup(job)
    fit, images, _ = calls["train_bs2/fit"]
    (steps,) = fit.__defaults__
    assert steps.options().autotune.enabled is False
    assert steps.cardinality().numpy() == 2 and images == 4
    assert fit().history["loss"][0] > 0  # one fit over both steps
