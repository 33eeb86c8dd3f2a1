"""Checks at the public boundary: one place that says what an argument must be."""

from __future__ import annotations

import torch


def check_data(x: object, name: str = "x", matrix: bool = False) -> torch.Tensor:
    """``x`` must be a finite floating-point tensor of shape (N, ...) with N >= 1: its leading
    dimension indexes the data points. ``matrix=True`` asks for exactly (N, D)."""
    if not isinstance(x, torch.Tensor):
        shape = "(N, D)" if matrix else "(N, ...)"
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}; got {type(x).__name__}")
    if matrix and x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, D); got shape {tuple(x.shape)}")
    if x.dim() == 0:
        raise ValueError(
            f"{name} must have a leading dimension of data points (N, ...); got a scalar"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return value
