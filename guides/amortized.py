"""Amortised encoders: one network maps each x to its own q(z given x)."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
import torch.nn.functional as F
from pyro import distributions as dist
from pyro.nn import PyroModule

from lvm_models._base import check_columns, check_positive_int, unique_pyro_name
from lvm_models._nn import MIN_SCALE, check_hidden, mlp


class _AmortizedGuide(PyroModule):
    """Samples the latent site inside ``pyro.plate("data", N)`` from ``distribution(x)``."""

    def __init__(self, data_dim: int, hidden: Sequence[int], num_outputs: int, site: str) -> None:
        data_dim = check_positive_int("data_dim", data_dim)
        super().__init__(name=unique_pyro_name(type(self).__name__))
        self.data_dim = data_dim
        self.site = site
        self.encoder = mlp(data_dim, check_hidden(hidden), num_outputs)
        # Follows .to(dtype) / .double(); reading it costs no pyro.module statement.
        self.register_buffer("_origin", torch.zeros(()))

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        """Draw the latent for every row of ``x`` (N, D) inside the data plate."""
        check_columns(x, self.data_dim, self)
        x = x.to(self._origin.dtype)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.distribution(x))


class AmortizedGaussian(_AmortizedGuide):
    """The VAE encoder: q(z given x) = N(mu(x), diag(sigma(x)^2)), mu and sigma from one MLP.

    :param int data_dim: D.
    :param int latent_dim: k.
    :param hidden: widths of the encoder's hidden layers.
    :param str site: the name of the latent site it samples (the model's; ``"z"`` for the
        built-in models).
    """

    def __init__(
        self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (64, 64), site: str = "z"
    ) -> None:
        latent_dim = check_positive_int("latent_dim", latent_dim)
        super().__init__(data_dim, hidden, 2 * latent_dim, site)
        self.latent_dim = latent_dim

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        out = self.encoder(x)
        loc, raw_scale = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)


class AmortizedCategorical(_AmortizedGuide):
    """q(z given x) = Categorical(softmax(f(x))): an encoder for a discrete latent.

    :param int data_dim: D.
    :param int num_categories: K, the number of values of z (a mixture's components).
    :param hidden: widths of the encoder's hidden layers.
    :param str site: the name of the latent site it samples.
    """

    def __init__(
        self, data_dim: int, num_categories: int, hidden: Sequence[int] = (32,), site: str = "z"
    ) -> None:
        num_categories = check_positive_int("num_categories", num_categories)
        super().__init__(data_dim, hidden, num_categories, site)
        self.num_categories = num_categories

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=self.encoder(x))
