"""A Gaussian mixture: the latent is a discrete component label."""

from __future__ import annotations

import torch
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import nn

from lvm_models._base import (
    LatentVariableModel,
    check_positive_int,
    check_scales,
    parameter_matrix,
    parameter_of_shape,
)


class GaussianMixture(LatentVariableModel):
    """p(z) = Categorical(softmax(logits)), p(x given z) = N(mu_z, diag(sigma_z^2)).

    The latent ``"z"`` takes values in {0, ..., K-1}; ``log_marginal`` sums it out exactly.
    The program indexes parameters with ``z``, so it also runs under Pyro's parallel
    enumeration (``config_enumerate`` / ``TraceEnum_ELBO``), where ``z`` arrives with an
    extra enumeration dimension on the left.

    :param int data_dim: D.
    :param int num_components: K.
    """

    def __init__(self, data_dim: int, num_components: int) -> None:
        num_components = check_positive_int("num_components", num_components)
        super().__init__(data_dim, num_components)
        self.num_components = num_components
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.means = nn.Parameter(torch.randn(num_components, self.data_dim))
        self.scales = PyroParam(torch.ones(num_components, self.data_dim), constraints.positive)

    @classmethod
    def from_params(
        cls, logits: torch.Tensor, means: torch.Tensor, scales: torch.Tensor
    ) -> GaussianMixture:
        """A mixture with logits (K,), means (K, D) and diagonal standard deviations (K, D),
        in the dtype and on the device of ``means``."""
        means = parameter_matrix("means", means, "(K, D)")
        num_components, data_dim = means.shape
        dtype, device = means.dtype, means.device
        logits = parameter_of_shape("logits", logits, ((num_components,),), dtype, device)
        scales = parameter_of_shape("scales", scales, (tuple(means.shape),), dtype, device)
        check_scales("scales", scales)
        model = cls(data_dim, num_components).to(means.device, means.dtype)
        with torch.no_grad():
            model.logits.copy_(logits)
            model.means.copy_(means)
            model.scales = PyroParam(scales.clone(), constraints.positive)
        return model

    def prior(self) -> dist.Distribution:
        return dist.Categorical(logits=self.logits)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        return dist.Normal(self.means[z], self.scales[z]).to_event(1)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, sigma_k^2)], shape (N,)."""
        x = self.checked_data(x)
        components = dist.Normal(self.means, self.scales).to_event(1)
        log_joint = torch.log_softmax(self.logits, -1) + components.log_prob(
            x.unsqueeze(-2)
        )  # (N, K)
        return torch.logsumexp(log_joint, -1)
