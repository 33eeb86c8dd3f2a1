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
from sklearn.decomposition import FactorAnalysis

from guides import ExactPosterior, PriorGuide
from inference import check_bounds, elbo, exact_log_marginal
from inference.estimators.analytic import analytic_elbo
from inference.estimators.bounds import Estimate
from inference.strategies import (
    categorical_guides,
    data_from,
    gaussian_guides,
    gaussian_mixtures,
    linear_gaussian_models,
    mlp_decoder_models,
    overdispersed_gaussian_guides,
)
from lvm_models import GaussianVAE, LinearGaussian, datasets, ppca_max_likelihood

LARGE_K, GAP_SHRINK = 1000, 10.0
ROUND_OFF = 1e-9  # float64 round-off allowed where two closed forms must agree
Z = 4.0  # standard errors: a correct estimator strays this far with probability 6e-5


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


@settings(max_examples=12, deadline=None)
@given(gaussian_mixtures(), st.data())
def test_iw_is_monotone_in_k_and_below_log_marginal_for_mixtures(model, data):
    x = data.draw(data_from(model, max_num_data=10))
    check_bounds(
        model,
        data.draw(categorical_guides(model)),
        x,
        num_samples=(1, 10, 100),
        particles_per_row=500,
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
    # At K = 1 the gap log p(x) - E[IW_K] is KL(q || p(z given x)), here in closed form. With q
    # broader than the posterior, chi^2 = chi^2(p(z given x) || q) is finite and the delta
    # method gives a gap of about chi^2 / (2K) for large K, so a tenth of the K = 1 gap by
    # K = 1000 holds while chi^2 < 200 KL (chi^2 ~ 2 KL for a q close to the posterior); for a q
    # far from it the K = 1000 gap is set by the best of 1000 draws, and on 300 random draws
    # with KL > 0.5 it was at least 67 times smaller than the K = 1 gap.
    x = data.draw(data_from(model, max_num_data=6))
    guide = data.draw(overdispersed_gaussian_guides(model))
    exact = model.log_marginal(x)
    gap_at_1 = (exact - analytic_elbo(model, guide, x)).mean().item()  # no Monte Carlo
    report = check_bounds(model, guide, x, num_samples=(LARGE_K,), particles_per_row=10 * LARGE_K)
    estimate = report.iw[LARGE_K]
    gap_at_large_k = (exact - estimate.per_point).mean().item()
    assert gap_at_large_k - gap_at_1 / GAP_SHRINK < Z * estimate.stderr


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
@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_collapsed_full_covariance_vae_attains_the_best_gaussian_likelihood(data_dim, seed):
    x = _correlated_gaussian_data(data_dim, seed)
    collapsed = _collapsed_elbo(x)
    assert collapsed.per_point_stderr.max().item() < 1e-9
    best = datasets.gaussian_max_log_likelihood(x, "full")
    torch.testing.assert_close(collapsed.per_point, best, rtol=0, atol=1e-8)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1), st.data())
def test_no_latent_using_linear_gaussian_pair_beats_the_collapsed_vae(data_dim, seed, data):
    # Every linear-Gaussian marginal is a Gaussian, so none can beat the ML full Gaussian. The
    # strongest rivals are the ML fits themselves with their exact posteriors (ELBO = their
    # log-likelihood); pPCA with k = D - 1 reproduces the sample covariance, so it ties.
    x = _correlated_gaussian_data(data_dim, seed)
    ceiling = _collapsed_elbo(x).mean
    tolerance = ROUND_OFF * (1 + abs(ceiling))
    random_rival = data.draw(linear_gaussian_models(data_dim=data_dim))
    random_elbo = analytic_elbo(random_rival, data.draw(gaussian_guides(random_rival)), x)
    assert random_elbo.mean().item() <= ceiling + tolerance
    for rival in _maximum_likelihood_linear_gaussians(x):
        rival_elbo = analytic_elbo(rival, ExactPosterior(rival), x)
        torch.testing.assert_close(rival_elbo, rival.log_marginal(x), rtol=0, atol=tolerance)
        assert rival_elbo.mean().item() <= ceiling + tolerance


def _correlated_gaussian_data(data_dim: int, seed: int) -> torch.Tensor:
    """60 points of N(1, Q diag(s^2) Q^T): random rotation Q, standard deviations s in [1/e, e].

    The spread is bounded so that no fit has a near-zero noise variance, where the analytic
    ELBO (a difference of terms of size |x|^2 / psi^2) would lose the float precision the
    comparisons rely on.
    """
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(
        torch.randn(data_dim, data_dim, generator=generator, dtype=torch.float64)
    )
    scales = torch.exp(2 * torch.rand(data_dim, generator=generator, dtype=torch.float64) - 1)
    noise = torch.randn(60, data_dim, generator=generator, dtype=torch.float64)
    return (noise * scales) @ rotation.T + 1.0


def _collapsed_elbo(x: torch.Tensor) -> Estimate:
    """ELBO of GaussianVAE(covariance="full") whose decoder outputs the ML mean and covariance
    whatever z is, with q = prior: the collapsed solution."""
    mean = x.mean(0)
    covariance = (x - mean).T @ (x - mean) / x.shape[0]
    vae = GaussianVAE(x.shape[1], 2, hidden=(4,), covariance="full").double()
    vae.set_collapsed(mean, covariance)
    return elbo(vae, PriorGuide(vae), x, num_particles=10, seed=0)


def _maximum_likelihood_linear_gaussians(x: torch.Tensor) -> list[LinearGaussian]:
    """The ML pPCA (closed form, k < D) and factor analysis (scikit-learn, k < D, or k = 1 when
    D = 1) fits of x."""
    data_dim = x.shape[1]
    fits = [ppca_max_likelihood(x, k) for k in range(1, data_dim)]
    for k in range(1, max(2, data_dim)):
        analysis = FactorAnalysis(n_components=k, random_state=0).fit(x.numpy())
        fits.append(
            LinearGaussian.from_params(
                torch.from_numpy(analysis.components_.T),
                torch.from_numpy(analysis.mean_),
                torch.from_numpy(analysis.noise_variance_).sqrt(),
            )
        )
    return fits


def _categorical_probs(guide, x: torch.Tensor) -> torch.Tensor:
    trace = pyro.poutine.trace(guide).get_trace(x)
    fn = trace.nodes["z"]["fn"]
    return fn.probs.expand(x.shape[0], -1)


@pytest.fixture(autouse=True)
def _fresh_param_store():
    yield
    pyro.clear_param_store()
