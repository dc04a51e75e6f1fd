"""`keras-seg benchmark memory`: what a training step holds, keras_seg against SMP, and why.

For each row of `keras-seg benchmark peers` (the same models, loss, optimizer and batch), two
processes, one per library:

- keras_seg (TensorFlow's BFC allocator on the CPU, `TF_CPU_ALLOCATOR_USE_BFC=true`, so that
  `tf.config.experimental.get_memory_info` reports the peak of the tensors themselves): the
  forward tensors that the gradient of `model.train_step` reads, found in its traced graph
  (each tensor a gradient op reads that the forward pass made; variables and the batch
  excluded), summed by the op that made them; then `--steps` `train_on_batch` calls: the
  allocator's peak above what the model and optimizer hold, and RSS; then one step under the
  TensorFlow profiler, whose allocation events give what is allocated at that step's peak
  (forward outputs, the backward pass's outputs and scratch, the optimizer's temporaries).
- SMP: the tensors autograd keeps for the backward pass (`saved_tensors_hooks`), summed by
  the node that keeps them; then the same steps and RSS (`memory_torch.py`).

"Kept for the gradient" is the part of a step's memory that the architecture's
implementation decides (the rest is gradients, optimizer slots and transients), so the
per-kind table says which layers hold more on one side. RSS growth from the built model to
the last step is what the process pays, allocator and runtime included.

Example:
    keras-seg benchmark memory --output bench_results/memory.json \\
        --markdown bench_results/memory.md
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keras_seg.benchmarks.common import command_line
from keras_seg.benchmarks.common import numpy_batch
from keras_seg.benchmarks.common import one_line
from keras_seg.benchmarks.common import peak_rss_mib
from keras_seg.benchmarks.common import run_worker
from keras_seg.benchmarks.common import write_report
from keras_seg.benchmarks.peers import ROWS

TORCH_WORKER = Path(__file__).resolve().with_name("memory_torch.py")
# Graph inputs, not tensors the forward pass computed.
_NOT_KEPT = {"Placeholder", "Const", "ReadVariableOp", "VarHandleOp", "Shape"}


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def kept_for_gradient(graph, prefixes: Sequence[str]) -> dict[str, Any]:
    """Forward tensors of `graph` that a gradient op reads, MiB by the op type that made them.

    Gradient ops are those `tf.GradientTape` names `gradient_tape/...`; forward ops are those
    under `prefixes` (the model's and the loss's name scopes).
    """
    kept: dict[str, tuple[str, float]] = {}
    for op in graph.get_operations():
        if not op.name.startswith("gradient_tape/"):
            continue
        for tensor in op.inputs:
            made_by = tensor.op
            if (
                made_by.type in _NOT_KEPT
                or made_by.name.startswith("gradient_tape/")
                or not made_by.name.startswith(tuple(prefixes))
                or tensor.name in kept
            ):
                continue
            shape = tensor.shape
            size = (
                shape.num_elements() * tensor.dtype.size / 2**20
                if shape.is_fully_defined()
                else None
            )
            kept[tensor.name] = (made_by.type, size)
    by_kind: collections.Counter = collections.Counter()
    for kind, mib in kept.values():
        by_kind[kind] += mib or 0.0
    return {
        "kept_for_gradient_mib": sum(by_kind.values()),
        "kept_by_kind_mib": dict(by_kind.most_common()),
        "kept_tensors": len(kept),
        # Without a static shape (FusedBatchNormV3's reserve spaces): counted, not sized.
        "unsized_tensors": sorted(name for name, (_, mib) in kept.items() if mib is None),
    }


def allocation_events(xplane_path: str) -> list[dict[str, Any]]:
    """The allocator's `MemoryAllocation` / `MemoryDeallocation` events of a profiler trace,
    in time order: `{event, addr, bytes, in_use, tf_op, region}` (`in_use`: the allocator's
    bytes in use after the event; `bytes`: this allocation's size).

    Read from the trace itself: TensorBoard's `memory_profile` tool keeps one step id, and
    the ops of a `tf.custom_gradient`'s function run under another (for DeepLabV3+ it then
    showed one allocation at the peak)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace.FromString(Path(xplane_path).read_bytes())
    events = []
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name not in ("MemoryAllocation", "MemoryDeallocation"):
                    continue
                stats = {}
                for stat in event.stats:
                    key = plane.stat_metadata[stat.metadata_id].name
                    ref = plane.stat_metadata[stat.ref_value].name if stat.ref_value else ""
                    stats[key] = stat.str_value or ref or stat.int64_value or stat.uint64_value
                events.append(
                    {
                        "time_ps": line.timestamp_ns * 1000 + event.offset_ps,
                        "event": "free" if name == "MemoryDeallocation" else "alloc",
                        "addr": stats.get("addr"),
                        "bytes": int(stats.get("allocation_bytes") or 0),
                        "in_use": int(stats.get("bytes_allocated") or 0),
                        "tf_op": str(stats.get("tf_op") or ""),
                        "region": str(stats.get("region_type") or ""),
                    }
                )
    return sorted(events, key=lambda e: e["time_ps"])


