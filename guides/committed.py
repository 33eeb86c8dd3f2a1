"""A committed rate (delta-VAE): an encoder whose KL from N(0, I) cannot fall below delta.

Razavi et al. (2019), "Preventing posterior collapse with delta-VAEs", sec. 3: for a standard
normal prior, bound each posterior scale into [sigma_l, sigma_u] with sigma_u < 1. The KL of
one dimension,

    KL(N(mu, sigma^2) || N(0, 1)) = 0.5 (mu^2 + sigma^2 - 1 - log sigma^2),

is at least f(sigma) = 0.5 (sigma^2 - 1 - log sigma^2), its value at mu = 0, and f decreases
on (0, 1]; so with f(sigma_u) = delta every dimension of every q(z given x) has KL >= delta,
and the rate is at least k delta. The floor is built into the guide family, not added to the
objective as a penalty: no parameter of the encoder can buy a smaller KL.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import pyro.poutine as poutine
import torch
from pyro import distributions as dist
from scipy.optimize import brentq

from guides.amortized import _AmortizedGuide
from lvm_models._base import check_positive_int
from lvm_models._nn import MIN_SCALE


class NonStandardPriorError(ValueError):
    """The model's prior for the guide's site is not N(0, I), which a rate bound assumes."""


def standard_normal_kl_floor(scale: float) -> float:
    """f(sigma) = 0.5 (sigma^2 - 1 - log sigma^2): KL(N(0, sigma^2) || N(0, 1)) in nats."""
    return 0.5 * (scale**2 - 1.0 - 2.0 * math.log(scale))


# The largest committed rate per dimension: the floor f at the smallest scale.
MAX_DELTA = standard_normal_kl_floor(MIN_SCALE)


def committed_scale(delta: float) -> float:
    """sigma_u in (0, 1), the root of f(sigma_u) = delta, by Brent's method (float64).

    :raises ValueError: for a delta outside (0, MAX_DELTA), naming it.
    """
    if (
        isinstance(delta, bool)
        or not isinstance(delta, numbers.Real)
        or not 0.0 < delta < MAX_DELTA
    ):
        raise ValueError(
            f"delta must be a number of nats in (0, {MAX_DELTA:.4g}) per latent dimension (a "
            f"committed rate needs a posterior scale in [{MIN_SCALE:g}, 1)); got {delta!r}"
        )
    return brentq(lambda scale: standard_normal_kl_floor(scale) - delta, MIN_SCALE, 1.0, xtol=1e-15)


class CommittedRateGaussian(_AmortizedGuide):
    """q(z given x) = N(mu(x), diag(sigma(x)^2)) with every sigma_j in [sigma_l, sigma_u]:
    a committed rate of ``delta`` nats per latent dimension (Razavi et al., 2019, sec. 3).

    ``sigma = sigma_l + (sigma_u - sigma_l) sigmoid(raw)``, raw and mu from one MLP, with
    sigma_l = ``MIN_SCALE`` and sigma_u < 1 the root of f(sigma_u) = delta,
    f(sigma) = 0.5 (sigma^2 - 1 - log sigma^2) (:func:`committed_scale`). Then, for every x
    and every dimension j,

        KL(q(z_j given x) || N(0, 1)) = 0.5 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2) >= delta,

    with equality at mu_j = 0, sigma_j = sigma_u; the rate E_x KL(q(z given x) || p(z)) is at
    least k delta, whatever the encoder learns.

    The bound holds against a standard normal prior, N(0, I): that of the built-in VAEs and
    linear-Gaussian models. Against any other prior the scale range still holds but the KL
    floor does not follow from it; :func:`check_standard_normal_prior` refuses such a model
    (the command line's registry calls it; a user of ``fit`` calls it on the model once).

    Small delta does not give back :class:`~guides.AmortizedGaussian`: delta must be > 0, and
    every scale stays below sigma_u < 1 however small delta is (sigma_u -> 1 as delta -> 0),
    so the committed guide never widens q beyond the prior's scale.

    :param int data_dim: D.
    :param int latent_dim: k.
    :param float delta: the committed rate per latent dimension, in nats, in (0, MAX_DELTA).
    :param hidden: widths of the encoder's hidden layers.
    :param str site: the name of the latent site it samples.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        delta: float = 0.1,
        hidden: Sequence[int] = (64, 64),
        site: str = "z",
    ) -> None:
        latent_dim = check_positive_int("latent_dim", latent_dim)
        upper_scale = committed_scale(delta)
        super().__init__(data_dim, hidden, 2 * latent_dim, site)
        self.latent_dim = latent_dim
        self.delta = float(delta)
        self.min_scale = MIN_SCALE
        self.max_scale = upper_scale

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        out = self.encoder(x)
        loc, raw_scale = out[..., : self.latent_dim], out[..., self.latent_dim :]
        scale = self.min_scale + (self.max_scale - self.min_scale) * torch.sigmoid(raw_scale)
        return dist.Normal(loc, scale).to_event(1)


def check_standard_normal_prior(
    model: Callable, *args: object, site: str = "z", **kwargs: object
) -> None:
    """Refuse a model whose prior for ``site`` is not N(0, I), from one trace of
    ``model(*args, **kwargs)`` (run without gradients and without moving the global RNG).

    The rate floors of :class:`CommittedRateGaussian` and :class:`~guides.BatchNormGaussian`
    are KLs from N(0, 1) per dimension; this checks that the model's site is a ``Normal``
    (possibly ``.to_event``) with loc 0 and scale 1 everywhere.

    Example::

        check_standard_normal_prior(GaussianVAE(8, 2), x)   # passes
        check_standard_normal_prior(GaussianMixture(8, 3), x)   # NonStandardPriorError

    :raises NonStandardPriorError: naming the site and the prior that came.
    """
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    if site not in trace.nodes or trace.nodes[site]["type"] != "sample":
        raise NonStandardPriorError(f"the model has no latent site {site!r} to bound the rate of")
    prior = trace.nodes[site]["fn"]
    while isinstance(prior, torch.distributions.Independent):
        prior = prior.base_dist
    if not isinstance(prior, torch.distributions.Normal):
        raise NonStandardPriorError(
            f"a rate floor needs the prior of site {site!r} to be N(0, I); got "
            f"{type(prior).__name__}"
        )
    if not (bool((prior.loc == 0).all()) and bool((prior.scale == 1).all())):
        raise NonStandardPriorError(
            f"a rate floor needs the prior of site {site!r} to be N(0, I); got a Normal "
            f"with loc in [{prior.loc.min().item():.4g}, {prior.loc.max().item():.4g}] and "
            f"scale in [{prior.scale.min().item():.4g}, {prior.scale.max().item():.4g}]"
        )
