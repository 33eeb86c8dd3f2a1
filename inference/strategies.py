"""Hypothesis strategies that draw random models, guides and data for property tests.

Importing this module does not import hypothesis; calling a strategy does. Parameters come
from a drawn integer seed (so shrinking moves between whole parameter sets) and a few drawn
scales that shape the problem (noise level, how far off a guide is placed).

Usage::

    from hypothesis import given
    from inference import check_bounds
    from inference.strategies import linear_gaussian_models, gaussian_guides

    @given(linear_gaussian_models(), st.data())
    def test_my_pair(model, data):
        x = model.sample(20)
        check_bounds(model, data.draw(gaussian_guides(model)), x)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch

from guides import AmortizedCategorical, AmortizedGaussian, ExactPosterior, PriorGuide
from lvm_models import GaussianMixture, GaussianVAE, LinearGaussian

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy


def _st() -> ModuleType:
    from hypothesis import strategies

    return strategies


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_gaussian_models(
    max_data_dim: int = 8, max_latent_dim: int = 4, data_dim: int | None = None
) -> SearchStrategy[LinearGaussian]:
    """Float64 ``LinearGaussian`` models, D in [1, max_data_dim] (or exactly ``data_dim``),
    k in [1, max_latent_dim], noise standard deviations around exp(U(-2, 1))."""
    st = _st()
    data_dims = st.just(data_dim) if data_dim is not None else st.integers(1, max_data_dim)

    @st.composite
    def draw(draw_from: DrawFn) -> LinearGaussian:
        data_dim = draw_from(data_dims)
        latent_dim = draw_from(st.integers(1, max_latent_dim))
        log_noise = draw_from(st.floats(-2.0, 1.0))
        generator = _generator(draw_from(st.integers(0, 2**31 - 1)))
        weight = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
        bias = torch.randn(data_dim, generator=generator, dtype=torch.float64)
        noise = torch.exp(
            log_noise + 0.3 * torch.randn(data_dim, generator=generator, dtype=torch.float64)
        )
        return LinearGaussian.from_params(weight, bias, noise)

    return draw()


def gaussian_mixtures(
    max_data_dim: int = 4, max_components: int = 4
) -> SearchStrategy[GaussianMixture]:
    """Float64 ``GaussianMixture`` models with random weights, means and scales."""
    st = _st()

    @st.composite
    def draw(draw_from: DrawFn) -> GaussianMixture:
        data_dim = draw_from(st.integers(1, max_data_dim))
        components = draw_from(st.integers(1, max_components))
        spread = draw_from(st.floats(0.5, 5.0))
        generator = _generator(draw_from(st.integers(0, 2**31 - 1)))
        shape = (components, data_dim)
        return GaussianMixture.from_params(
            torch.randn(components, generator=generator, dtype=torch.float64),
            spread * torch.randn(shape, generator=generator, dtype=torch.float64),
            0.3 + torch.rand(shape, generator=generator, dtype=torch.float64),
        )

    return draw()


def mlp_decoder_models(
    max_data_dim: int = 4, latent_dims: tuple[int, ...] = (1, 2)
) -> SearchStrategy[GaussianVAE]:
    """Small float64 ``GaussianVAE`` models with a 1-D or 2-D latent (exact by quadrature)."""
    st = _st()

    @st.composite
    def draw(draw_from: DrawFn) -> GaussianVAE:
        data_dim = draw_from(st.integers(1, max_data_dim))
        latent_dim = draw_from(st.sampled_from(latent_dims))
        torch_seed = draw_from(st.integers(0, 2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            return GaussianVAE(data_dim, latent_dim, hidden=(8,)).double()

    return draw()


def gaussian_guides(model: LinearGaussian | GaussianVAE) -> SearchStrategy[Callable]:
    """Guides for a model with a Gaussian latent ``"z"``: the prior, a random encoder, a badly
    placed fixed Gaussian, and (for a ``LinearGaussian``) the exact posterior."""
    st = _st()
    choices = [
        st.just(PriorGuide(model)),
        st.integers(0, 2**31 - 1).map(lambda seed: _random_encoder(model, seed)),
        st.tuples(st.floats(-4.0, 4.0), st.floats(-3.0, 1.0)).map(
            lambda loc_logscale: _fixed_gaussian(model.latent_dim, *loc_logscale)
        ),
    ]
    if isinstance(model, LinearGaussian):
        choices.append(st.just(ExactPosterior(model)))
    return st.one_of(choices)


def overdispersed_gaussian_guides(model: LinearGaussian) -> SearchStrategy[Callable]:
    """Poor but valid proposals for a ``LinearGaussian``: the prior, or a fixed Gaussian placed
    off centre (loc in [-2, 2]) and at least as broad as the prior (scale in [1, e]).

    Every posterior of a linear-Gaussian model has covariance (I + W^T Psi^-1 W)^-1 <= I, so
    these proposals are broader than it: the importance weights have finite variance (finite
    chi^2(p(z given x) || q)) and log p(x) - E[IW_K] falls like chi^2 / (2K).
    """
    st = _st()
    return st.one_of(
        st.just(PriorGuide(model)),
        st.tuples(st.floats(-2.0, 2.0), st.floats(0.0, 1.0)).map(
            lambda loc_logscale: _fixed_gaussian(model.latent_dim, *loc_logscale)
        ),
    )


def categorical_guides(model: GaussianMixture) -> SearchStrategy[Callable]:
    """Guides for a mixture: the prior, or a random amortised categorical encoder."""
    st = _st()
    return st.one_of(
        st.just(PriorGuide(model)),
        st.integers(0, 2**31 - 1).map(lambda seed: _random_categorical(model, seed)),
    )


def _random_encoder(model: LinearGaussian | GaussianVAE, seed: int) -> AmortizedGaussian:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AmortizedGaussian(model.data_dim, model.latent_dim, hidden=(8,)).double()


def _random_categorical(model: GaussianMixture, seed: int) -> AmortizedCategorical:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AmortizedCategorical(model.data_dim, model.num_components, hidden=(8,)).double()


def _fixed_gaussian(latent_dim: int, loc: float, log_scale: float) -> Callable:
    """q(z given x) = N(loc, exp(log_scale)^2 I) for every x: usually a badly placed proposal."""
    scale = math.exp(log_scale)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z",
                dist.Normal(x.new_full((latent_dim,), loc), scale).to_event(1),
            )

    return guide


def data_from(model: Callable, max_num_data: int = 30) -> SearchStrategy[torch.Tensor]:
    """(N, D) data drawn from ``model`` itself with a drawn seed, N in [2, max_num_data]."""
    st = _st()

    @st.composite
    def draw(draw_from: DrawFn) -> torch.Tensor:
        num_data = draw_from(st.integers(2, max_num_data))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(draw_from(st.integers(0, 2**31 - 1)))
            return model.sample(num_data)

    return draw()
