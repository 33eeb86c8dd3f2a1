"""Seeded, offline data sets with a known (or reference) density.

Every loader takes ``seed`` and returns a :class:`Dataset` whose ``x`` is a float32 tensor of
shape (N, D); the same seed gives the identical tensor. For the synthetic Gaussians the seed fixes
both the parameters of the distribution and the draws from it, so a different seed gives a
different distribution as well as different points. Randomness comes from a local
``torch.Generator`` (scikit-learn's ``random_state`` for the moons), never from a global random
state. Nothing is downloaded: the digits are scikit-learn's bundled copy of the UCI handwritten
digits, :func:`sklearn.datasets.load_digits` (1797 images of 8 x 8 pixels, integers 0..16).

Usage::

    data = load("correlated-gaussian", seed=1, num_data=500)
    data.x.shape                       # torch.Size([500, 8])
    data.log_density(data.x).mean()    # average exact log p_data(x), nats
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from sklearn.datasets import load_digits, make_moons
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from lvm_models._base import check_seed, seed_32

LogDensity = Callable[[torch.Tensor], torch.Tensor]

_DIGIT_LEVELS = 17  # load_digits pixels are the integers 0..16
# Keeps dequantised values at least this far (in pixel units) inside their bin, so that float32
# rounding never yields exactly 0 or 1 nor moves a value into the neighbouring bin.
_DEQUANTIZATION_MARGIN = 1e-5
_MIXTURE_SEPARATION = 4.0  # minimum distance between component means: >= 8 component stds


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set and, where known, the exact density it was drawn from.

    :param name: registry name, e.g. ``"correlated-gaussian"``.
    :param x: (N, D) float32 data.
    :param description: one line for tables and ``lvm list``.
    :param binary: True when every entry of ``x`` is 0 or 1.
    :param log_density: exact log p_data in nats of the distribution the data were drawn from,
        per point: an (M, D) tensor to an (M,) float64 tensor, computed in float64; None when
        unknown.
    """

    name: str
    x: torch.Tensor
    description: str
    binary: bool = False
    log_density: LogDensity | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.dtype != torch.float32:
            raise ValueError(
                "x must be a 2-D float32 tensor (N, D); "
                f"got shape {tuple(self.x.shape)}, dtype {self.x.dtype}"
            )


def _check_at_least(name: str, value: float, minimum: float) -> None:
    """``value >= minimum``; an integer where ``minimum`` is one (a count, not a bool)."""
    if isinstance(minimum, int):
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not integral or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    elif not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= minimum):
        raise ValueError(f"{name} must be a finite number >= {minimum}; got {value!r}")


def _data_seed(seed: object) -> int:
    """A data set's seed: an integer in [0, 2**63 - 1], as 32 bits (:func:`seed_32`)."""
    if seed is None:
        raise ValueError("seed must be an integer in [0, 2**63 - 1] for a data set; got None")
    return seed_32(check_seed(seed))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_data_seed(seed))


