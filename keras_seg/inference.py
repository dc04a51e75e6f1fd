"""Run a trained model on images: one `Predictor` used by evaluation, prediction, the demo
and the export checks.

`Predictor.scores(image)` gives class scores at the image's original resolution:
  * "whole": one pass over the full image (the models take any size);
  * "sliding": windows of `window` pixels with `overlap`, logits of overlapping windows
    averaged (the image is padded bottom/right when smaller than a window);
  * several `scales` and/or `flip`: each pass's logits are resized back to the image and
    their softmax probabilities averaged (as DeepLab's multi-scale inference does).

`evaluate_run` and `predict_files` are the `keras-seg evaluate` and `keras-seg predict`
commands.

Example:
    >>> run = keras_seg.runs.load_run("runs/unet_voc")
    >>> class_map = Predictor(run.model, run.eval_config).predict(image)   # int [H, W]
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from keras_seg.config import Config
from keras_seg.config import EvalConfig
from keras_seg.data import IMAGE_SUFFIXES
from keras_seg.data import colorize
from keras_seg.fold import FOLD_ONCE_DTYPES
from keras_seg.fold import inference_model
from keras_seg.fold import reduced_policies
from keras_seg.machine import runs_natively
from keras_seg.machine import weights_assumed_frozen
from keras_seg.metrics import ConfusionMatrix
from keras_seg.metrics import format_table
from keras_seg.models.base import SegmentationModel
from keras_seg.runs import ClassInfo
from keras_seg.runs import class_info
from keras_seg.runs import eval_settings
from keras_seg.runs import load_run
from keras_seg.runs import load_split
from keras_seg.tracing import ExactShapes


class Predictor:
    """A model's logits and class scores for images of any size.

    Args:
        model: a segmentation `keras.Model` (pixels 0..255 in, logits out).
        settings: how to predict (`EvalConfig`: mode, window, overlap, scales, flip);
            default one whole pass.
        fold: run a copy of `model` with BatchNorm folded into the convolutions
            (`keras_seg.fold.fold_batch_norm`): the same logits to float32 round-off and
            4-7% less CPU time on U-Net ResNet-34 and DeepLabV3+ ResNet-50
            (bench_results/perf.md). The copy is made
            once, here, so later changes to `model`'s weights are not seen; False runs
            `model` itself.
        freeze: run the copy as one graph whose weights are constants. Under TensorFlow's
            oneDNN kernels a folded convolution whose filter is a variable runs oneDNN's
            im2col + GEMM (`x64:gemm:jit` in `ONEDNN_VERBOSE`), a constant filter the direct
            kernels (`brg_conv_fwd:avx2`). On an AVX2-only EPYC at 512 px, batch 1, under
            oneDNN, U-Net ResNet-34 took 1.00 s per image with variables and 0.39-0.43 s
            frozen, against Eigen's 0.44-0.56 s (frozen or not); the peers command's
            DeepLabV3+ ResNet-50 frozen was 0.53 s against Eigen's 0.65 s in one A/B and
            0.69 s against 0.65 s in the next (a noisy machine). But freezing took 6-8 s
            more than building the unfrozen predictor and its first call, and the process's
            peak RSS rose from 1.1 to 2.9 GiB (U-Net; 1.2 to 3.1 GiB DeepLabV3+; 2026-12-02,
            bench_results/ab_onednn_*_predictor.json and perf.md; for U-Net the conversion
            added 0.7 GiB and the first call 1.1 GiB, for 0.1 GiB of weights: not yet
            traced). Hence off by default: it pays for long evaluations in a process running
            oneDNN, where memory is to spare. Only a copy is frozen (`fold` or a float32
            copy); `fold=False` runs `model` itself. A process that only predicts gets
            the same per-call saving without the copy: `keras_seg.machine.inference_only()`
            (what `keras-seg predict` and `evaluate` declare) has oneDNN reorder each filter
            once and keep it, for one reordered copy of the weights.

    In a process whose weights are frozen (`keras_seg.machine.inference_only`, declared by
    `keras-seg predict` and `evaluate`), a keras_seg model computing natively in bfloat16
    runs its own predict step instead of the copy (`folds_once` is then True): it folds its
    kernels once and keeps them in bfloat16, where the copy's float32 kernels are cast on
    every call. Under oneDNN on the AMX Xeon at 512 batch 1 (2026-12-03,
    bench_results/ab_predictor_own_*_bf16.json): U-Net ResNet-34 0.056 -> 0.045 s a call,
    DeepLabV3+ ResNet-50 0.077 -> 0.066 s, peak RSS within 10 MiB, 0.5 s more before the
    first result (computing the folds). Its logits are then exactly the model's `predict`'s,
    which round the fold to bfloat16 a little differently from the copy's float64 fold.

    A model trained in a mixed precision this machine only emulates (mixed_bfloat16 on a
    CPU without native bfloat16, mixed_float16 without a GPU) runs as a float32 copy with
    the same weights and BatchNorm folded, whatever `fold` says (`float32_copy` is then
    True, `emulated_policies` names them). Emulated, reduced precision gains no speed
    (U-Net ResNet-34 at 512 on an AVX2-only EPYC: 1.04 s per image in mixed_bfloat16,
    1.09 in mixed_float16, 1.05 and 1.03 as the float32 copy) and keeps its rounding; the
    copy computes what the exports compute.
    """

    def __init__(
        self,
        model: keras.Model,
        settings: EvalConfig | None = None,
        fold: bool = True,
        freeze: bool = False,
    ):
        self.model = model
        self.settings = settings or EvalConfig()
        self.emulated_policies = sorted(
            policy for policy in reduced_policies(model) if not runs_natively(policy)
        )
        self.float32_copy = bool(self.emulated_policies)
        dtype = "float32" if self.float32_copy else None
        self.folds_once = fold and not freeze and self._runs_own_predict(model)
        if self.folds_once:
            run = lambda x, training=False: model.predict_step((x,))  # noqa: E731
        elif fold or self.float32_copy:
            run = inference_model(model, dtype)
        else:
            run = model
        # Traced for each input size, the first few exactly (keras_seg.tracing: Grappler
        # fuses more with known shapes), the rest through one relaxed trace.
        self._forward = ExactShapes(lambda x: run(x, training=False))
        self.frozen = freeze and run is not model and self._freeze()

    def _runs_own_predict(self, model: keras.Model) -> bool:
        """Whether to run the model's own predict step instead of a folded copy: for a
        keras_seg model computing natively in a reduced precision in a process whose weights
        are frozen (`keras_seg.machine.inference_only`, what `keras-seg predict` and
        `evaluate` declare). There it folds its kernels once and keeps them in that
        precision (`keras_seg.fold.FOLD_ONCE_DTYPES`), where the copy's float32 kernels are
        cast on every call, and no float32 copy of the weights is made."""
        return (
            isinstance(model, SegmentationModel)
            and not self.float32_copy
            and any(
                keras.DTypePolicy(policy).compute_dtype in FOLD_ONCE_DTYPES
                for policy in reduced_policies(model)
            )
            and weights_assumed_frozen()
        )

    def _freeze(self) -> bool:
        """Replace the forward by one graph with the weights as constants (see `freeze`)."""
        # TensorFlow's own converter (what its TFLite and graph-transform paths use); there is
        # no public API for a frozen ConcreteFunction.
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        spec = tf.TensorSpec([None, None, None, self.channels], tf.float32)
        try:
            concrete = self._forward.relaxed.get_concrete_function(spec)
            frozen = convert_variables_to_constants_v2(concrete)
        except (ValueError, TypeError, NotImplementedError) as error:
            warnings.warn(
                f"{self.model.name!r} not frozen for inference ({type(error).__name__}: "
                f"{error}); running it with variables",
                stacklevel=3,
            )
            return False
        self._forward = lambda x: frozen(x)[0]
        return True

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[-1])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """float32 logits `[B, H, W, C]` of a batch `[B, H, W, channels]` in one pass."""
        out = self._forward(tf.convert_to_tensor(images, tf.float32))
        # asarray, not astype: the outputs are float32 already, and a copy of B x H x W x
        # classes floats cost U-Net ResNet-34 9 ms of its 98 at 512 (bfloat16, AMX Xeon).
        return np.asarray(out.numpy(), np.float32)

    def sliding_logits(self, image: np.ndarray) -> np.ndarray:
        """Logits `[H, W, C]` averaged over overlapping windows of `settings.window`."""
        window = self.settings.window
        if window is None:
            raise ValueError("eval.mode 'sliding' needs eval.window (or data.crop_size)")
        return sliding_logits(
            self.logits, image, window, self.settings.overlap, self.settings.batch_size
        )

    def scores(self, image: np.ndarray) -> np.ndarray:
        """Class scores `[H, W, num_classes]` for one image `[H, W, channels]` (pixels 0..255).

        One pass (one scale, no flip) returns logits; several passes return averaged
        softmax probabilities. Either way `argmax(-1)` is the prediction.
        """
        s = self.settings
        image = np.asarray(image, np.float32)
        h, w = image.shape[:2]
        passes = [(scale, f) for scale in s.scales for f in ([False, True] if s.flip else [False])]
        total = None
        for scale, flip in passes:
            x = image[:, ::-1] if flip else image
            if scale != 1.0:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                x = tf.image.resize(x, size, method="bilinear").numpy()
            logits = self.sliding_logits(x) if s.mode == "sliding" else self.logits(x[None])[0]
            if scale != 1.0:
                logits = tf.image.resize(logits, (h, w), method="bilinear").numpy()
            if flip:
                logits = logits[:, ::-1]
            if len(passes) == 1:
                return logits
            probs = tf.nn.softmax(logits, axis=-1).numpy()
            total = probs if total is None else total + probs
        return total / len(passes)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class ids `int32 [H, W]` for one image."""
        return self.scores(image).argmax(-1).astype(np.int32)


