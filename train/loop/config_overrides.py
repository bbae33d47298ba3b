"""``--config_overrides``: ablations and size changes as ``key=value`` pairs applied to a model config."""

from __future__ import annotations

import json
import re


def parse_config_overrides(text: str | None) -> dict:
    """``"use_itc=false,vision_config.num_hidden_layers=2"`` -> nested dict with parsed values."""
    overrides: dict = {}
    if not text:
        return overrides
    for item in re.split(r",(?=\s*[\w.]+\s*=)", text):  # commas inside values ("[16,28]") stay
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"--config_overrides: expected key=value, got {item!r}")
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            value = json.loads(raw.lower() if raw.lower() in ("true", "false", "null") else raw)
        except json.JSONDecodeError:
            value = raw
        target = overrides
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return overrides


def apply_config_overrides(config, overrides: dict, prefix: str = "") -> None:
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"--config_overrides: {type(config).__name__} has no field {prefix + key!r}")
        if isinstance(value, dict):
            apply_config_overrides(getattr(config, key), value, prefix=f"{prefix}{key}.")
        else:
            setattr(config, key, value)
