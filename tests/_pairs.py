"""Model/guide pairs the tests share: built-ins with known answers and a user's plain functions."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from lvm_models import LinearGaussian


def linear_gaussian(data_dim: int = 4, latent_dim: int = 2, noise: float = 0.5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
    bias = torch.randn(data_dim, generator=generator, dtype=torch.float64)
    return LinearGaussian.from_params(weight, bias, torch.full((data_dim,), noise))


class ChainModel:
    """A user's model written as plain functions: z1 -> z2 -> x, all linear-Gaussian.

    z1 ~ N(0, 1), z2 given z1 ~ N(a z1, s^2), x given z2 ~ N(w z2 + b, psi^2 I), so
    x ~ N(b, (a^2 + s^2) w w^T + psi^2 I) in closed form. Site names are its own, and its
    guide keeps its parameters in the global param store (pyro.param, pyro.module).
    """

    def __init__(self, data_dim: int = 3, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.a, self.s, self.psi = 1.5, 0.7, 0.6
        self.w = torch.randn(data_dim, generator=generator, dtype=torch.float64)
        self.b = torch.randn(data_dim, generator=generator, dtype=torch.float64)
        self.encoder = torch.nn.Linear(data_dim, 2).double()
        torch.nn.init.zeros_(self.encoder.weight)  # starts as a broad, prior-like proposal
        self.prefix = f"chain{seed}"

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            top = pyro.sample("top", dist.Normal(x.new_zeros(()), 1.0))
            middle = pyro.sample("middle", dist.Normal(self.a * top, self.s))
            loc = middle.unsqueeze(-1) * self.w + self.b
            pyro.sample("pixels", dist.Normal(loc, self.psi).to_event(1), obs=x)

    def guide(self, x):
        pyro.module(f"{self.prefix}_encoder", self.encoder)
        scale = pyro.param(
            f"{self.prefix}_scale",
            torch.ones(2, dtype=torch.float64),
            constraint=dist.constraints.positive,
        )
        out = self.encoder(x)  # (N, 2)
        with pyro.plate("data", x.shape[0]):
            top = pyro.sample("top", dist.Normal(out[:, 0], scale[0]))
            pyro.sample("middle", dist.Normal(out[:, 1] + 0.5 * top, scale[1]))

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        variance = self.a**2 + self.s**2
        covariance = variance * torch.outer(self.w, self.w) + self.psi**2 * torch.eye(
            len(self.w), dtype=torch.float64
        )
        return dist.MultivariateNormal(self.b, covariance).log_prob(x)

    def sample(self, num_data: int) -> torch.Tensor:
        top = torch.randn(num_data, dtype=torch.float64)
        middle = self.a * top + self.s * torch.randn(num_data, dtype=torch.float64)
        noise = self.psi * torch.randn(num_data, len(self.w), dtype=torch.float64)
        return middle.unsqueeze(-1) * self.w + self.b + noise