def note_float32_copy(predictor: Predictor) -> None:
    """One line on stdout when the predictor runs a float32 copy of an emulated precision."""
    if predictor.float32_copy:
        print(
            f"the model computes in {', '.join(predictor.emulated_policies)}, which this "
            "machine only emulates; it runs in float32 with the same weights"
        )


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering `0..size` with the last window flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def sliding_logits(
    forward: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    window: Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 4,
) -> np.ndarray:
    """Average the logits of overlapping `window`-sized crops of `image [H, W, C]`.

    `forward` maps a batch of crops to logits (e.g. `Predictor.logits`).
    """
    h, w = image.shape[:2]
    wh, ww = int(window[0]), int(window[1])
    ph, pw = max(h, wh), max(w, ww)
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)))
    sh = max(1, math.ceil(wh * (1 - overlap)))
    sw = max(1, math.ceil(ww * (1 - overlap)))
    boxes = [(y, x) for y in window_starts(ph, wh, sh) for x in window_starts(pw, ww, sw)]
    total = count = None
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        logits = forward(np.stack([image[y : y + wh, x : x + ww] for y, x in chunk]))
        if total is None:
            total = np.zeros((ph, pw, logits.shape[-1]), np.float32)
            count = np.zeros((ph, pw, 1), np.float32)
        for (y, x), out in zip(chunk, logits, strict=True):
            total[y : y + wh, x : x + ww] += out
            count[y : y + wh, x : x + ww] += 1
    return (total / count)[:h, :w]


