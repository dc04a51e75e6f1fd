"""Run a checkpoint in its reference implementation (PyTorch), for parity checks.

A standalone script, run in its own process by `keras_seg.weights.parity` (never imported
there): torchvision, which timm and segmentation_models.pytorch import, crashes in a process
that has loaded TensorFlow. It imports only torch, numpy and the reference package.

    python reference.py REQUEST.json

REQUEST: {"checkpoint", "library": "torchvision" | "timm" | "smp" | "transformers", "factory",
"kwargs", "compare": "pyramid" | "logits", "inputs": NPZ of normalised NHWC arrays "x0"..,
"outputs": NPZ to write ("y{i}_{level}", NHWC)}. Exit code 3 when the reference package is not
installed. A transformers SegFormer's logits are upsampled to the input size (bilinear,
`align_corners=False`, as its `post_process_semantic_segmentation`), and its pyramid is the
encoder's hidden states as "P2".."P5".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Run as a script, this folder comes first on sys.path, and its `torchvision.py` (our key
# maps) would shadow the real torchvision.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

MISSING_PACKAGE = 3


def randomize(model, seed: int = 0, all_biases: bool = False):
    """Random BatchNorm statistics and affine weights, in eval mode (a parity check of a
    freshly initialised model would otherwise see BatchNorm as the identity); with `all_biases` also random LayerNorm
    weights and Linear / conv biases (transformers initialises those to 1 and 0)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=g)
            module.running_var.uniform_(0.5, 1.5, generator=g)
            module.weight.data.uniform_(0.5, 1.5, generator=g)
            module.bias.data.uniform_(-0.5, 0.5, generator=g)
        elif all_biases and isinstance(module, torch.nn.LayerNorm):
            module.weight.data.uniform_(0.5, 1.5, generator=g)
            module.bias.data.uniform_(-0.5, 0.5, generator=g)
        elif all_biases and isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            if module.bias is not None:
                module.bias.data.uniform_(-0.1, 0.1, generator=g)
    return model.eval()


def construct(library: str, factory: str, kwargs: dict):
    if library == "torchvision":
        import torchvision.models

        return getattr(torchvision.models, factory)(weights=None, **kwargs)
    if library == "timm":
        import timm

        return timm.create_model(factory, pretrained=False, **kwargs)
    if library == "transformers":
        import transformers

        config = transformers.SegformerConfig(**kwargs)
        return getattr(transformers, factory)(config)
    import segmentation_models_pytorch as smp

    return getattr(smp, factory)(encoder_weights=None, **kwargs)


def load(request: dict):
    """The reference model with the checkpoint's weights, in eval mode."""
    import torch

    path = Path(request["checkpoint"])
    if request["library"] == "smp" and path.is_dir() and (path / "config.json").is_file():
        import segmentation_models_pytorch as smp

        return smp.from_pretrained(str(path)).eval()
    if request["library"] == "transformers":
        return _transformers(request, path)
    model = construct(request["library"], request["factory"], request["kwargs"])
    if path.is_dir():
        path = next(p for p in sorted(path.iterdir()) if p.suffix in (".safetensors", ".bin"))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
        state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    return model.eval()


def _transformers(request: dict, path: Path):
    """`from_pretrained`, which maps the saved (legacy) keys onto the modules; a lone weights
    file gets a folder with the config that the request names."""
    import tempfile

    import transformers

    cls = getattr(transformers, request["factory"])
    if path.is_dir():
        return cls.from_pretrained(str(path)).eval()
    with tempfile.TemporaryDirectory() as folder:
        transformers.SegformerConfig(**request["kwargs"]).save_pretrained(folder)
        name = "model.safetensors" if path.suffix == ".safetensors" else "pytorch_model.bin"
        (Path(folder) / name).symlink_to(path.resolve())
        return cls.from_pretrained(folder).eval()


def outputs(model, x, compare: str) -> dict:
    """`{"logits": NCHW}` at the input size, or the pyramid `{"P1": ..}` of `model` on `x`."""
    import torch

    if hasattr(model, "segformer"):  # transformers SegFormer / MiT classifier
        if compare == "logits":
            logits = model(pixel_values=x).logits
            size = tuple(x.shape[2:])
            return {"logits": torch.nn.functional.interpolate(logits, size, mode="bilinear")}
        hidden = model.segformer(x, output_hidden_states=True).hidden_states
        return {f"P{k}": y for k, y in enumerate(hidden, start=2)}
    if compare == "logits":
        return {"logits": model(x)}
    return {f"P{k}": y for k, y in enumerate(pyramid(model, x), start=1)}


def pyramid(model, x) -> list:
    """The five feature levels (strides 2..32) that keras_seg's backbone of `model` returns."""
    import torch

    if hasattr(model, "encoder") and hasattr(model, "segmentation_head"):  # SMP: its encoder
        return model.encoder(x)[1:]
    if hasattr(model, "transition1"):  # timm HRNet: stem conv1 (stride 2), stage 4's branches
        y = model.act1(model.bn1(model.conv1(x)))
        return [y, *model.stages(model.act2(model.bn2(model.conv2(y))))]
    if hasattr(model, "layer1"):  # ResNet (torchvision and timm name it alike)
        act = getattr(model, "act1", None) or model.relu
        y = act(model.bn1(model.conv1(x)))
        levels = [y]
        y = model.maxpool(y)
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            y = stage(y)
            levels.append(y)
        return levels
    if type(model).__name__ == "MobileNetV2":  # torchvision: the blocks' outputs, SMP's indexes
        return _collect(model.features, x, lambda i, m: i in (1, 3, 6, 13, 17))
    if hasattr(model, "conv_stem"):  # timm mobilenetv2_100: after rows 0, 1, 2, 4, 6 of blocks
        y = model.bn1(model.conv_stem(x))  # timm's BatchNormAct2d applies the ReLU6
        return _collect(model.blocks, y, lambda i, m: i in (0, 1, 2, 4, 6))
    if hasattr(model, "features"):  # VGG: after each pool
        return _collect(model.features, x, lambda i, m: isinstance(m, torch.nn.MaxPool2d))
    raise ValueError(f"no feature pyramid for {type(model).__name__}")


def _collect(modules, y, keep) -> list:
    levels = []
    for i, module in enumerate(modules):
        y = module(y)
        if keep(i, module):
            levels.append(y)
    return levels


def run(request: dict) -> None:
    import torch

    model = load(request)
    inputs = np.load(request["inputs"])
    arrays = {}
    for name in sorted(inputs.files):
        i = name[1:]
        t = torch.from_numpy(inputs[name].transpose(0, 3, 1, 2).copy())
        with torch.inference_mode():
            found = outputs(model, t, request["compare"])
        for level, y in found.items():
            arrays[f"y{i}_{level}"] = y.numpy().transpose(0, 2, 3, 1)
    np.savez(request["outputs"], **arrays)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        request = json.load(f)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(MISSING_PACKAGE)
    try:
        run(request)
    except ImportError as e:
        print(f"reference package missing: {e}", file=sys.stderr)
        sys.exit(MISSING_PACKAGE)
