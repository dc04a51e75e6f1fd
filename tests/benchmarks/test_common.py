"""The reproduction command a benchmark writes names the settings it ran under."""

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
