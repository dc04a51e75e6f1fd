"""One harness for `.tflite` segmentation files of any origin: inputs, outputs, agreement, latency.

Files made by different converters expect different inputs (NCHW or NHWC; raw pixels or
ImageNet-normalised; float32, uint8 or quantized int8) and give different outputs (logits in
either layout, or keras_seg's `class_map` and `probabilities`). `TFLiteFile` reads that from
the file, prepares a uint8 image accordingly and returns the class map, probabilities and
(when the file has them) logits as NHWC. `measure_files` times every file at every thread
count round-robin in one loop, so a slow phase of the machine hits all of them alike.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from keras_seg.benchmarks import bridge_torch
from keras_seg.console import native_stderr_captured
from keras_seg.export.tflite_export import non_builtin_ops
from keras_seg.export.tflite_export import operators


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class TFLiteFile:
    """A `.tflite` file in one LiteRT interpreter, fed uint8 `[1, H, W, 3]` images.

    Args:
        path: the file.
        threads: interpreter threads (XNNPACK is applied by default).
        normalised: the file expects ImageNet-normalised input (SMP models); else raw
            pixels 0..255 (keras_seg files normalise inside).
        num_classes: to find the logits' channel axis.
    """

    def __init__(self, path: str | Path, threads: int, normalised: bool, num_classes: int):
        from ai_edge_litert.interpreter import Interpreter

        with native_stderr_captured():  # "Created TensorFlow Lite XNNPACK delegate"
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one input, got {len(inputs)}")
        self.input = inputs[0]
        shape = [int(s) for s in self.input["shape"]]
        self.channels_first = shape[1] == 3 and shape[-1] != 3
        self.normalised = normalised
        self.num_classes = num_classes
        outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        signatures = self.interpreter.get_signature_list()
        if signatures:  # named outputs (keras_seg's class_map / probabilities)
            runner = self.interpreter.get_signature_runner(next(iter(signatures)))
            outputs = runner.get_output_details()
        self.outputs = outputs

    def describe_input(self) -> str:
        shape = "x".join(str(int(s)) for s in self.input["shape"])
        scale, zero = self.input["quantization"]
        quant = f" (scale {scale:g}, zero point {zero})" if scale else ""
        layout = "NCHW" if self.channels_first else "NHWC"
        values = (
            "ImageNet-normalised by the caller"
            if self.normalised
            else "raw pixels 0..255, normalised inside"
        )
        return f"{np.dtype(self.input['dtype']).name}{quant} [{shape}] {layout}, {values}"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """uint8 `[1, H, W, 3]` -> what the file's input takes."""
        x = image.astype(np.float32)
        if self.normalised:
            x = (x - bridge_torch.MEAN) / bridge_torch.STD
        if self.channels_first:
            x = x.transpose(0, 3, 1, 2)
        dtype = np.dtype(self.input["dtype"])
        scale, zero = self.input["quantization"]
        if np.issubdtype(dtype, np.integer):
            if scale:
                x = np.round(x / scale) + zero
            info = np.iinfo(dtype)
            x = np.clip(x, info.min, info.max)
        return np.ascontiguousarray(x.astype(dtype))

    def invoke(self, x: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()

    def _tensor(self, details: dict) -> np.ndarray:
        value = self.interpreter.get_tensor(details["index"])
        scale, zero = details["quantization"]
        if scale and np.issubdtype(value.dtype, np.integer):
            value = (value.astype(np.float32) - zero) * scale
        return value

    def results(self) -> dict[str, np.ndarray | None]:
        """`class_map` `[H, W]`, `probabilities` `[H, W, C]` and `logits` (or None) of image 0."""
        if "class_map" in self.outputs:
            probabilities = self._tensor(self.outputs["probabilities"])[0]
            class_map = self._tensor(self.outputs["class_map"])[0]
            return {"class_map": class_map, "probabilities": probabilities, "logits": None}
        candidates = [d for d in self.outputs.values() if len(d["shape"]) == 4]
        if len(candidates) != 1:
            raise ValueError(f"expected one 4-D logits output, got {list(self.outputs)}")
        logits = self._tensor(candidates[0])[0].astype(np.float32)
        if logits.shape[-1] != self.num_classes and logits.shape[0] == self.num_classes:
            logits = logits.transpose(1, 2, 0)
        return {
            "class_map": logits.argmax(-1),
            "probabilities": softmax(logits),
            "logits": logits,
        }


def agreement(file: TFLiteFile, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pixels whose class is PyTorch's, and the largest probability and logit differences."""
    same, prob_diff, logit_diff = [], 0.0, None
    for image, reference in zip(data["images"], data["logits"], strict=True):
        file.invoke(file.prepare(image[None]))
        out = file.results()
        same.append(np.mean(out["class_map"] == reference.argmax(-1)))
        prob_diff = max(prob_diff, float(np.abs(out["probabilities"] - softmax(reference)).max()))
        if out["logits"] is not None:
            diff = float(np.abs(out["logits"] - reference).max())
            logit_diff = max(logit_diff or 0.0, diff)
    return {
        "agreement": float(np.mean(same)),
        "max_abs_prob_diff": prob_diff,
        "max_abs_logit_diff": logit_diff,
    }


def interleaved(runs: list[tuple[TFLiteFile, np.ndarray]], repeats: int, warmup: int):
    """Milliseconds per run: every (file, threads) once per round, the start rotating."""
    for file, x in runs:
        for _ in range(warmup):
            file.invoke(x)
    times: list[list[float]] = [[] for _ in runs]
    for r in range(repeats):
        for k in range(len(runs)):
            i = (r + k) % len(runs)
            file, x = runs[i]
            start = time.perf_counter()
            file.invoke(x)
            times[i].append(1e3 * (time.perf_counter() - start))
    return times


def measure_files(entries: list[dict[str, Any]], workdir: Path, data: dict, args) -> None:
    """Fill each produced file's entry: operators (builtin? float32 or integer inputs?), size,
    input, agreement with PyTorch, latency."""
    runs, slots = [], []
    for entry in entries:
        if not entry["succeeded"]:
            continue
        path = workdir / entry["file"]
        entry["size_bytes"] = path.stat().st_size
        ops = operators(path)
        entry["operator_counts"] = dict(sorted(Counter(f"{n} {t}" for n, t in ops).items()))
        entry["float32_compute_ops"] = sum(
            t == "FLOAT32" and n not in ("QUANTIZE", "DEQUANTIZE") for n, t in ops
        )
        entry["compute_ops"] = sum(n not in ("QUANTIZE", "DEQUANTIZE") for n, _ in ops)
        entry["non_builtin_ops"] = non_builtin_ops(path)
        entry["builtin_only"] = not entry["non_builtin_ops"]
        normalised = entry["route"] != "keras_seg"
        try:
            files = {t: TFLiteFile(path, t, normalised, args.num_classes) for t in args.threads}
            first = files[args.threads[0]]
            entry["input"] = first.describe_input()
            entry.update(agreement(first, data))
        except Exception as e:  # the file converts but does not run here: say so
            entry["run_error"] = bridge_torch.one_line(e)
            continue
        x = first.prepare(data["images"][:1])
        for threads, file in files.items():
            runs.append((file, x))
            slots.append((entry, threads))
    times = interleaved(runs, args.repeats, args.warmup)
    for (entry, threads), values in zip(slots, times, strict=True):
        entry.setdefault("latency_ms", {})[str(threads)] = statistics.median(values)
        entry.setdefault("latency_spread_ms", {})[str(threads)] = {
            "min": min(values),
            "max": max(values),
            "repeats": len(values),
        }
