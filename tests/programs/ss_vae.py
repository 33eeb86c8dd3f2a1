"""Pyro's ``examples/vae/ss_vae_M2.py`` (Kingma et al., 2014, M2), written as there, on 8x8
digits instead of MNIST.

``model(xs, ys=None)`` and ``guide(xs, ys=None)``: the one-hot label site ``y`` is observed
when ``ys`` is given and otherwise sampled from the guide's classifier q(y given x); the data
plate ``pyro.plate("data")`` is declared without a size; the networks are the original's
``utils/custom_mlp.MLP`` (inputs joined by ``torch.cat``, broadcast first only when
``config_enum="parallel"``, as the original sets ``allow_broadcast``), the classifier ending
in ``nn.Softmax(dim=1)``; everything reaches the param store as ``pyro.module("ss_vae", self)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro.distributions.util import broadcast_shape

from programs.digits import NUM_CLASSES, NUM_PIXELS


class Exp(nn.Module):
    def forward(self, val: torch.Tensor) -> torch.Tensor:
        return torch.exp(val)


class ConcatModule(nn.Module):
    """Joins a list of inputs along the last dim; with ``allow_broadcast``, after expanding
    them to one batch shape (needed when an enumerated label meets an unenumerated image)."""

    def __init__(self, allow_broadcast: bool = False) -> None:
        super().__init__()
        self.allow_broadcast = allow_broadcast

    def forward(self, input_args: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if torch.is_tensor(input_args):
            return input_args
        if self.allow_broadcast:
            shape = broadcast_shape(*[s.shape[:-1] for s in input_args]) + (-1,)
            input_args = [s.expand(shape) for s in input_args]
        return torch.cat(input_args, dim=-1)


class ListOutModule(nn.ModuleList):
    def forward(self, *args: torch.Tensor) -> list[torch.Tensor]:
        return [module(*args) for module in self]


class MLP(nn.Module):
    """``custom_mlp.MLP`` as the original uses it: sizes [input, *hidden, output] where output
    is an int or a list of head sizes; softplus hidden layers initialised N(0, 0.001)."""

    def __init__(
        self,
        mlp_sizes: Sequence,
        output_activation: nn.Module | Sequence[nn.Module | None] | None,
        allow_broadcast: bool = False,
    ) -> None:
        super().__init__()
        input_size, *hidden_sizes, output_size = mlp_sizes
        last_layer_size = input_size
        all_modules: list[nn.Module] = [ConcatModule(allow_broadcast)]
        for layer_size in hidden_sizes:
            layer = nn.Linear(last_layer_size, layer_size)
            layer.weight.data.normal_(0, 0.001)  # as the original, "for numerical stability"
            layer.bias.data.normal_(0, 0.001)
            all_modules += [layer, nn.Softplus()]
            last_layer_size = layer_size
        if isinstance(output_size, int):
            all_modules += [nn.Linear(last_layer_size, output_size), output_activation]
        else:
            heads = [
                nn.Sequential(nn.Linear(last_layer_size, size), *([act] if act else []))
                for size, act in zip(output_size, output_activation)
            ]
            all_modules.append(ListOutModule(heads))
        self.sequential_mlp = nn.Sequential(*all_modules)

    def forward(self, *args: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.sequential_mlp.forward(*args)


class SSVAE(nn.Module):
    """z ~ Normal(0, I), y ~ OneHotCategorical(1/10), x given (y, z) ~ Bernoulli(decoder(z, y));
    q(y given x) = OneHotCategorical(encoder_y(x)), q(z given x, y) = Normal(encoder_z(x, y))."""

    def __init__(
        self,
        output_size: int = NUM_CLASSES,
        input_size: int = NUM_PIXELS,
        z_dim: int = 4,
        hidden_layers: Sequence[int] = (64,),
        config_enum: str | None = None,
    ) -> None:
        super().__init__()
        self.output_size = output_size
        self.input_size = input_size
        self.z_dim = z_dim
        self.hidden_layers = list(hidden_layers)
        self.allow_broadcast = config_enum == "parallel"
        self.setup_networks()

    def setup_networks(self) -> None:
        z_dim = self.z_dim
        hidden_sizes = self.hidden_layers
        self.encoder_y = MLP(
            [self.input_size, *hidden_sizes, self.output_size],
            output_activation=nn.Softmax(dim=1),
            allow_broadcast=self.allow_broadcast,
        )
        self.encoder_z = MLP(
            [self.input_size + self.output_size, *hidden_sizes, [z_dim, z_dim]],
            output_activation=[None, Exp()],
            allow_broadcast=self.allow_broadcast,
        )
        self.decoder = MLP(
            [z_dim + self.output_size, *hidden_sizes, self.input_size],
            output_activation=nn.Sigmoid(),
            allow_broadcast=self.allow_broadcast,
        )

    def model(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> torch.Tensor:
        pyro.module("ss_vae", self)
        batch_size = xs.size(0)
        options = dict(dtype=xs.dtype, device=xs.device)
        with pyro.plate("data"):
            prior_loc = torch.zeros(batch_size, self.z_dim, **options)
            prior_scale = torch.ones(batch_size, self.z_dim, **options)
            zs = pyro.sample("z", dist.Normal(prior_loc, prior_scale).to_event(1))
            alpha_prior = torch.ones(batch_size, self.output_size, **options) / (
                1.0 * self.output_size
            )
            ys = pyro.sample("y", dist.OneHotCategorical(alpha_prior), obs=ys)
            loc = self.decoder([zs, ys])
            pyro.sample("x", dist.Bernoulli(loc, validate_args=False).to_event(1), obs=xs)
            return loc

    def guide(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> None:
        with pyro.plate("data"):
            if ys is None:
                alpha = self.encoder_y(xs)
                ys = pyro.sample("y", dist.OneHotCategorical(alpha))
            loc, scale = self.encoder_z([xs, ys])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def classifier(self, xs: torch.Tensor) -> torch.Tensor:
        """The most probable label under q(y given x), one-hot (N, 10)."""
        alpha = self.encoder_y(xs)
        _, ind = torch.topk(alpha, 1)
        return torch.zeros_like(alpha).scatter_(1, ind, 1.0)
