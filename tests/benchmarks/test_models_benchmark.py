"""`keras-seg benchmark models` on tiny models: the report has sane figures and a row per model."""

import json

import keras
import pytest

from keras_seg.benchmarks import models as bench

TINY = ["--small", "--size", "32", "--batch-sizes", "1", "2", "--train-size", "32"]
TINY += ["--train-batch-size", "2", "--repeats", "1", "--matmul-size", "128"]


def _positive(value) -> bool:
    return isinstance(value, int | float) and value > 0


def test_report_has_machine_versions_and_positive_figures(tmp_path):
    out, md, readme = tmp_path / "m.json", tmp_path / "m.md", tmp_path / "README.md"
    readme.write_text(f"# x\n{bench.README_BEGIN}\nold\n{bench.README_END}\nafter\n")
    # In-process and without TFLite to stay fast; the worker and TFLite have their own tests.
    argv = ["--models", "unet", "fcn32s", "--no-isolate", "--no-tflite", "--output", str(out)]
    assert bench.main([*argv, *TINY, "--markdown", str(md), "--readme", str(readme)]) == 0

    report = json.loads(out.read_text())
    assert report["benchmark"] == "models"
    assert report["machine"]["cpu_count"] >= 1
    assert report["versions"]["tensorflow"] and report["versions"]["keras"]
    assert report["settings"]["size"] == 32 and report["settings"]["batch_sizes"] == [1, 2]
    peak = report["results"]["matmul_peak"]
    assert _positive(peak["float32"]) and _positive(peak["bfloat16"])
    rows = report["results"]["models"]
    assert [row["label"] for row in rows] == ["unet", "fcn32s"]
    for row in rows:
        assert row["params"] >= row["trainable_params"] > 1000
        assert all(_positive(row[k]) for k in ("gflops", "gflops_train_size", "peak_rss_mib"))
        assert set(row["inference"]) == {"1", "2"}
        assert all(_positive(v["images_per_s"]) for v in row["inference"].values())
        assert _positive(row["training"]["images_per_s"])
        achieved = row["achieved"]
        expected = row["gflops"] * row["inference"]["2"]["images_per_s"]
        assert achieved["inference_gflop_s"]["2"] == pytest.approx(expected)
        assert achieved["training_fraction_of_peak"] > 0

    table = md.read_text()
    body = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0] for line in body] == ["| unet", "| fcn32s"]
    assert "infer img/s bs2" in table and "matmul peak" in table
    assert readme.read_text() == f"# x\n{bench.README_BEGIN}\n{table}{bench.README_END}\nafter\n"

    # With TFLite figures the table gains their column.
    report["settings"]["tflite"] = True
    for row in rows:
        row["tflite"] = {"latency_ms": 12.5}
    assert "TFLite ms @32" in bench.markdown_table(report)
    assert "| 12.5 |" in bench.markdown_table(report)


def test_tflite_latency_of_a_builtin_ops_model():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs))
    timing = bench.tflite_latency(model, size=32, threads=2, repeats=2)
    assert timing["repeats"] == 2
    assert timing["latency_ms"] > 0 and 0 < timing["size_mb"] < 0.1


def test_isolated_worker_reports_its_own_peak_memory():
    settings = vars(bench.build_parser().parse_args(TINY + ["--train-batch-size", "0"]))
    settings["tflite"] = False
    row = bench._run_isolated(bench.parse_entry("unet", None, {}), settings)
    assert "error" not in row, row.get("error")
    assert _positive(row["peak_rss_inference_mib"]) and "training" not in row
    assert _positive(row["inference"]["1"]["images_per_s"])


def test_entries_take_a_backbone_and_kwargs():
    entry = bench.parse_entry("unet:resnet34", None, {"unet": {"dropout": 0.1}})
    assert entry == {
        "model": "unet",
        "backbone": "resnet34",
        "kwargs": {"dropout": 0.1},
        "label": "unet:resnet34",
    }
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        bench.parse_entry("nope", None, {})


def test_bad_sizes_are_refused():
    with pytest.raises(SystemExit, match="--size must be >= 1, got 0"):
        bench.main(["--size", "0"])


def test_merge_keeps_earlier_rows_with_their_dates_and_refuses_other_settings(tmp_path):
    out = tmp_path / "m.json"
    argv = ["--no-isolate", "--no-tflite", "--no-flops", "--output", str(out), *TINY]
    assert bench.main(["--models", "unet", "fcn32s", *argv]) == 0
    first = json.loads(out.read_text())
    earlier = {row["label"]: row for row in first["results"]["models"]}
    assert bench.main(["--models", "fcn32s", "segnet", "--merge", *argv]) == 0
    merged = json.loads(out.read_text())["results"]["models"]
    assert [row["label"] for row in merged] == ["unet", "fcn32s", "segnet"]
    assert merged[0]["inference"] == earlier["unet"]["inference"]  # kept as measured
    assert merged[0]["date"] == earlier["unet"]["date"]
    assert merged[1]["inference"] != earlier["fcn32s"]["inference"]  # measured again
    payload = json.loads(out.read_text())
    table = bench.markdown_table(payload)
    assert "peak RSS MiB infer" in table and "peak RSS MiB train" in table
    # Rows of another day keep their run's matmul peak; the table says which is which.
    payload["results"]["models"][0].update(
        date="2026-01-01T00:00:00+00:00", matmul_peak={"float32": 7.0, "bfloat16": 9.0}
    )
    table = bench.markdown_table(payload)
    assert "measured" in table.splitlines()[0] and "| 2026-01-01 |" in table
    assert "matmul peak 7 GFLOP/s float32, 9 bfloat16 (rows of 2026-01-01)" in table
    with pytest.raises(SystemExit, match=r"--merge: .* size=32 \(now 48\)"):
        bench.main(["--models", "unet", "--merge", *argv, "--size", "48"])
