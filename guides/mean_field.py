"""Non-amortised mean-field Gaussians: one free q per data point."""

from __future__ import annotations

import pyro
import torch
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from lvm_models._base import check_positive_int, unique_pyro_name


class MeanField(PyroModule):
    """q(z_n) = N(m_n, diag(s_n^2)) with free m_n, s_n for each of the N data points.

    Not amortised: it fits one data set of exactly ``num_data`` rows (in their order), so it
    is trained full-batch. Free per-point parameters remove the amortisation gap, which makes
    it a reference for what an encoder could reach.

    :param int num_data: N.
    :param int latent_dim: k.
    :param str site: the name of the latent site it samples.
    """

    def __init__(self, num_data: int, latent_dim: int, site: str = "z") -> None:
        num_data = check_positive_int("num_data", num_data)
        latent_dim = check_positive_int("latent_dim", latent_dim)
        super().__init__(name=unique_pyro_name(type(self).__name__))
        self.num_data = num_data
        self.latent_dim = latent_dim
        self.site = site
        self.loc = torch.nn.Parameter(torch.zeros(num_data, latent_dim))
        self.scale = PyroParam(torch.ones(num_data, latent_dim), constraints.positive)

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        if x.shape[0] != self.num_data:
            raise ValueError(
                f"MeanField holds one Gaussian per data point: x must have num_data="
                f"{self.num_data} rows; got {x.shape[0]} (train it full-batch)"
            )
        with pyro.plate("data", self.num_data):
            return pyro.sample(self.site, dist.Normal(self.loc, self.scale).to_event(1))
