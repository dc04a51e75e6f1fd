"""What is allocated at the peak of one `predict_on_batch` call of a peers row.

In a fresh process (this one; run it once per setting), declared inference-only as `keras-seg
predict` is (`keras_seg.machine.inference_only()`, unless `--not-frozen`), the row's keras_seg
model predicts at 512 (`--size`) batch 1 twice, then at `--batch` twice, then once more under the
TensorFlow profiler. Printed: RSS and TensorFlow's allocator (BFC) figures after each stage,
then the allocations live at that profiled call's peak, largest first, with the op that made
them (`keras_seg.benchmarks.memory.allocation_events`, `live_at_allocator_peak`). Allocations from before the call
(weights, kept filters) count in the allocator's figure, not in the list.

Example (bench_results/perf.md, "Dilated depthwise inference without padded copies"):
    python tools/inference_peak.py --row deeplabv3plus_resnet50 --batch 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout


def main(argv: list[str] | None = None) -> int:
    from keras_seg.benchmarks.peers import ROWS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", choices=sorted(ROWS), default="deeplabv3plus_resnet50")
    p.add_argument("--precision", choices=["float32", "bf16"], default="float32")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=512, help="input height and width")
    p.add_argument("--small", action="store_true", help="the row's ResNet-18 variant (smoke)")
    p.add_argument("--top", type=int, default=25, help="allocations listed")
    p.add_argument("--not-frozen", action="store_true", help="skip inference_only()")
    args = p.parse_args(argv)

    from keras_seg import machine

    if not args.not_frozen:
        machine.inference_only()
    import keras
    import tensorflow as tf

    from keras_seg.benchmarks.common import numpy_batch
    from keras_seg.benchmarks.common import peak_rss_mib
    from keras_seg.benchmarks.memory import allocation_events
    from keras_seg.benchmarks.memory import live_at_allocator_peak
    from keras_seg.benchmarks.peers import _build_keras

    def stage(name: str) -> None:
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
        peak = peak_rss_mib()
        bfc = tf.config.experimental.get_memory_info("CPU:0")
        print(
            f"{name}: RSS {rss:.0f} MiB (peak {peak:.0f}), allocator in use "
            f"{bfc['current'] / 2**20:.0f} MiB (peak {bfc['peak'] / 2**20:.0f})",
            flush=True,
        )

    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if args.precision == "bf16" else "float32"
    )
    keras.utils.set_random_seed(0)
    table = ROWS[args.row]["small"] if args.small else ROWS[args.row]
    model = _build_keras({"library": "keras_seg", "spec": table["keras_seg"], "num_classes": 21})
    stage("built")
    for batch in (1, args.batch):
        x, _ = numpy_batch(batch, args.size, 21, seed=1)
        model.predict_on_batch(x)
        model.predict_on_batch(x)
        stage(f"batch {batch}, two calls")
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        model.predict_on_batch(x)
        tf.profiler.experimental.stop()
        (path,) = Path(logdir).glob("**/*.xplane.pb")
        events = allocation_events(str(path))
    peak, at_peak = live_at_allocator_peak(events)
    held = sum(e["bytes"] for e in at_peak.values()) / 2**20
    print(
        f"profiled call: allocator peak {peak / 2**20:.0f} MiB, {held:.0f} MiB of it made by the call:"
    )
    for event in sorted(at_peak.values(), key=lambda e: -e["bytes"])[: args.top]:
        print(f"  {event['bytes'] / 2**20:7.1f} MiB  {event['region'] or '?':6s}  {event['tf_op']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
