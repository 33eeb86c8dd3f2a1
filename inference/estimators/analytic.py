"""The ELBO in closed form where both sides are Gaussian: no Monte-Carlo noise."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import MultivariateNormal, kl_divergence

from inference._programs import inspect_pair, trace_program
from inference._validate import check_data
from inference.estimators.diagnostics import as_multivariate_normal
from lvm_models import LinearGaussian


def analytic_elbo(model: LinearGaussian, guide: Callable, x: torch.Tensor) -> torch.Tensor:
    """ELBO per point of a linear-Gaussian model with a Gaussian q(z given x), in closed form.

    With q = N(m, S) and p(x given z) = N(W z + b, Psi),
    E_q log p(x given z) = log N(x; W m + b, Psi) - 0.5 tr(Psi^-1 W S W^T), and
    KL(q || N(0, I)) = 0.5 (tr S + m^T m - k - log det S). Exact, so bound properties can be
    checked without Monte-Carlo noise.

    :param model: a :class:`~lvm_models.LinearGaussian`.
    :param guide: any guide whose site for the model's latent is a diagonal Normal (one event
        dim) or a MultivariateNormal with batch shape (N,).
    :param x: data (N, D).
    :returns: (N,) ELBO values in nats.
    """
    if not isinstance(model, LinearGaussian):
        raise TypeError(f"analytic_elbo needs a LinearGaussian model; got {type(model).__name__}")
    check_data(x)
    x = x.to(model.weight.dtype)
    with torch.no_grad():
        (site,) = inspect_pair(model, guide, x).latent_sites
        q = as_multivariate_normal(trace_program(guide, x).nodes[site]["fn"])
        if q is None:
            raise ValueError(f"analytic_elbo needs a Gaussian guide site '{site}'")
        loc, covariance = q.loc.expand(x.shape[0], -1), q.covariance_matrix  # (N, k), (N?, k, k)
        noise_var = model.noise_scale**2  # (D,)
        mean_fit = model.likelihood(loc).log_prob(x)  # log N(x; W m + b, Psi), (N,)
        weighted = model.weight / noise_var.sqrt().unsqueeze(-1)  # Psi^-1/2 W, (D, k)
        trace_term = 0.5 * (covariance * (weighted.T @ weighted)).sum((-2, -1))  # (N?,)
        prior = MultivariateNormal(torch.zeros_like(loc), scale_tril=_identity_like(covariance))
        return mean_fit - trace_term - kl_divergence(q, prior).expand(x.shape[0])


def _identity_like(covariance: torch.Tensor) -> torch.Tensor:
    size = covariance.shape[-1]
    identity = torch.eye(size, dtype=covariance.dtype, device=covariance.device)
    return identity.expand(*covariance.shape[:-2], size, size)
