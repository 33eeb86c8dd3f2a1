"""Checks at the public boundary: one place that says what an argument must be."""

from __future__ import annotations

import numbers

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
    """An integer >= 1 (a NumPy integer too); never a bool, a float or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def check_sample_sizes(num_samples: object) -> list[int]:
    """A non-empty sequence of integers K >= 1, sorted and without repeats."""
    if isinstance(num_samples, (str, bytes)) or not hasattr(num_samples, "__iter__"):
        raise TypeError(
            f"num_samples must be a sequence of integers K, e.g. (1, 10, 100); got {num_samples!r}"
        )
    ks = sorted({check_positive_int("num_samples", k) for k in num_samples})
    if not ks:
        raise ValueError("num_samples must name at least one K; got an empty sequence")
    return ks


MAX_SEED = 2**63 - 1  # torch.manual_seed takes seeds up to this


def check_seed(seed: object, name: str = "seed") -> int | None:
    """None, or an integer in [0, 2**63 - 1] (torch's range)."""
    if seed is None:
        return None
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        raise ValueError(f"{name} must be None or an integer in [0, 2**63 - 1]; got {seed!r}")
    return int(seed)


def check_per_point(name: str, value: object, num_data: int) -> torch.Tensor:
    """A finite tensor of one value per data point, shape (N,)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape ({num_data},); got {type(value).__name__}"
        )
    if value.shape != (num_data,):
        raise ValueError(
            f"{name} must have shape ({num_data},), one value per point; got {tuple(value.shape)}"
        )
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return value
