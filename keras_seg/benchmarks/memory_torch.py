"""The PyTorch worker of `keras-seg benchmark memory`, run by path (never next to TensorFlow).

    python -I memory_torch.py JOB_JSON

Builds the job's SMP model (random weights, seed 0), records which tensors autograd keeps
for the backward pass of one training forward (`torch.autograd.graph.saved_tensors_hooks`;
each storage once, parameters and the batch itself excluded), then runs `--steps` SGD (momentum 0.9) steps and
prints one JSON line: the kept MiB by the kind of node that keeps them, and RSS before and
after the steps.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import sys
from pathlib import Path


def _common():
    path = Path(__file__).resolve().with_name("common.py")
    spec = importlib.util.spec_from_file_location("keras_seg_bench_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def main(argv: list[str]) -> int:
    import segmentation_models_pytorch as smp
    import torch

    job = json.loads(argv[0])
    common = _common()
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    spec = job["spec"]
    model = getattr(smp, spec["class"])(
        encoder_weights=None, classes=job["num_classes"], **spec["kwargs"]
    )
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    x, y = common.numpy_batch(job["batch"], job["size"], job["num_classes"], seed=1)
    x, y = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)
    built = _rss_mib()

    excluded = {t.untyped_storage().data_ptr() for t in (*model.parameters(), x, y)}
    kept: dict[int, tuple[str, int]] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        node = type(tensor.grad_fn).__name__ if tensor.grad_fn is not None else "no grad_fn"
        if storage.data_ptr() not in excluded:
            kept.setdefault(storage.data_ptr(), (node, storage.nbytes()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    by_kind: collections.Counter = collections.Counter()
    for node, nbytes in kept.values():
        by_kind[node] += nbytes / 2**20
    for _ in range(job["steps"] - 1):
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    result = {
        "kept_for_gradient_mib": sum(by_kind.values()),
        "kept_by_kind_mib": dict(by_kind.most_common()),
        "kept_tensors": len(kept),
        "rss_built_mib": built,
        "rss_after_steps_mib": _rss_mib(),
        "peak_rss_mib": common.peak_rss_mib(),
        "versions": {"torch": torch.__version__, "segmentation-models-pytorch": smp.__version__},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
