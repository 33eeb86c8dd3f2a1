"""Checks at the public boundary: one place that says what an argument must be."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import torch

from lvm_models._base import (  # noqa: F401 - one definition each, re-exported here
    MAX_SEED,
    check_positive_int,
    check_seed,
)


def check_data(x: object, name: str = "x", matrix: bool = False) -> torch.Tensor:
    """``x`` must be a finite floating-point tensor of shape (N, ...) with N >= 1: its leading
    dimension indexes the data points. ``matrix=True`` asks for exactly (N, D)."""
    if not isinstance(x, torch.Tensor):
        shape = "(N, D)" if matrix else "(N, ...)"
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}; got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor; got layout {x.layout} (use .to_dense())")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds shapes but no values")
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


def check_finite_result(
    name: str, per_point: torch.Tensor, x: torch.Tensor, error: type[ValueError] = ValueError
) -> torch.Tensor:
    """An estimate per point must be finite: -inf or NaN from finite data means the densities
    overflowed (or the model gives the data no density at all), never a number to report."""
    bad = ~torch.isfinite(per_point)
    if not bool(bad.any()):
        return per_point
    points = bad.nonzero().flatten()[:5].tolist()
    values = per_point[bad][:3].tolist()
    scale = x.abs().max().item()
    hint = (
        f"x reaches {scale:.3g}, whose squares overflow {x.dtype}: compute in float64 "
        "(dtype=torch.float64, or a float64 model and x)"
        if x.dtype != torch.float64 and scale**2 > torch.finfo(x.dtype).max
        else "the model gives these points no finite density under the draws made"
    )
    raise error(f"{name} is {values} at point(s) {points}: {hint}")


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


def check_output_path(name: str, path: object, *, folder: bool = False) -> Path:
    """A path the results (a file, or with ``folder=True`` a folder) can be written to, checked
    before any work: not empty, not a directory where a file is wanted, and the nearest
    existing folder on its way is a folder that may be written in. Missing folders are fine:
    they are created when the results are written.

    :raises TypeError: for a path that is not a ``str`` or ``Path``.
    :raises ValueError: naming ``name``, the path and what is wrong with it.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or Path; got {type(path).__name__}")
    if str(path) == "":
        raise ValueError(f"{name} must be a {'folder' if folder else 'file'} path; got ''")
    path = Path(path)
    shown = f"{name} {str(path)!r}"
    if not folder and path.is_dir():
        raise ValueError(f"{shown} is a directory; give a file path")
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{shown} is not writable")
    start = path if folder else path.parent
    existing = next((p for p in [start, *start.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        where = "" if existing == path else f": {str(existing)!r}"
        raise ValueError(f"{shown}{where} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{shown}: the folder {str(existing)!r} is not writable")
    return path


def check_finite_number(name: str, value: object, *, positive: bool = False) -> None:
    """``value`` a finite real number, > 0 where ``positive``, else >= 0 (bools are not numbers).

    :raises ValueError: naming ``name``, what it must be and what came.
    """
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value)) or (value <= 0 if positive else value < 0):
        raise ValueError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}; got {value!r}"
        )


def is_int_at_least(value: object, lowest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lowest
