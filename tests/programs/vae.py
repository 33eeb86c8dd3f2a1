"""Pyro's ``examples/vae/vae.py``, written as there, on 8x8 digits instead of MNIST.

The model and the guide are methods of an ``nn.Module``; the networks reach Pyro's global
param store through ``pyro.module("decoder", ...)`` and ``pyro.module("encoder", ...)``; the
data points are ``pyro.plate("data", x.shape[0])``; images come in any shape with 64 pixels
per row ((N, 1, 8, 8) in the tests) and are flattened inside the programs.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

from programs.digits import NUM_PIXELS


class Encoder(nn.Module):
    """q(z given x) = Normal(loc(x), scale(x)): one softplus hidden layer."""

    def __init__(self, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(NUM_PIXELS, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.reshape(-1, NUM_PIXELS)
        hidden = self.softplus(self.fc1(x))
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale


class Decoder(nn.Module):
    """The Bernoulli means of p(x given z): one softplus hidden layer, then a sigmoid."""

    def __init__(self, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, NUM_PIXELS)
        self.softplus = nn.Softplus()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        hidden = self.softplus(self.fc1(z))
        return torch.sigmoid(self.fc21(hidden))


class VAE(nn.Module):
    """z ~ Normal(0, I) (z_dim), x given z ~ Bernoulli(decoder(z)) on the 64 pixels."""

    def __init__(self, z_dim: int = 2, hidden_dim: int = 32) -> None:
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)
        self.z_dim = z_dim

    def model(self, x: torch.Tensor) -> torch.Tensor:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = torch.zeros(x.shape[0], self.z_dim, dtype=x.dtype, device=x.device)
            z_scale = torch.ones(x.shape[0], self.z_dim, dtype=x.dtype, device=x.device)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder.forward(z)
            pyro.sample(
                "obs",
                dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                obs=x.reshape(-1, NUM_PIXELS),
            )
            return loc_img

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder.forward(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
