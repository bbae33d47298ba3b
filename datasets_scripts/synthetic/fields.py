"""Numeric building blocks of the synthetic scenes: seeded draws, blurs, noise fields, cell noise, measurements.

Arrays are float32, row-major (height, width). Every random draw takes the image's own
``numpy.random.Generator``, so an image depends only on its seed and index.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def round_significant(value: float, digits: int = 3) -> float:
    if value == 0:
        return 0.0
    return float(round(value, digits - 1 - int(math.floor(math.log10(abs(value))))))


def choice(rng: np.random.Generator, options, weights=None):
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        weights = weights / weights.sum()
    return options[int(rng.choice(len(options), p=weights))]


def resize_field(array: np.ndarray, width: int, height: int, resample=Image.BILINEAR) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F").resize((width, height), resample))


def blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur: exact separable taps for small sigma, a box pyramid for large sigma."""
    if sigma <= 0.3:
        return array
    if sigma <= 1.5:
        radius = int(math.ceil(2.5 * sigma))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
        taps /= taps.sum()
        padded = np.pad(array, ((0, 0), (radius, radius)), mode="edge")
        rows = taps[0] * padded[:, : array.shape[1]]
        for k in range(1, 2 * radius + 1):
            rows += taps[k] * padded[:, k : k + array.shape[1]]
        padded = np.pad(rows, ((radius, radius), (0, 0)), mode="edge")
        out = taps[0] * padded[: array.shape[0]]
        for k in range(1, 2 * radius + 1):
            out += taps[k] * padded[k : k + array.shape[0]]
        return out
    height, width = array.shape
    factor = sigma / 1.1
    small = resize_field(array, max(2, int(round(width / factor))), max(2, int(round(height / factor))), Image.BOX)
    small = blur(small, 1.0)
    return resize_field(small, width, height, Image.BILINEAR)


def gradient(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(array)
    gy = np.zeros_like(array)
    gx[:, 1:-1] = 0.5 * (array[:, 2:] - array[:, :-2])
    gy[1:-1] = 0.5 * (array[2:] - array[:-2])
    return gx, gy


def smooth_noise(rng: np.random.Generator, width: int, height: int, scale: float, octaves: int = 1) -> np.ndarray:
    """Zero-mean, unit-std band-limited noise whose features are about ``scale`` pixels across."""
    total = np.zeros((height, width), dtype=np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        cells_x = max(2, int(math.ceil(width / scale)) + 2)
        cells_y = max(2, int(math.ceil(height / scale)) + 2)
        grid = rng.standard_normal((cells_y, cells_x), dtype=np.float32)
        total += amplitude * resize_field(grid, width, height, Image.BICUBIC)
        amplitude *= 0.5
        scale /= 2.0
        if scale < 1.5:
            break
    total -= total.mean()
    return total / (total.std() + 1e-6)


def worley(rng: np.random.Generator, width: int, height: int, cell: float, jitter: float = 0.8,
            warp: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Jittered-grid cellular noise: distance to the nearest and second-nearest seed, the nearest
    seed's id, and the number of seeds (one seed per ``cell`` x ``cell`` square, optionally warped).

    Only the 2 x 2 cells whose centres surround a pixel are searched: with jitter < 1 the nearest
    seed is almost always among them, at under half the cost of the full 3 x 3 search.
    """
    nx = int(math.ceil(width / cell)) + 3
    ny = int(math.ceil(height / cell)) + 3
    seed_x = (np.arange(nx, dtype=np.float32)[None, :] - 1 + 0.5 + jitter * (rng.random((ny, nx), dtype=np.float32) - 0.5)) * cell
    seed_y = (np.arange(ny, dtype=np.float32)[:, None] - 1 + 0.5 + jitter * (rng.random((ny, nx), dtype=np.float32) - 0.5)) * cell
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    if warp is not None:
        xs, ys = xs + warp[0], ys + warp[1]
    else:
        xs, ys = np.broadcast_to(xs, (height, width)), np.broadcast_to(ys, (height, width))
    cx = np.clip(np.floor(xs / cell - 0.5).astype(np.int32) + 1, 0, nx - 2)
    cy = np.clip(np.floor(ys / cell - 0.5).astype(np.int32) + 1, 0, ny - 2)
    f1 = np.full((height, width), np.inf, dtype=np.float32)
    f2 = np.full((height, width), np.inf, dtype=np.float32)
    nearest = np.zeros((height, width), dtype=np.int32)
    for dy in (0, 1):
        for dx in (0, 1):
            flat = (cy + dy) * nx + (cx + dx)
            d = np.square(seed_x.ravel()[flat] - xs)
            d += np.square(seed_y.ravel()[flat] - ys)
            closer = d < f1
            np.minimum(f2, np.maximum(d, f1), out=f2)
            np.copyto(nearest, flat, where=closer)
            np.minimum(f1, d, out=f1)
    return np.sqrt(f1), np.sqrt(f2), nearest, nx * ny


def hash_unit(ids: np.ndarray, salt: int) -> np.ndarray:
    """A fixed pseudo-random value in [0, 1) per integer id (per-grain properties without a loop)."""
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64((salt * 0xBF58476D1CE4E5B9 + 1) % 2**64)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
    return (x >> np.uint64(40)).astype(np.float32) / float(1 << 24)


def stats_nm(values_px, nm_per_px: float) -> dict:
    values = np.asarray(values_px, dtype=float) * nm_per_px
    if values.size == 0:
        return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {key: round_significant(float(fn(values)), 3) for key, fn in
            (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max))}