def _uniform(
    low: float, high: float, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Float64 draws from Uniform(low, high) of the given shape."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _log_density_of(distribution: Distribution) -> LogDensity:
    """Wrap a float64 torch distribution with event shape (D,) as a checked (M, D) -> (M,) map."""
    data_dim = distribution.event_shape[0]

    def log_density(x: torch.Tensor) -> torch.Tensor:
        """Exact log p_data(x) in nats, float64: (M, D) -> (M,)."""
        if x.ndim != 2 or x.shape[1] != data_dim:
            raise ValueError(f"x must have shape (M, {data_dim}); got {tuple(x.shape)}")
        return distribution.log_prob(x.to(torch.float64))

    return log_density


def _sample_gaussian(
    mean: torch.Tensor, covariance: torch.Tensor, num_data: int, generator: torch.Generator
) -> torch.Tensor:
    """(num_data, D) float64 draws from N(mean, covariance), using only ``generator``."""
    cholesky = torch.linalg.cholesky(covariance)
    noise = torch.randn(num_data, mean.shape[0], generator=generator, dtype=torch.float64)
    return mean + noise @ cholesky.T


def independent_gaussian(num_data: int = 2000, data_dim: int = 8, seed: int = 0) -> Dataset:
    """Draws from N(mu, diag(sigma^2)), mu_d ~ U(-2, 2), sigma_d ~ U(0.5, 2); exact log_density.

    :returns: a Dataset with ``x`` of shape (num_data, data_dim).
    """
    _check_at_least("num_data", num_data, 1)
    _check_at_least("data_dim", data_dim, 1)
    generator = _generator(seed)
    mean = _uniform(-2.0, 2.0, (data_dim,), generator)
    scale = _uniform(0.5, 2.0, (data_dim,), generator)
    x = _sample_gaussian(mean, torch.diag(scale**2), num_data, generator)
    return Dataset(
        name="independent-gaussian",
        x=x.float(),
        description=f"{data_dim}-D Gaussian with independent coordinates, N={num_data}",
        log_density=_log_density_of(Independent(Normal(mean, scale), 1)),
    )


def correlated_gaussian(num_data: int = 2000, data_dim: int = 8, seed: int = 0) -> Dataset:
    """Draws from N(mu, A A^T + diag(psi)) with a (D, 2) loading A: strongly correlated coordinates.

    A's first column is +-U(1, 2) and its second U(-1, 1), so each row lies within 45 degrees of
    the first axis and most pairs of coordinates have |correlation| well above 0.5;
    psi_d ~ U(0.05, 0.1) and mu_d ~ U(-2, 2). log_density is exact.

    :returns: a Dataset with ``x`` of shape (num_data, data_dim).
    """
    _check_at_least("num_data", num_data, 1)
    _check_at_least("data_dim", data_dim, 2)
    generator = _generator(seed)
    mean = _uniform(-2.0, 2.0, (data_dim,), generator)
    signs = torch.randint(0, 2, (data_dim,), generator=generator, dtype=torch.float64) * 2 - 1
    main_factor = signs * _uniform(1.0, 2.0, (data_dim,), generator)
    second_factor = _uniform(-1.0, 1.0, (data_dim,), generator)
    loading = torch.stack([main_factor, second_factor], dim=1)  # (D, 2)
    noise_variance = _uniform(0.05, 0.1, (data_dim,), generator)
    covariance = loading @ loading.T + torch.diag(noise_variance)  # (D, D)
    x = _sample_gaussian(mean, covariance, num_data, generator)
    return Dataset(
        name="correlated-gaussian",
        x=x.float(),
        description=f"{data_dim}-D Gaussian, rank-2-plus-noise covariance, N={num_data}",
        log_density=_log_density_of(MultivariateNormal(mean, covariance_matrix=covariance)),
    )


def _separated_means(
    num_components: int, data_dim: int, generator: torch.Generator
) -> torch.Tensor:
    """(K, D) means uniform in a cube, redrawn until all pairs are _MIXTURE_SEPARATION apart.

    The cube grows by 10% after each rejected draw, so the loop ends for any K and D.
    """
    side = 2 * _MIXTURE_SEPARATION * num_components ** (1 / data_dim)
    # The identity term stops each mean's zero distance to itself from counting.
    self_distance = _MIXTURE_SEPARATION * torch.eye(num_components, dtype=torch.float64)
    while True:
        means = side * (_uniform(0.0, 1.0, (num_components, data_dim), generator) - 0.5)
        if (torch.cdist(means, means) + self_distance).min() >= _MIXTURE_SEPARATION:
            return means
        side *= 1.1


def gaussian_mixture(
    num_data: int = 2000, data_dim: int = 2, num_components: int = 3, seed: int = 0
) -> Dataset:
    """Draws from sum_k w_k N(mu_k, diag(sigma_k^2)), well separated; exact log_density.

    Weights are proportional to U(1, 3) draws; sigma_k,d ~ U(0.2, 0.5); the means are at least
    4 apart, i.e. at least 8 component standard deviations. log_density is the logsumexp over
    components (``torch.distributions.MixtureSameFamily``).

    :returns: a Dataset with ``x`` of shape (num_data, data_dim).
    """
    _check_at_least("num_data", num_data, 1)
    _check_at_least("data_dim", data_dim, 1)
    _check_at_least("num_components", num_components, 1)
    generator = _generator(seed)
    weights = _uniform(1.0, 3.0, (num_components,), generator)
    weights = weights / weights.sum()
    means = _separated_means(num_components, data_dim, generator)  # (K, D)
    scales = _uniform(0.2, 0.5, (num_components, data_dim), generator)  # (K, D)
    components = torch.multinomial(weights, num_data, replacement=True, generator=generator)
    noise = torch.randn(num_data, data_dim, generator=generator, dtype=torch.float64)
    x = means[components] + scales[components] * noise  # (N, D)
    mixture = MixtureSameFamily(Categorical(probs=weights), Independent(Normal(means, scales), 1))
    return Dataset(
        name="gaussian-mixture",
        x=x.float(),
        description=(
            f"{data_dim}-D mixture of {num_components} separated diagonal Gaussians, N={num_data}"
        ),
        log_density=_log_density_of(mixture),
    )


def two_moons(num_data: int = 2000, noise: float = 0.1, seed: int = 0) -> Dataset:
    """scikit-learn's two interleaving half circles, standardised per coordinate.

    ``sklearn.datasets.make_moons(num_data, noise=noise, random_state=seed)``, then each coordinate
    is shifted and scaled to sample mean 0 and (biased) sample variance 1. The density is unknown.

    :returns: a Dataset with ``x`` of shape (num_data, 2).
    """
    _check_at_least("num_data", num_data, 2)
    _check_at_least("noise", noise, 0.0)
    points, _ = make_moons(n_samples=num_data, noise=noise, random_state=_data_seed(seed))
    x = torch.from_numpy(points)
    x = (x - x.mean(0)) / x.std(0, correction=0)
    return Dataset(
        name="two-moons",
        x=x.float(),
        description=f"two moons (noise {noise}), standardised, N={num_data}",
    )


def _digit_pixels() -> torch.Tensor:
    """(1797, 64) float64 integer pixel values 0..16 of scikit-learn's bundled digits."""
    return torch.from_numpy(load_digits().data)


def binarized_digits(seed: int = 0) -> Dataset:
    """Stochastically binarised digits: x ~ Bernoulli(v / 16) per pixel value v in 0..16.

    :returns: a binary Dataset with ``x`` of shape (1797, 64). The density is unknown.
    """
    generator = _generator(seed)
    pixels = _digit_pixels()
    x = torch.bernoulli(pixels / (_DIGIT_LEVELS - 1), generator=generator)
    return Dataset(
        name="binarized-digits",
        x=x.float(),
        description="8x8 digits (scikit-learn), stochastically binarised, N=1797",
        binary=True,
    )


def dequantized_digits(seed: int = 0) -> Dataset:
    """Uniformly dequantised digits in (0, 1): x = (v + u) / 17, u ~ U(0, 1), v in 0..16.

    This is the standard uniform dequantisation: for any density p on x,
    E_u[log p(x)] - D log 17 is a lower bound on log P(v) of the discrete pixels v
    (the 17^D rescales from x to pixel units). To keep float32 values strictly inside their bin,
    u is drawn from U(delta, 1 - delta) with delta = 1e-5, which lowers that bound by a
    negligible log(1 - 2 delta) per dimension. The density is unknown.

    :returns: a Dataset with ``x`` of shape (1797, 64); floor(17 x) recovers the pixels.
    """
    generator = _generator(seed)
    pixels = _digit_pixels()
    jitter = _uniform(_DEQUANTIZATION_MARGIN, 1 - _DEQUANTIZATION_MARGIN, pixels.shape, generator)
    x = (pixels + jitter) / _DIGIT_LEVELS
    return Dataset(
        name="dequantized-digits",
        x=x.float(),
        description="8x8 digits (scikit-learn), uniformly dequantised to (0, 1), N=1797",
    )


def max_likelihood_gaussian(x: torch.Tensor, covariance: str = "full") -> MultivariateNormal:
    """The Gaussian fitted to x (N, D) by maximum likelihood, in float64.

    mean_hat is the sample mean and Sigma_hat = (1/N) sum_n (x_n - mean_hat)(x_n - mean_hat)^T the
    biased sample covariance, or its diagonal for ``covariance="diagonal"``.

    :raises ValueError: for another ``covariance``, x not 2-D or with fewer than 2 rows, or a
        singular Sigma_hat (a constant column, or collinear columns for ``"full"``).
    """
    if covariance not in ("full", "diagonal"):
        raise ValueError(f"covariance must be 'full' or 'diagonal'; got {covariance!r}")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be 2-D (N, D) with N >= 2; got shape {tuple(x.shape)}")
    points = x.to(torch.float64)
    mean = points.mean(0)
    centred = points - mean
    sample_covariance = centred.T @ centred / points.shape[0]  # (D, D)
    if covariance == "diagonal":
        sample_covariance = torch.diag(torch.diagonal(sample_covariance))
    cholesky, info = torch.linalg.cholesky_ex(sample_covariance)
    if info.item() > 0:
        raise ValueError(
            "x has a singular sample covariance (a constant or collinear column), "
            "so no maximum-likelihood Gaussian density exists"
        )
    return MultivariateNormal(mean, scale_tril=cholesky)


def gaussian_max_log_likelihood(x: torch.Tensor, covariance: str = "full") -> torch.Tensor:
    """Per-point log N(x_n; mean_hat, Sigma_hat) in nats under the Gaussian fitted to x by ML.

    See :func:`max_likelihood_gaussian`. The mean over points,
    -0.5 * (D log(2 pi) + log det Sigma_hat + D), is the largest average log-likelihood that any
    Gaussian (resp. diagonal Gaussian) reaches on x: an in-sample reference for models that
    contain that family.

    :param x: (N, D) data with N >= 2.
    :param covariance: ``"full"`` or ``"diagonal"``.
    :returns: (N,) float64 tensor.
    """
    return max_likelihood_gaussian(x, covariance).log_prob(x.to(torch.float64))


DATASETS: dict[str, Callable[..., Dataset]] = {
    "independent-gaussian": independent_gaussian,
    "correlated-gaussian": correlated_gaussian,
    "gaussian-mixture": gaussian_mixture,
    "two-moons": two_moons,
    "binarized-digits": binarized_digits,
    "dequantized-digits": dequantized_digits,
}


def load(name: str, *, seed: int = 0, **kwargs: Any) -> Dataset:
    """Call the loader registered under ``name`` in :data:`DATASETS` with ``seed`` and kwargs.

    :raises ValueError: when ``name`` is not registered; the message lists the known names.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name](seed=seed, **kwargs)
