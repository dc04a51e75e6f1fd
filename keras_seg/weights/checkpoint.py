"""Read a checkpoint (file, Hugging Face folder or `hf://` handle) into numpy arrays.

Sources:
- a file: `.safetensors` (read without torch), `.pth` / `.pt` / `.bin` (a PyTorch state dict,
  read with `torch.load(weights_only=True)`; training checkpoints that wrap it under
  "state_dict" / "model" are unwrapped, and DataParallel's "module." prefix is dropped);
- a folder as the Hugging Face hub lays it out: `config.json` (optional) beside
  `model.safetensors` or `pytorch_model.bin` (or a single checkpoint file);
- `hf://owner/repo[@revision]`: that folder, downloaded with `huggingface_hub`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_PREFIX = "hf://"
# Files a hub folder keeps its weights in, in order of preference.
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pth")
# Keys under which training scripts wrap the state dict.
_WRAPPERS = ("state_dict", "model_state_dict", "model")


class WeightsError(ValueError):
    """A checkpoint that can't be read or doesn't fit the model; the message is one line."""


@dataclass
class Checkpoint:
    """`source` as given; `path`: the local file or folder it was read from (a hub handle's
    download); `tensors`: key -> float32 array (PyTorch layout); `config`: config.json."""

    source: str
    path: str
    tensors: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)


def is_checkpoint_source(weights: Any) -> bool:
    """True for the sources this module reads (not None, "imagenet" or a Keras `.h5` file)."""
    if not isinstance(weights, str | os.PathLike):
        return False
    text = os.fspath(weights)
    if text.startswith(HUB_PREFIX) or text.lower().endswith(CHECKPOINT_SUFFIXES):
        return True
    return Path(text).is_dir()


def read_checkpoint(source: str | os.PathLike) -> Checkpoint:
    """Read `source` (see the module docstring).

    Raises:
        WeightsError: missing file, unknown format, unreadable file, or a hub handle that
            could not be downloaded (the message says what to download and where to put it).
    """
    text = os.fspath(source)
    path = _download(text) if text.startswith(HUB_PREFIX) else Path(text)
    if not path.exists():
        raise WeightsError(f"{text}: no such checkpoint file or folder")
    config: dict[str, Any] = {}
    local = str(path)
    if path.is_dir():
        config = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
        path = _folder_weights(path, text)
    if not path.name.lower().endswith(CHECKPOINT_SUFFIXES):
        raise WeightsError(
            f"{path}: not a checkpoint; expected one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    tensors = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    if not tensors:
        raise WeightsError(f"{path}: the checkpoint holds no tensors")
    return Checkpoint(text, local, tensors, config)


def _folder_weights(folder: Path, text: str) -> Path:
    for name in FOLDER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.name.lower().endswith(CHECKPOINT_SUFFIXES))
    if len(found) == 1:
        return found[0]
    raise WeightsError(
        f"{text}: expected {' or '.join(FOLDER_WEIGHTS)} (or a single checkpoint file) in the "
        f"folder, found {[p.name for p in found] or 'none'}"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not readable JSON: {e}") from None
    if not isinstance(value, dict):
        raise WeightsError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightsError(
            f"{path}: reading .safetensors needs the safetensors package "
            "(pip install 'keras-seg[convert]')"
        ) from None
    tensors = {}
    try:
        # numpy has no bfloat16; the flax/pt frameworks would pull in jax/torch, so bfloat16
        # files go through torch when it is there.
        with safe_open(str(path), framework="numpy") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except TypeError:
        return _read_torch(path, safetensors=True)
    except Exception as e:  # safetensors raises its own SafetensorError for a bad header
        raise WeightsError(f"{path}: not a readable safetensors file: {e}") from None
    return {k: _float32(v) for k, v in tensors.items()}


def _read_torch(path: Path, safetensors: bool = False) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{path}: reading a PyTorch checkpoint needs torch (pip install torch), or convert "
            "it to .safetensors where torch is installed"
        ) from None
    try:
        if safetensors:
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean an unreadable file here
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint: {e}") from None
    for wrapper in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise WeightsError(
            f"{path}: expected a state dict (key -> tensor), got {type(state).__name__}; save "
            "model.state_dict(), not the model"
        )
    tensors = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            key = key[len("module.") :] if key.startswith("module.") else key
            tensors[key] = value.detach().to(torch.float32).numpy()
    return tensors


def _float32(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def _download(handle: str) -> Path:
    repo = handle[len(HUB_PREFIX) :]
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise WeightsError(f"{handle}: expected hf://owner/name[@revision]")
    where = (
        f"download config.json and model.safetensors (or pytorch_model.bin) from "
        f"https://huggingface.co/{repo} into a folder and pass that folder instead"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise WeightsError(
            f"{handle}: hub handles need huggingface_hub (pip install 'keras-seg[convert]'); "
            f"or {where}"
        ) from None
    try:
        folder = snapshot_download(
            repo,
            revision=revision or None,
            allow_patterns=["*.json", *(f"*{suffix}" for suffix in CHECKPOINT_SUFFIXES)],
        )
    except Exception as e:  # offline, unknown repo, gated repo: the remedy is the same
        raise WeightsError(
            f"{handle}: could not download from the Hugging Face hub ({type(e).__name__}); {where}"
        ) from None
    return Path(folder)
