"""Helpers shared by the family adapters.

The leading underscore keeps the registry from treating this module as a family. Only torch is
imported at module level; safetensors is imported only when a .safetensors file is read.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segbench.errors import WeightsError


def unwrap_state(name: str, path: Path, obj: Any) -> Mapping[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint: a bare state dict or one under 'state_dict'."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"{name}: weights file {path} is not a state dict (expected a mapping of parameter names to tensors)"
        )
    return obj


def read_state_file(name: str, path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch-saved file (loaded with weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the same thing to the user: an unreadable file
        raise unreadable_weights(name, path, exc) from None
    return unwrap_state(name, path, obj)


def unreadable_weights(name: str, path: Path, exc: BaseException) -> WeightsError:
    """One line for a weights file no reader accepts. torch's own text for a file its safe loader refuses advises
    turning that loader off (running the file's pickled code); segbench never does, and says what to save instead."""
    if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in str(exc).lower():
        return WeightsError(
            f"{name}: weights file {path} is not a plain checkpoint (torch's safe loader refuses the Python objects "
            "it holds, or it is no torch file); segbench never unpickles code: save the state dict "
            "(torch.save(model.state_dict(), path)) or a .safetensors file"
        )
    return WeightsError(f"{name}: cannot read weights file {path} ({type(exc).__name__}: {_first_line(exc)})")


def _key_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor], shown: int = 3) -> str | None:
    """Missing and unexpected keys, counted with the first few named (torch lists every one on one line)."""
    expected, given = set(module.state_dict()), set(state)
    parts = []
    for label, keys in (("missing", sorted(expected - given)), ("unexpected", sorted(given - expected))):
        if keys:
            more = f", … {len(keys) - shown} more" if len(keys) > shown else ""
            parts.append(f"{len(keys)} {label} key(s): {', '.join(keys[:shown])}{more}")
    return "; ".join(parts) or None


def strict_load(name: str, module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load every tensor of the architecture from `state`, or say which key does not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = _key_mismatch(module, state) or (lines[1:2] or lines[:1] or ["state dict mismatch"])[0].strip()
        hint = "; if its head has another class count, set options.num_classes" if "size mismatch" in detail else ""
        raise WeightsError(f"{name}: weights file {path} does not match the architecture ({detail}){hint}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"
