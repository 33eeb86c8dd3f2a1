"""The multilayer perceptron that decoders and encoders are built from."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

from torch import nn

# Added to every softplus scale, so no network output gives a zero or vanishing scale.
MIN_SCALE = 1e-4


def check_hidden(hidden: object, allow_empty: bool = True) -> tuple[int, ...]:
    """Hidden-layer widths: a sequence of integers >= 1 (NumPy integers too), returned as a
    tuple of Python ints. Empty means no hidden layer (a linear map) unless ``allow_empty`` is
    False.

    :raises TypeError: for a ``hidden`` that is not a sequence (a single width, a string).
    :raises ValueError: for a width that is not a positive integer, or an empty sequence where
        one is not allowed; the message names ``hidden`` and what came.
    """
    expected = "a sequence of positive integer widths"
    if not allow_empty:
        expected = "one or more positive widths (integers)"
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
        raise TypeError(f"hidden must be {expected}, e.g. (64, 64); got {hidden!r}")
    widths = tuple(hidden)
    if (not widths and not allow_empty) or any(
        isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1
        for width in widths
    ):
        raise ValueError(f"hidden must be {expected}; got {widths!r}")
    return tuple(int(width) for width in widths)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """A tanh MLP ``in_dim -> hidden... -> out_dim`` with a linear output layer.

    tanh keeps decoders smooth in z, which the quadrature oracle relies on for its accuracy.
    """
    widths = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


def output_layer(network: nn.Sequential) -> nn.Linear:
    """The last (linear) layer of an :func:`mlp`."""
    return network[-1]