def live_at_allocator_peak(events: Sequence[dict[str, Any]]) -> tuple[int, dict[Any, dict]]:
    """`(bytes, live)`: the allocator's bytes in use at its fullest during `events` (-1 if
    none) and the allocation events of `events` still held then, by address."""
    live: dict[Any, dict[str, Any]] = {}
    peak, at_peak = -1, {}
    for event in events:
        if event["event"] == "alloc":
            live[event["addr"]] = event
        else:
            live.pop(event["addr"], None)
        if event["in_use"] > peak:
            peak, at_peak = event["in_use"], dict(live)
    return peak, at_peak


def live_at_peak(events: Sequence[dict[str, Any]], model_name: str, optimizer_name: str) -> dict:
    """What the step allocated and still held when the allocator was fullest: MiB by where it
    was made (`forward`: the model's ops, `backward`: `gradient_tape/`, `optimizer`, `other`:
    e.g. a custom gradient's recomputation), its region (an op's `output` or its `temp`
    scratch) and the op (the last part of its name, e.g. `Conv2DBackpropFilter`), largest
    first. Allocations from before the trace are in `allocator_in_use_at_peak_mib` only."""
    peak, at_peak = live_at_allocator_peak(events)
    kinds: collections.Counter = collections.Counter()
    for event in at_peak.values():
        name = event["tf_op"]
        if name.startswith("gradient_tape/"):
            phase = "backward"
        elif name.startswith((f"{model_name}_", f"{model_name}/")):
            phase = "forward"
        elif name.lower().startswith(f"{optimizer_name.lower()}/"):
            phase = "optimizer"
        else:
            phase = "other"
        op = re.sub(r"_\d+$", "", name.rsplit("/", 1)[-1]) or "?"
        kinds[f"{phase} {event['region'] or '?'} {op}"] += event["bytes"] / 2**20
    return {
        "live_at_peak_mib": sum(kinds.values()),
        "allocator_in_use_at_peak_mib": max(peak, 0) / 2**20,
        "live_at_peak_by_kind_mib": dict(kinds.most_common()),
    }


def _profiled_step(model, x, y) -> dict[str, Any]:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        model.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        (path,) = Path(logdir).glob("**/*.xplane.pb")
        events = allocation_events(str(path))
    live = live_at_peak(events, model.name, model.optimizer.name)
    if not live["live_at_peak_by_kind_mib"]:
        raise RuntimeError("the profiler's trace has no allocation at the step's peak")
    return live