# --- evaluation --------------------------------------------------------------------------------


def evaluate(
    predictor: Predictor,
    dataset: tf.data.Dataset,
    classes: ClassInfo,
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Confusion-matrix metrics over unbatched `(image, mask)` pairs at original resolution.

    Returns:
        `ConfusionMatrix.result` (per-class IoU, mIoU, pixel accuracy, ...) plus the
        confusion matrix and the prediction settings.
    """
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_label)
    bar = keras.utils.Progbar(max_images, unit_name="image") if progress else None
    for i, (image, mask) in enumerate(dataset.as_numpy_iterator()):
        if max_images is not None and i >= max_images:
            break
        cm.update(mask, predictor.predict(image))
        if bar:
            bar.update(i + 1)
    result = cm.result(classes.class_names)
    result["confusion_matrix"] = cm.matrix.tolist()
    s = predictor.settings
    result["eval"] = {
        "mode": s.mode,
        "window": s.window,
        "overlap": s.overlap,
        "scales": s.scales,
        "flip": s.flip,
    }
    return result


def evaluate_run(
    cfg: Config | None,
    checkpoint: str | Path,
    data_dir: str | None = None,
    split: str | None = None,
    output: str | Path | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`keras-seg evaluate`: print a per-class IoU table and write it as JSON.

    Args:
        cfg: the experiment (data set, eval settings); None takes the run's `config.yaml`.
        checkpoint: a `.keras` file or a training run folder (its `best.keras`).
        data_dir: data folder (overrides `cfg.data.data_dir`).
        split: split to evaluate (default `cfg.data.val_split`).
        output: JSON path (default `<checkpoint folder>/eval_<split>.json`).
        max_images: evaluate only the first N images.
        progress: show a progress bar.
    """
    run = load_run(checkpoint, data_dir=data_dir)
    cfg = cfg or run.config
    if cfg is None:
        raise ValueError(
            f"{checkpoint} has no config.yaml beside it: give --config with the data set"
        )
    classes = class_info(cfg, data_dir, int(run.model.output_shape[-1]))
    split = split or cfg.data.val_split
    predictor = Predictor(run.model, eval_settings(cfg))
    note_float32_copy(predictor)
    result = evaluate(predictor, load_split(cfg, split, data_dir), classes, max_images, progress)
    result.update({"config": cfg.name, "checkpoint": str(checkpoint), "split": split})
    print(format_table(result, title=f"{cfg.name} on {cfg.data.name}/{split}"))
    folder = run.run_dir or run.model_path.parent
    output = Path(output) if output else folder / f"eval_{split}.json"
    output.write_text(json.dumps(result, indent=2))
    print(f"wrote {output}")
    return result


# --- prediction files ----------------------------------------------------------------------


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """An RGB (or grayscale for 1-channel models) `uint8 [H, W, C]` image."""
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise ValueError(f"cannot read image {path} (not an image file, or corrupt)")
    return image[..., None] if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_files(path: str | Path) -> list[Path]:
    """The image itself, or the images (by suffix, sorted) in a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    return [path]


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5):
    """Blend the colourised mask over an RGB image: `(1 - alpha) * image + alpha * colours`."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2 or image.shape[-1] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(image, 1 - alpha, colorize(mask, palette), alpha, 0)


def write_rgb(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 image; the suffix picks the format."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[-1] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")


def predict_files(
    model_path: str | Path,
    input_path: str | Path,
    output_dir: str | Path,
    alpha: float = 0.5,
) -> list[Path]:
    """Write `<stem>.png` (class ids) and `<stem>_overlay.png` for each input image.

    The run's config (if any) gives the palette and the prediction settings (sliding
    window, scales, flip).

    Args:
        model_path: `.keras` file or training run folder.
        input_path: one image or a folder of images.
        output_dir: created if missing.
        alpha: overlay opacity of the class colours.

    Returns:
        The written files.
    """
    run = load_run(model_path)
    files = image_files(input_path)
    predictor = Predictor(run.model, run.eval_config)
    note_float32_copy(predictor)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        image = read_image(path, predictor.channels)
        pred = predictor.predict(image).astype(np.uint8)
        ids, over = output_dir / f"{path.stem}.png", output_dir / f"{path.stem}_overlay.png"
        write_rgb(ids, pred)
        write_rgb(over, overlay(image, pred, run.classes.palette, alpha))
        written += [ids, over]
    print(f"wrote {len(written)} files to {output_dir}")
    return written
