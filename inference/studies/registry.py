"""Models and guides by name, for the command line (``lvm list`` shows them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyro.nn import PyroModule

from guides import (
    AmortizedCategorical,
    AmortizedGaussian,
    BatchNormGaussian,
    CommittedRateGaussian,
    ExactPosterior,
    MeanField,
    PriorGuide,
    check_standard_normal_prior,
)
from lvm_models import AutoregressiveVAE, BernoulliVAE, GaussianMixture, GaussianVAE, LinearGaussian


@dataclass(frozen=True)
class Entry:
    """A named constructor and the line ``lvm list`` shows for it."""

    build: Callable[..., PyroModule]
    description: str


MODELS: dict[str, Entry] = {
    "factor-analysis": Entry(
        lambda d, k: LinearGaussian(d, k, noise="diagonal"), "linear-Gaussian, diagonal noise"
    ),
    "ppca": Entry(
        lambda d, k: LinearGaussian(d, k, noise="isotropic"), "probabilistic PCA (isotropic noise)"
    ),
    "gaussian-mixture": Entry(GaussianMixture, "mixture of diagonal Gaussians, k components"),
    "gaussian-vae": Entry(
        lambda d, k: GaussianVAE(d, k, covariance="diagonal"), "MLP decoder, diagonal Gaussian"
    ),
    "gaussian-vae-full": Entry(
        lambda d, k: GaussianVAE(d, k, covariance="full"), "MLP mean, full-covariance Gaussian"
    ),
    "bernoulli-vae": Entry(BernoulliVAE, "MLP decoder, factorised Bernoulli (binary data)"),
    "autoregressive-vae": Entry(
        AutoregressiveVAE, "MADE decoder, autoregressive Bernoulli (binary data)"
    ),
}

GUIDES: dict[str, Entry] = {
    "amortized-gaussian": Entry(
        lambda model, num_data: AmortizedGaussian(model.data_dim, model.latent_dim),
        "MLP encoder, diagonal Gaussian q(z|x)",
    ),
    "amortized-categorical": Entry(
        lambda model, num_data: AmortizedCategorical(model.data_dim, model.latent_dim),
        "MLP encoder, categorical q(z|x) (mixtures)",
    ),
    "committed-rate-gaussian": Entry(
        lambda model, num_data: _rate_floored(CommittedRateGaussian, model, delta=0.1),
        "MLP encoder, Gaussian q(z|x) with KL >= 0.1 nat per dimension (delta-VAE)",
    ),
    "batchnorm-gaussian": Entry(
        lambda model, num_data: _rate_floored(BatchNormGaussian, model, gamma=0.5),
        "MLP encoder, batch-normalised means: mean KL >= 0.125 nat per dimension (BN-VAE)",
    ),
    "prior": Entry(lambda model, num_data: PriorGuide(model), "q(z|x) = p(z)"),
    "exact-posterior": Entry(
        lambda model, num_data: ExactPosterior(model), "exact p(z|x) (linear-Gaussian models)"
    ),
    "mean-field": Entry(
        lambda model, num_data: MeanField(num_data, model.latent_dim),
        "one free Gaussian per data point (full batch)",
    ),
}


def _rate_floored(
    family: Callable[..., PyroModule], model: PyroModule, **options: float
) -> PyroModule:
    """A guide whose rate floor is a KL from N(0, I), after checking the model's prior is that."""
    check_standard_normal_prior(model, num_data=1)
    return family(model.data_dim, model.latent_dim, **options)


def lookup(kind: str, table: dict[str, Entry], name: str) -> Entry:
    """The entry called ``name``; a ValueError that lists the known names otherwise."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(table)}")
    return table[name]