def keras_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The TensorFlow side of one row (run in its own process with the BFC CPU allocator)."""
    import keras
    import tensorflow as tf

    from keras_seg.benchmarks.peers import _build_keras
    from keras_seg.benchmarks.peers import compile_like_peers
    from keras_seg.layers import native_dilated_convolution
    from keras_seg.machine import onednn_enabled

    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    model = _build_keras(
        {"library": "keras_seg", "spec": job["spec"], "num_classes": job["num_classes"]}
    )
    compile_like_peers(model)
    x, y = numpy_batch(job["batch"], job["size"], job["num_classes"], seed=1)
    x, y = tf.constant(x), tf.constant(y.astype("int32"))
    rss_built = _rss_mib()
    traced = tf.function(lambda x, y: model.train_step((x, y)), autograph=False)
    graph = traced.get_concrete_function(x, y).graph
    result = kept_for_gradient(graph, [f"{model.name}_", f"{model.name}/", "compile_loss"])
    model.optimizer.build(model.trainable_variables)
    held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    for _ in range(job["steps"]):
        model.train_on_batch(x, y)
    info = tf.config.experimental.get_memory_info("CPU:0")
    rss_after_steps, peak_rss = _rss_mib(), peak_rss_mib()  # before the profiler's buffers
    return (
        result
        | _profiled_step(model, x, y)
        | {
            "allocator_held_mib": held / 2**20,
            "allocator_step_peak_mib": (info["peak"] - held) / 2**20,
            "rss_built_mib": rss_built,
            "rss_after_steps_mib": rss_after_steps,
            "peak_rss_mib": peak_rss,
            "onednn": onednn_enabled(),
            "native_dilated_convolution": native_dilated_convolution(),
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        }
    )


def _run(command: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    out = run_worker(command, env, f"keras-seg benchmark memory: the {what} worker failed")
    return json.loads(out.strip().splitlines()[-1])


def measure_row(args, row: str) -> dict[str, Any]:
    table = ROWS[row]["small"] if args.small else ROWS[row]
    job = {
        "num_classes": args.num_classes,
        "batch": args.batch,
        "size": args.size,
        "steps": args.steps,
        "threads": args.threads,
    }
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    keras_job = json.dumps(job | {"spec": table["keras_seg"]})
    from keras_seg.machine import pixels_per_step  # what `keras-seg train` runs with
    from keras_seg.machine import training_environment

    spec, pixels = table["keras_seg"], pixels_per_step(args.batch, [args.size] * 2)
    ours = _run(
        [sys.executable, "-m", "keras_seg.benchmarks.memory", "--worker", keras_job],
        env
        | {"TF_CPU_ALLOCATOR_USE_BFC": "true"}
        | training_environment(spec["model"], spec.get("backbone"), pixels),
        "keras_seg",
    )
    theirs = _run(
        [args.torch_python, "-I", str(TORCH_WORKER), json.dumps(job | {"spec": table["smp"]})],
        env,
        "SMP",
    )
    for side in (ours, theirs):
        side["rss_growth_mib"] = side["rss_after_steps_mib"] - side["rss_built_mib"]
    return {
        "row": row,
        "title": ROWS[row]["title"] + (" (small)" if args.small else ""),
        "keras_seg": ours,
        "smp": theirs,
        "kept_ratio": ours["kept_for_gradient_mib"] / theirs["kept_for_gradient_mib"],
        "rss_growth_ratio": ours["rss_growth_mib"] / theirs["rss_growth_mib"],
    }


def markdown(payload: dict[str, Any]) -> str:
    s = payload["settings"]
    lines = [
        f"{payload['date']}, {payload['machine'].get('cpu_model')} "
        f"({payload['machine'].get('cpu_count')} cores); float32, {s['size']}x{s['size']} "
        f"batch {s['batch']}, {s['steps']} steps; `{s['command']}`",
        "",
        "| row | kept for the gradient MiB keras_seg / SMP (ratio) | TF allocator step peak MiB "
        "| RSS growth MiB keras_seg / SMP (ratio) | peak RSS MiB keras_seg / SMP |",
        "|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        k, t = r["keras_seg"], r["smp"]
        lines.append(
            f"| {r['title']} | {k['kept_for_gradient_mib']:.0f} / {t['kept_for_gradient_mib']:.0f}"
            f" ({r['kept_ratio']:.2f}) | {k['allocator_step_peak_mib']:.0f} "
            f"| {k['rss_growth_mib']:.0f} / {t['rss_growth_mib']:.0f} ({r['rss_growth_ratio']:.2f})"
            f" | {k['peak_rss_mib']:.0f} / {t['peak_rss_mib']:.0f} |"
        )
    lines += ["", "Kept for the gradient, MiB by the op (TF) / node (PyTorch) that made it:", ""]
    for r in payload["results"]:
        for side in ("keras_seg", "smp"):
            kinds = r[side]["kept_by_kind_mib"]
            top = ", ".join(f"{k} {v:.0f}" for k, v in list(kinds.items())[:8] if v >= 0.5)
            lines.append(f"- {r['title']}, {side}: {top}")
    lines += [
        "",
        "keras_seg, allocated at TensorFlow's allocator peak of a profiled step (the profiler's "
        "allocation events), MiB by phase, region and op:",
        "",
    ]
    for r in payload["results"]:
        k = r["keras_seg"]
        kinds = k["live_at_peak_by_kind_mib"]
        top = ", ".join(f"{name} {v:.0f}" for name, v in list(kinds.items())[:10] if v >= 0.5)
        lines.append(f"- {r['title']} ({k['live_at_peak_mib']:.0f} in all): {top}")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="keras-seg benchmark memory",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    p.add_argument("--small", action="store_true", help="ResNet-18 rows, thin decoders (smoke)")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--size", type=int, default=256, help="training input size")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="training steps after the first")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    p.add_argument("--torch-python", default=sys.executable, help="a Python with torch and SMP")
    p.add_argument("--output", default="bench_results/memory.json", help="JSON report path")
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.size < 32:
        p.error("--steps and --batch take 1 or more, --size 32 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(keras_worker(json.loads(args.worker))))
        return 0
    results = []
    for row in args.rows:
        try:
            results.append(measure_row(args, row))
        except (OSError, ValueError) as e:
            raise SystemExit(f"keras-seg benchmark memory: {row}: {one_line(e)}") from None
        r = results[-1]
        print(
            f"{r['title']}: kept for the gradient {r['keras_seg']['kept_for_gradient_mib']:.0f} "
            f"/ {r['smp']['kept_for_gradient_mib']:.0f} MiB ({r['kept_ratio']:.2f}), RSS growth "
            f"{r['keras_seg']['rss_growth_mib']:.0f} / {r['smp']['rss_growth_mib']:.0f} MiB "
            f"({r['rss_growth_ratio']:.2f})",
            flush=True,
        )
    settings = {
        "command": command_line("memory", list(argv or sys.argv[1:])),
        **{k: v for k, v in vars(args).items() if k not in ("worker", "output", "markdown")},
    }
    versions = {
        f"smp_{k}": v for k, v in (results[0]["smp"]["versions"].items() if results else [])
    }
    payload = write_report(args.output, "memory", settings, results, versions)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(payload))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
