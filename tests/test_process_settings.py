"""What `import keras_seg` sets up in a new process before TensorFlow loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import json
import os
{first}
import tensorflow as tf
x = tf.constant([1.0, 2.0]) * 2.0
try:
    # TF's malloc-based CPU allocator keeps no statistics: it raises, or with oneDNN's
    # kernels on (AVX-512 VNNI/BF16, AMX CPUs) it reports zeros; BFC counts the tensor.
    info = tf.config.experimental.get_memory_info("CPU:0")
    bfc = info["current"] > 0
    print(json.dumps({{"bfc": bfc, "limit": os.environ.get("TF_CPU_BFC_MEM_LIMIT_IN_MB")}}))
except ValueError as error:
    print(json.dumps({{"bfc": False, "error": str(error)[:200]}}))
"""


def _probe(first: str, **env: str) -> dict:
    # This pytest process imported keras_seg, which set both: the child must set them itself.
    ours = ("TF_CPU_ALLOCATOR_USE_BFC", "TF_CPU_BFC_MEM_LIMIT_IN_MB")
    environ = {k: v for k, v in os.environ.items() if k not in ours}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(first=first)],
        env=environ | {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""} | env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("first", "env", "bfc"),
    [
        ("import keras_seg", {}, True),  # keras_seg first: TF's BFC allocator on the CPU
        ("import keras_seg", {"TF_CPU_ALLOCATOR_USE_BFC": "false"}, False),  # the user's wins
        ("", {}, False),  # TensorFlow alone: its default (malloc) allocator
    ],
)
def test_cpu_allocator(first, env, bfc):
    answer = _probe(first, **env)
    assert answer["bfc"] is bfc
    if bfc:  # allowed to grow to the machine's memory, not BFC's default 64 GiB
        ram_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        assert int(answer["limit"]) == max(ram_mib, 1 << 16)


@pytest.mark.parametrize(
    ("env", "onednn", "gpu", "flags", "restart"),
    [
        ({}, False, False, {"avx2", "fma"}, True),  # TensorFlow chose Eigen (AVX2-only x86)
        ({"TF_ENABLE_ONEDNN_OPTS": "0"}, False, False, {"avx2"}, False),  # the user chose
        ({"TF_ENABLE_ONEDNN_OPTS": "1"}, True, False, {"avx2"}, False),  # ... or set it on
        ({}, True, False, {"avx2", "avx512_vnni"}, False),  # on already (AVX-512 VNNI, AMX)
        ({}, False, True, {"avx2"}, False),  # a GPU trains
        ({}, False, False, {"sse4_2"}, False),  # not measured without AVX2 (or off x86)
        ({}, False, False, set(), False),  # no /proc/cpuinfo
    ],
)
def test_training_environment_and_the_eigen_note(monkeypatch, env, onednn, gpu, flags, restart):
    from keras_seg import machine

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(machine, "onednn_enabled", lambda: onednn)
    monkeypatch.setattr(machine, "gpu_available", lambda: gpu)
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(flags))
    on = {"TF_ENABLE_ONEDNN_OPTS": "1"} if restart else {}
    assert machine.training_environment("unet", "resnet34") == on
    assert machine.training_environment("deeplabv3plus", "mobilenet_v2") == on
    # Models that trained faster on Eigen's kernels keep them everywhere.
    for model, backbone in [
        ("unet", None),
        ("fcn8s", "vgg16"),
        ("segnet", None),
        ("hrnet", "hrnetv2_w48"),
    ]:
        assert machine.training_environment(model, backbone) == {}, (model, backbone)
        assert machine.eigen_kernels_note(model, backbone) is None
    # ... and those whose lead turns with the step's size keep it below the size.
    small, zoo = 256 * 256 * 2, machine.pixels_per_step(16, [513, 513])
    for model, backbone in [("deeplabv3plus", "mobilenet_v2"), ("pspnet", "resnet50")]:
        assert machine.training_environment(model, backbone, small) == on, (model, backbone)
        assert machine.training_environment(model, backbone, zoo) == {}, (model, backbone)
        assert machine.eigen_kernels_note(model, backbone, zoo) is None
    assert machine.training_environment("unet", "resnet34", zoo) == on  # no size limit
    assert machine.training_environment("deeplabv3plus", "resnet50", zoo) == on
    assert machine.training_environment("unet", None, 1) == {}
    # The note is for training in a process that setting could not reach (Python's `train`).
    note = machine.eigen_kernels_note("unet", "resnet34")
    assert (note is not None) is restart
    if restart:
        assert "TF_ENABLE_ONEDNN_OPTS=1" in note and note.startswith("note: ")


def test_pixels_per_step_and_the_size_limits():
    from keras_seg import machine

    assert machine.pixels_per_step(4, [256, 512]) == 4 * 256 * 512
    assert machine.pixels_per_step(4, None) is None
    mobilenet = machine.EIGEN_TRAINS_FASTER["deeplabv3plus"]["mobilenet_v2"]
    assert machine.onednn_trains_faster("deeplabv3plus", "mobilenet_v2", mobilenet - 1)
    assert not machine.onednn_trains_faster("deeplabv3plus", "mobilenet_v2", mobilenet)
    # Not known: only the models that train faster on Eigen at every size say no.
    assert machine.onednn_trains_faster("deeplabv3plus", "mobilenet_v2", None)
    assert not machine.onednn_trains_faster("segnet", None, None)
    assert machine.onednn_trains_faster("segformer", "mit_b0", 10**9)


@pytest.mark.parametrize(
    ("config", "overrides", "restart"),
    [
        ("unet_isbi2012", ["data.crop_size=[64, 64]"], False),  # the paper's U-Net: Eigen
        ("pspnet_resnet50_voc2012aug", ["data.crop_size=[64, 64]", "train.batch_size=2"], True),
        ("pspnet_resnet50_voc2012aug", [], False),  # the config's own step: 512 batch 16
        ("deeplabv3plus_mobilenetv2_voc2012aug", ["train.batch_size=1"], True),  # 513 batch 1
        ("deeplabv3plus_resnet50_cityscapes", [], True),  # no size limit
    ],
)
def test_cli_restart_follows_the_configs_model_and_step(
    tmp_path, monkeypatch, config, overrides, restart
):
    """`keras-seg train` decides on the config's model and its step (batch x crop), as
    loaded with the command line's overrides, before anything is built."""
    import argparse

    from keras_seg import cli
    from keras_seg import machine

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    monkeypatch.setattr(machine, "onednn_enabled", lambda: False)  # an AVX2-only x86
    monkeypatch.setattr(machine, "gpu_available", lambda: False)
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset({"avx2"}))
    started = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(env))
    path = str(REPO / "zoo_configs" / f"{config}.yaml")
    cli._restart_for_training(argparse.Namespace(config=path, overrides=overrides))
    assert [env.get("TF_ENABLE_ONEDNN_OPTS") for env in started] == (["1"] if restart else [])


def test_cpu_flags_reads_every_flags_line(tmp_path):
    from keras_seg.machine import cpu_flags

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n\nflags\t\t: avx2 sse4_2\n")
    assert cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "fma", "sse4_2"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()
