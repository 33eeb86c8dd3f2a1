"""Laws of the bounds, checked on random models and guides drawn by hypothesis.

Where both sides are Gaussian the ELBO is analytic and the laws are checked exactly; elsewhere
the tolerances come from each estimate's own standard error (``check_bounds``).
"""

from __future__ import annotations

import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from guides import ExactPosterior, PriorGuide
from inference import check_bounds, elbo, exact_log_marginal
from inference.analytic import analytic_elbo
from inference.strategies import (
    categorical_guides,
    data_from,
    gaussian_guides,
    gaussian_mixtures,
    linear_gaussian_models,
    mlp_decoder_models,
)
from lvm_models import GaussianVAE, LinearGaussian, datasets

ROUND_OFF = 1e-9


@settings(max_examples=60, deadline=None)
@given(linear_gaussian_models(), st.data())
def test_analytic_elbo_is_below_log_marginal_for_every_guide(model, data):
    x = data.draw(data_from(model))
    guide = data.draw(gaussian_guides(model))
    gap = model.log_marginal(x) - analytic_elbo(model, guide, x)
    assert bool((gap >= -ROUND_OFF * (1 + gap.abs())).all())


@settings(max_examples=30, deadline=None)
@given(linear_gaussian_models(), st.data())
def test_exact_posterior_makes_the_analytic_elbo_tight(model, data):
    x = data.draw(data_from(model))
    torch.testing.assert_close(
        analytic_elbo(model, ExactPosterior(model), x), model.log_marginal(x), rtol=1e-9, atol=1e-9
    )


@settings(max_examples=40, deadline=None)
@given(gaussian_mixtures(), st.data())
def test_enumerated_elbo_of_a_mixture_is_below_log_marginal(model, data):
    x = data.draw(data_from(model))
    guide = data.draw(categorical_guides(model))
    q_probs = _categorical_probs(guide, x)  # (N, K)
    log_joint = (
        torch.log_softmax(model.logits, -1)
        + model.likelihood(torch.arange(model.num_components).unsqueeze(-1)).log_prob(x).T
    )  # (N, K): log p(x_n, z = j)
    exact_elbo = (q_probs * (log_joint - q_probs.clamp_min(1e-300).log())).sum(-1)
    assert bool((exact_elbo <= model.log_marginal(x) + ROUND_OFF).all())


@settings(max_examples=12, deadline=None)
@given(linear_gaussian_models(max_data_dim=5, max_latent_dim=3), st.data())
def test_iw_is_monotone_in_k_and_below_log_marginal_for_linear_gaussian(model, data):
    x = data.draw(data_from(model, max_num_data=10))
    check_bounds(
        model, data.draw(gaussian_guides(model)), x, num_samples=(1, 10, 100), particles_per_row=500
    )


@settings(max_examples=15, deadline=None)
@given(mlp_decoder_models(), st.data())
def test_bounds_hold_for_mlp_decoders_against_quadrature(model, data):
    x = data.draw(data_from(model, max_num_data=8))
    check_bounds(
        model, data.draw(gaussian_guides(model)), x, num_samples=(1, 10, 100), particles_per_row=500
    )


@settings(max_examples=8, deadline=None)
@given(linear_gaussian_models(max_data_dim=4, max_latent_dim=2), st.data())
def test_iw_approaches_log_marginal_as_k_grows(model, data):
    x = data.draw(data_from(model, max_num_data=6))
    guide = data.draw(gaussian_guides(model))
    report = check_bounds(model, guide, x, num_samples=(1, 1000), particles_per_row=2000)
    gap_small_k = (report.exact - report.iw[1].per_point).mean()
    gap_large_k = (report.exact - report.iw[1000].per_point).mean()
    assert gap_large_k <= gap_small_k + 1e-9


@settings(max_examples=25, deadline=None)
@given(linear_gaussian_models(), st.data())
def test_a_linear_model_with_zero_weight_and_the_prior_guide_is_tight(model, data):
    collapsed = LinearGaussian.from_params(
        torch.zeros_like(model.weight), model.bias, model.noise_scale
    )
    x = data.draw(data_from(model))
    estimate = elbo(collapsed, PriorGuide(collapsed), x, num_particles=20, seed=0)
    torch.testing.assert_close(estimate.per_point, collapsed.log_marginal(x), rtol=0, atol=1e-9)
    assert estimate.per_point_stderr.max().item() < 1e-9


@settings(max_examples=10, deadline=None)
@given(mlp_decoder_models(), st.data())
def test_a_vae_whose_decoder_ignores_z_with_the_prior_guide_is_tight(model, data):
    model.ignore_latent()
    x = data.draw(data_from(model))
    estimate = elbo(model, PriorGuide(model), x, num_particles=20, seed=0)
    assert estimate.per_point_stderr.max().item() < 1e-9
    torch.testing.assert_close(estimate.per_point, exact_log_marginal(model, x), rtol=0, atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1), st.data())
def test_collapsed_full_covariance_vae_attains_the_best_gaussian_likelihood(data_dim, seed, data):
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(data_dim, data_dim, generator=generator, dtype=torch.float64)
    x = torch.randn(60, data_dim, generator=generator, dtype=torch.float64) @ factor.T + 1.0
    mean = x.mean(0)
    covariance = (x - mean).T @ (x - mean) / x.shape[0]
    best = datasets.gaussian_max_log_likelihood(x, "full")
    vae = GaussianVAE(data_dim, 2, hidden=(4,), covariance="full").double()
    vae.set_collapsed(mean, covariance)
    collapsed_elbo = elbo(vae, PriorGuide(vae), x, num_particles=10, seed=0)
    assert collapsed_elbo.per_point_stderr.max().item() < 1e-9
    torch.testing.assert_close(collapsed_elbo.per_point, best, rtol=0, atol=1e-8)
    # No latent-using linear-Gaussian pair with a Gaussian encoder beats it on the same data.
    rival = data.draw(linear_gaussian_models(data_dim=data_dim))
    rival_guide = data.draw(gaussian_guides(rival))
    assert analytic_elbo(rival, rival_guide, x).mean().item() <= best.mean().item() + ROUND_OFF


def _categorical_probs(guide, x: torch.Tensor) -> torch.Tensor:
    trace = pyro.poutine.trace(guide).get_trace(x)
    fn = trace.nodes["z"]["fn"]
    return fn.probs.expand(x.shape[0], -1)


@pytest.fixture(autouse=True)
def _fresh_param_store():
    yield
    pyro.clear_param_store()
