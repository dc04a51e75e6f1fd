"""`tools/onednn_primitives.py`'s reading of oneDNN's verbose log (the runs need SMP and
minutes, so CI checks the parsing on a log in oneDNN's format)."""

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "onednn_primitives.py"


def _tool():
    spec = importlib.util.spec_from_file_location("onednn_primitives", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_sums_the_logged_step_by_kernel_and_layout():
    tool = _tool()
    conv = (
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,"
        "src:f32::blocked:{layout}::f0 wei:f32:a:blocked:ABcd8b8a::f0,,"
        "alg:convolution_direct,mb4_ic16oc16_ih256oh256kh3sh1dh0ph1_iw256ow256kw3sw1dw0pw1,{ms}"
    )
    log = [
        conv.format(layout="acdb", ms=99.0),  # a warm-up step: before the mark, not counted
        json.dumps({"step_s": 1.5}),
        tool.MARK,
        "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation",
        conv.format(layout="acdb", ms=10.0),
        conv.format(layout="acdb", ms=5.5),
        conv.format(layout="aBcd8b", ms=2.0),
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,"
        "src:f32::blocked:cdba::f0 dst:f32::blocked:ABcd8b8a::f0,,,16x16x3x3,0.25",
        "some other output",
    ]
    step_s, rows = tool.parse("\n".join(log))
    assert step_s == 1.5
    assert rows[0] == {
        "primitive": "convolution",
        "impl": "jit:avx2",
        "prop": "backward_weights",
        "layout": "acdb",
        "count": 2,
        "ms": pytest.approx(15.5),
    }
    assert [(r["layout"], r["count"]) for r in rows[1:]] == [("aBcd8b", 1), ("cdba", 1)]
    assert rows[2]["primitive"] == "reorder" and rows[2]["ms"] == pytest.approx(0.25)


@pytest.mark.parametrize(("phase", "precision"), [("infer", "float32"), ("train", "bf16")])
def test_the_tool_runs_both_libraries_in_new_processes(tmp_path, phase, precision):
    """The tool as users run it, on the smallest inputs: both libraries' processes log
    their convolutions and the report says which phase and precision ran."""
    import subprocess
    import sys

    from keras_seg.machine import cpu_has_native_bfloat16

    if importlib.util.find_spec("segmentation_models_pytorch") is None:  # not imported here:
        pytest.skip("segmentation_models_pytorch is not installed")  # torch beside TF crashes
    report = tmp_path / "primitives.json"
    args = ["--row", "unet_resnet34", "--phase", phase, "--precision", precision]
    args += ["--size", "64", "--batch", "1", "--warmup", "0", "--steps", "1"]
    done = subprocess.run(
        [sys.executable, str(TOOL), *args, "--output", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(report.read_text())
    assert payload["settings"]["phase"] == phase
    assert payload["settings"]["precision"] == precision
    # Without native bfloat16 neither library gives oneDNN its bfloat16 convolutions.
    logs_convolutions = precision == "float32" or cpu_has_native_bfloat16()
    for library in ("keras_seg", "smp"):
        result = payload["results"][library]
        assert result["step_s"] > 0
        if logs_convolutions:
            primitives = {r["primitive"] for r in result["primitives"]}
            assert "convolution" in primitives, (library, primitives)
