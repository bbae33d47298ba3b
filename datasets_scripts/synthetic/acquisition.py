"""The microscope: imaging conditions, the detector's signal of a scene, and acquisition (focus, levels, noise, charging)."""

from __future__ import annotations

import math

import numpy as np

from .fields import blur, choice, gradient, loguniform, round_significant
from .specs import ClassSpec, hfw_nm

# Two information-bar layouts in the style of common SEM vendors, with their detector names.
# detector kind -> (weights of kind) ; the names are what the bar prints.
_VENDOR_DETECTORS = {
    "zeiss": {"inlens": "InLens", "everhart_thornley": "SE2", "backscatter": "AsB"},
    "fei": {"inlens": "TLD", "everhart_thornley": "ETD", "backscatter": "CBS"},
}
_DETECTOR_KINDS = ("inlens", "everhart_thornley", "backscatter")
_DETECTOR_SIGNAL = {
    "inlens": "secondary electrons (in-lens detector)",
    "everhart_thornley": "secondary electrons (Everhart-Thornley detector)",
    "backscatter": "backscattered electrons",
}
# (topography, edge effect, recess shadow, directional shading) weights per detector kind
_DETECTOR_WEIGHTS = {
    "inlens": (0.55, 0.35, 0.25, 0.0),
    "everhart_thornley": (0.45, 0.2, 0.35, 0.3),
    "backscatter": (0.15, 0.05, 0.15, 0.12),
}
_ACCELERATING_VOLTAGES_KV = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0)


def sample_imaging(rng: np.random.Generator, spec: ClassSpec) -> dict:
    low, high = spec.magnification
    magnification = round_significant(loguniform(rng, low, high), 3)
    vendor = choice(rng, ("zeiss", "fei"), (0.6, 0.4))
    kind = choice(rng, _DETECTOR_KINDS, (0.45, 0.4, 0.15))
    kv = float(choice(rng, _ACCELERATING_VOLTAGES_KV, (0.05, 0.1, 0.1, 0.25, 0.25, 0.12, 0.1, 0.03)))
    frames = int(choice(rng, (1, 1, 2, 4, 8)))
    return {
        "technique": "SEM",
        "magnification": magnification,
        "hfw_nm": round_significant(hfw_nm(magnification), 4),
        "accelerating_voltage_kv": kv,
        "working_distance_mm": round(float(rng.uniform(2.5, 14.0)), 1),
        "detector": _VENDOR_DETECTORS[vendor][kind],
        "detector_kind": kind,
        "signal": _DETECTOR_SIGNAL[kind],
        "vendor_style": vendor,
        "frames_averaged": frames,
        "shot_noise": round(float(rng.uniform(0.03, 0.13) / math.sqrt(frames)), 4),
        "scan_line_noise": round(float(rng.uniform(0.0, 0.015)), 4),
        "defocus_px": round(float(choice(rng, (0.0, 0.0, 0.0, rng.uniform(0.3, 1.0)))), 2),
        "detector_azimuth_deg": round(float(rng.uniform(0, 360)), 1),
        "gamma": round(float(rng.uniform(0.8, 1.25)), 3),
        "black_level": round(float(rng.uniform(0.0, 0.12)), 3),
        "white_level": round(float(rng.uniform(0.82, 1.0)), 3),
        "tilt_deg": 0.0,
        "false_color": False,
        "post_processing": "none",
    }


def detector_signal(height: np.ndarray, material: np.ndarray, imaging: dict, nm_per_px: float) -> np.ndarray:
    """Secondary/backscattered electron signal of a scene (grid arrays, heights in grid px)."""
    w_topo, w_edge, w_shadow, w_dir = _DETECTOR_WEIGHTS[imaging["detector_kind"]]
    h = blur(height, 0.5)
    gx, gy = gradient(h)
    secant = np.sqrt(1.0 + gx * gx + gy * gy)
    topo = 1.0 - 1.0 / secant  # SE yield rises like 1/cos(tilt of the surface), saturating
    # the edge effect widens with the electron range, which grows like E^1.67 (Kanaya-Okayama)
    edge_sigma = float(np.clip(6.0 * imaging["accelerating_voltage_kv"] ** 1.67 / nm_per_px, 0.7, 5.0))
    edge = np.tanh((h - blur(h, edge_sigma)) / edge_sigma)
    shadow = np.tanh((h - blur(h, 9.0)) / 3.0)
    azimuth = math.radians(imaging["detector_azimuth_deg"])
    directional = (gx * math.cos(azimuth) + gy * math.sin(azimuth)) / secant
    if imaging["detector_kind"] == "backscatter":
        material = material**1.8  # atomic-number contrast dominates
    return material * (0.45 + w_topo * topo + w_edge * edge + w_shadow * shadow) + w_dir * directional


def acquire(signal: np.ndarray, imaging: dict, visible_rows: int, rng: np.random.Generator, insulating: bool) -> tuple[np.ndarray, dict]:
    """Detector signal -> stored 8-bit frame: focus, brightness/contrast, noise, charging."""
    height, width = signal.shape
    frame = blur(signal, imaging["defocus_px"])
    low, high = (float(v) for v in np.percentile(frame[:visible_rows:2, ::2], (0.5, 99.5)))  # Python floats keep float32
    frame = np.clip((frame - low) * (1.0 / max(high - low, 1e-6)), 0.0, 1.0)
    np.power(frame, imaging["gamma"], out=frame)
    frame *= imaging["white_level"] - imaging["black_level"]
    frame += imaging["black_level"]
    noise = rng.standard_normal(frame.shape, dtype=np.float32)
    noise *= np.sqrt(np.maximum(frame, 0.02))
    frame += imaging["shot_noise"] * noise
    line_offsets = np.zeros(height, dtype=np.float32)
    innovations = rng.normal(0, imaging["scan_line_noise"], height)
    for r in range(1, height):
        line_offsets[r] = 0.6 * line_offsets[r - 1] + innovations[r]
    frame += line_offsets[:, None]
    charging = {"present": False, "streaks": 0}
    if insulating and rng.random() < 0.3:
        # charging: bright overshoot that decays along the scan line after bright features
        rows = rng.choice(visible_rows, size=int(rng.integers(2, 12)), replace=False)
        decay = float(rng.uniform(0.85, 0.97))
        # charge(c) = max over k <= c of excess(k) * decay^(c - k): a running maximum in scaled units
        powers = decay ** np.arange(width, dtype=np.float64)
        for r in rows:
            band = slice(r, min(r + int(rng.integers(1, 4)), visible_rows))
            excess = np.clip(frame[band] - 0.7, 0, None).astype(np.float64)
            frame[band] += (1.5 * np.maximum.accumulate(excess / powers, axis=1) * powers).astype(np.float32)
        frame[:visible_rows] += 0.08 * np.clip(frame[:visible_rows] - 0.85, 0, None)
        charging = {"present": True, "streaks": int(len(rows))}
    return np.clip(np.round(frame * 255.0), 0, 255).astype(np.uint8), charging
