"""The multilayer perceptron that decoders and encoders are built from."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

# Added to every softplus scale, so no network output gives a zero or vanishing scale.
MIN_SCALE = 1e-4


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
