"""What every benchmark shares: the reproduction command names its settings; workers fail in one line."""

import pytest

from keras_seg.benchmarks.common import command_line


@pytest.fixture
def environ(monkeypatch):
    for name in ("TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "true")  # keras_seg's own, not named
    return monkeypatch


def test_plain_command(environ):
    assert command_line("peers", ["--rounds", "3"]) == "keras-seg benchmark peers --rounds 3"


def test_settings_that_change_kernels_or_allocator_are_named(environ):
    environ.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    environ.setenv("TF_CPU_ALLOCATOR_USE_BFC", "false")
    assert command_line("memory", ["--small"]) == (
        "TF_ENABLE_ONEDNN_OPTS=1 TF_CPU_ALLOCATOR_USE_BFC=false keras-seg benchmark memory --small"
    )


def test_run_worker_returns_stdout_or_exits_with_the_workers_last_line():
    import sys

    from keras_seg.benchmarks.common import run_worker

    assert run_worker([sys.executable, "-c", "print('ok')"], {}, "unused") == "ok\n"
    failing = [
        sys.executable,
        "-c",
        "import sys; print('noise', file=sys.stderr); sys.exit('bad x')",
    ]
    with pytest.raises(SystemExit, match=r"^demo: the worker failed: bad x$"):
        run_worker(failing, {}, "demo: the worker failed")
