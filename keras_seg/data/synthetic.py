"""A built-in synthetic segmentation data set, so the demo and tests need no download.

Each image is a textured, noisy background with several shapes drawn over each other
(later shapes occlude earlier ones). Classes: 0 background, 1 disc, 2 rectangle,
3 triangle, 4 ring. Each class has its own colour family and texture, jittered per
shape, so a small network can learn it in minutes while the task stays non-trivial
(shape boundaries, occlusion, noise). Generation is deterministic given the seed.
"""

from __future__ import annotations

import cv2
import numpy as np

CLASS_NAMES = ("background", "disc", "rectangle", "triangle", "ring")
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25]], dtype=np.uint8
)
#: The held-out split's generator seed is the training seed plus this.
VAL_SEED_OFFSET = 1_000_003
# Base colour (RGB) per foreground class; each shape jitters it.
_BASE_COLOURS = np.array(
    [[200, 60, 60], [60, 190, 80], [60, 90, 210], [220, 200, 50]], dtype=np.float32
)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # Low-frequency grey clouds plus fine noise.
    coarse = rng.uniform(60, 170, (size // 16 + 1, size // 16 + 1, 1)).astype(np.float32)
    clouds = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)[..., None]
    return np.repeat(clouds, 3, axis=2) + rng.normal(0, 8, (size, size, 3))


def _draw(cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Binary mask of one shape of class `cls` at a random place."""
    mask = np.zeros((size, size), np.uint8)
    cx, cy = rng.integers(size // 8, size - size // 8, 2)
    r = int(rng.integers(size // 12, size // 5))
    if cls == 1:
        cv2.circle(mask, (int(cx), int(cy)), r, 1, -1)
    elif cls == 2:
        w, h = rng.integers(size // 10, size // 3, 2)
        cv2.rectangle(
            mask, (int(cx - w // 2), int(cy - h // 2)), (int(cx + w // 2), int(cy + h // 2)), 1, -1
        )
    elif cls == 3:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    else:
        cv2.circle(mask, (int(cx), int(cy)), r, 1, max(3, r // 3))
    return mask.astype(bool)


def make_sample(
    rng: np.random.Generator, size: int = 96, max_shapes: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """One `(image uint8 [size, size, 3], mask uint8 [size, size])` pair."""
    image = _background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    yy = np.arange(size)[:, None]
    for _ in range(int(rng.integers(2, max_shapes + 1))):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        region = _draw(cls, rng, size)
        colour = _BASE_COLOURS[cls - 1] + rng.uniform(-25, 25, 3)
        # A per-class texture: stripes of class-specific period, at a random phase.
        stripes = 12 * np.sin(2 * np.pi * (yy + rng.uniform(0, 10)) / (3 + 2 * cls))
        shade = colour[None, None, :] + stripes[..., None]
        image[region] = shade.repeat(size, axis=1)[region]
        mask[region] = cls
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_dataset(num_samples: int, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`num_samples` images `uint8 [N, size, size, 3]` and masks `uint8 [N, size, size]`."""
    if num_samples < 1 or size < 16:
        raise ValueError(f"need num_samples >= 1 and size >= 16, got {num_samples} and {size}")
    rng = np.random.default_rng(seed)
    pairs = [make_sample(rng, size) for _ in range(num_samples)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def splits(num_train: int = 512, num_val: int = 128, size: int = 96, seed: int = 0):
    """Train and held-out splits from disjoint seeds: `((x_train, y_train), (x_val, y_val))`.

    `keras_seg.data.load("synthetic", split, ...)` gives the same images as a dataset.
    """
    return make_dataset(num_train, size, seed), make_dataset(num_val, size, seed + VAL_SEED_OFFSET)
