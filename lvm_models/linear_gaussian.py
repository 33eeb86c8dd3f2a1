"""Linear-Gaussian latent variable models: factor analysis and probabilistic PCA."""

from __future__ import annotations

import math
import numbers

import torch
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroParam
from torch import nn

from lvm_models._base import (
    LatentVariableModel,
    NoExactValueError,
    check_scales,
    parameter_matrix,
    parameter_of_shape,
)

NOISE_KINDS = ("diagonal", "isotropic")
# Above this condition number of I + W^T Psi^-1 W, float64 cannot promise 1e-5 nats.
_MAX_CONDITION = 1e10


class LinearGaussian(LatentVariableModel):
    """p(z) = N(0, I_k), p(x given z) = N(W z + b, diag(psi^2)).

    With ``noise="diagonal"`` this is factor analysis; with ``noise="isotropic"`` (one psi
    shared by all coordinates) it is probabilistic PCA (Tipping and Bishop, 1999). The
    marginal is Gaussian, p(x) = N(b, W W^T + diag(psi^2)), and so is the posterior, so both
    :meth:`log_marginal` and :meth:`posterior` are exact. Both use the Woodbury / capacitance
    form (a k x k Cholesky factor, never a D x D one), so D in the hundreds stays cheap.

    :param int data_dim: D.
    :param int latent_dim: k.
    :param str noise: ``"diagonal"`` (factor analysis) or ``"isotropic"`` (pPCA).
    :param fixed_noise: a float holds every noise standard deviation at that value, out of
        training; None (default) learns them.

    Attributes ``weight`` (D, k), ``bias`` (D,), ``noise_scale`` (D,) (standard deviations).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        noise: str = "diagonal",
        fixed_noise: float | None = None,
    ) -> None:
        super().__init__(data_dim, latent_dim)
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}; got {noise!r}")
        if fixed_noise is not None and (
            isinstance(fixed_noise, bool)
            or not isinstance(fixed_noise, numbers.Real)
            or not 0 < fixed_noise < math.inf
        ):
            raise ValueError(
                f"fixed_noise must be a positive finite float or None; got {fixed_noise!r}"
            )
        self.noise = noise
        self.fixed_noise = None if fixed_noise is None else float(fixed_noise)
        self.weight = nn.Parameter(0.1 * torch.randn(self.data_dim, self.latent_dim))
        self.bias = nn.Parameter(torch.zeros(self.data_dim))
        noise_shape = self.data_dim if noise == "diagonal" else 1
        if fixed_noise is None:
            self.free_noise_scale = PyroParam(torch.ones(noise_shape), constraints.positive)
        else:
            self.register_buffer("fixed_noise_scale", torch.full((noise_shape,), self.fixed_noise))

    @classmethod
    def from_params(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor,
        noise_scale: torch.Tensor | float,
    ) -> LinearGaussian:
        """A model with the given W (D, k), b (D,) and noise standard deviations (D,) or scalar.

        The model takes the dtype and device of ``weight`` (float64 for NumPy arrays). A scalar
        ``noise_scale`` gives the isotropic (pPCA) model.
        """
        weight = parameter_matrix("weight", weight, "(D, k)")
        data_dim, latent_dim = weight.shape
        bias = parameter_of_shape("bias", bias, ((data_dim,),), weight.dtype, weight.device)
        noise_scale = parameter_of_shape(
            "noise_scale", noise_scale, ((), (1,), (data_dim,)), weight.dtype, weight.device
        )
        check_scales("noise_scale", noise_scale)
        noise = "diagonal" if noise_scale.shape == (data_dim,) and data_dim > 1 else "isotropic"
        model = cls(data_dim, latent_dim, noise=noise).to(weight.device, weight.dtype)
        with torch.no_grad():
            model.weight.copy_(weight)
            model.bias.copy_(bias)
            model.free_noise_scale = PyroParam(
                noise_scale.reshape(-1).clone(), constraints.positive
            )
        return model

    @property
    def noise_scale(self) -> torch.Tensor:
        """The noise standard deviations psi, shape (D,)."""
        scale = self.free_noise_scale if self.fixed_noise is None else self.fixed_noise_scale
        return scale.expand(self.data_dim)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        loc = z @ self.weight.T + self.bias  # (..., D)
        return dist.Normal(loc, self.noise_scale).to_event(1)

    def marginal(self, dtype: torch.dtype | None = None) -> dist.LowRankMultivariateNormal:
        """p(x) = N(b, W W^T + diag(psi^2)) as a low-rank-plus-diagonal Gaussian, in ``dtype``
        (default: the model's)."""
        weight, bias, noise_scale = (
            t.to(dtype) for t in (self.weight, self.bias, self.noise_scale)
        )
        return dist.LowRankMultivariateNormal(bias, weight, noise_scale**2)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats for x (N, D): a tensor of shape (N,), in the model's dtype.

        Computed in float64 whatever the model's dtype (the Woodbury form subtracts terms of
        size cond(C), C = I + W^T Psi^-1 W, to get one of size D).

        :raises NoExactValueError: when cond(C) > 1e10 (tiny noise with large or collinear
            columns of W): then even float64 cannot promise 1e-5 nats.
        """
        x = self.checked_data(x)
        marginal = self.marginal(torch.float64)
        capacitance_tril = marginal._capacitance_tril  # Cholesky factor of C, (k, k)
        diagonal = capacitance_tril.diagonal().detach()
        condition = (diagonal.max() / diagonal.min()) ** 2
        if condition > _MAX_CONDITION:
            raise NoExactValueError(
                f"LinearGaussian.log_marginal: I + W^T Psi^-1 W has condition number about "
                f"{condition.item():.1e} > {_MAX_CONDITION:.0e} (smallest noise_scale "
                f"{self.noise_scale.min().item():.1e}); the closed form would lose its accuracy"
            )
        return marginal.log_prob(x.double()).to(x.dtype)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The exact p(z given x) = N(S W^T Psi^-1 (x - b), S), S = (I + W^T Psi^-1 W)^-1.

        :param x: data of shape (N, D).
        :returns: a MultivariateNormal with batch shape (N,) and event shape (k,).
        """
        x = self.checked_data(x)
        scaled_weight = self.weight / self.noise_scale.unsqueeze(-1)  # (D, k) = Psi^-1/2 W
        precision = scaled_weight.T @ scaled_weight + torch.eye(
            self.latent_dim, dtype=x.dtype, device=x.device
        )  # (k, k)
        precision_tril = torch.linalg.cholesky(precision)
        projected = ((x - self.bias) / self.noise_scale) @ scaled_weight  # (N, k)
        loc = torch.cholesky_solve(projected.unsqueeze(-1), precision_tril).squeeze(-1)
        scale_tril = torch.linalg.cholesky(torch.cholesky_inverse(precision_tril))  # (k, k)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril.expand(x.shape[0], -1, -1))


def ppca_max_likelihood(x: torch.Tensor, latent_dim: int) -> LinearGaussian:
    """The maximum-likelihood probabilistic PCA model of x (N, D), in closed form.

    Tipping and Bishop (1999): with the eigen-decomposition of the sample covariance (divided
    by N), sigma^2 is the mean of the D - k smallest eigenvalues and W = U_k (L_k -
    sigma^2 I)^(1/2). Computed in float64; the model is float64.
    """
    x = x.double()
    data_dim = x.shape[1]
    if not 1 <= latent_dim < data_dim:
        raise ValueError(
            f"latent_dim must be in [1, {data_dim - 1}] for D={data_dim}; got {latent_dim}"
        )
    mean = x.mean(0)
    centered = x - mean
    covariance = centered.T @ centered / x.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    noise_variance = eigenvalues[: data_dim - latent_dim].mean()
    top_values = eigenvalues[data_dim - latent_dim :]
    weight = (
        eigenvectors[:, data_dim - latent_dim :] * (top_values - noise_variance).clamp_min(0).sqrt()
    )
    return LinearGaussian.from_params(weight, mean, noise_variance.sqrt())
