from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.stats
import torch
from _pairs import ChainModel, linear_gaussian

from guides import AmortizedCategorical, ExactPosterior, PriorGuide
from inference import diagnose
from lvm_models import GaussianMixture, LinearGaussian


@pytest.fixture(scope="module")
def linear():
    model = linear_gaussian(data_dim=5, latent_dim=2, noise=0.5)
    return model, model.sample(400)


def _mean_posterior_kl(model: LinearGaussian, x: torch.Tensor) -> float:
    """E_x KL(N(m, S) || N(0, I)) = 0.5 (tr S + |m|^2 - k - log det S), computed directly."""
    posterior = model.posterior(x)
    cov = posterior.covariance_matrix[0]
    mean_sq = posterior.mean.pow(2).sum(-1).mean()
    return 0.5 * (cov.trace() + mean_sq - model.latent_dim - torch.logdet(cov)).item()


def test_rate_of_the_exact_posterior_is_the_closed_form_kl(linear):
    model, x = linear
    diagnosis = diagnose(model, ExactPosterior(model), x, seed=0)
    assert diagnosis.rate_is_analytic
    assert diagnosis.rate == pytest.approx(_mean_posterior_kl(model, x), rel=1e-10)


def test_gap_of_the_exact_posterior_is_zero(linear):
    model, x = linear
    diagnosis = diagnose(model, ExactPosterior(model), x, seed=0)
    assert abs(diagnosis.gap) < 1e-10
    assert diagnosis.elbo == pytest.approx(model.log_marginal(x).mean().item(), abs=1e-10)


def test_elbo_is_minus_rate_plus_distortion_for_a_monte_carlo_rate():
    pair = ChainModel(seed=1)
    x = pair.sample(200)
    diagnosis = diagnose(pair.model, pair.guide, x, num_particles=64, seed=0)
    assert not diagnosis.rate_is_analytic or diagnosis.rate > 0
    assert diagnosis.elbo <= diagnosis.exact


def test_prior_guide_ignores_the_latent(linear):
    model, x = linear
    diagnosis = diagnose(model, PriorGuide(model), x, seed=0)
    assert diagnosis.rate == 0.0
    assert diagnosis.active_units == 0
    assert abs(diagnosis.mutual_info) < 1e-12
    assert diagnosis.latent_ignored


def test_active_units_count_only_the_used_latent_dimensions():
    weight = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    model = LinearGaussian.from_params(weight, torch.zeros(3), torch.full((3,), 0.3))
    x = model.sample(300)
    diagnosis = diagnose(model, ExactPosterior(model), x, seed=0)
    assert diagnosis.active_units == 1
    assert diagnosis.latent_dims == 2
    assert not diagnosis.latent_ignored


def test_mutual_information_matches_the_linear_gaussian_channel():
    # For the exact posterior of a linear-Gaussian model, I(x; z) = 0.5 log det(I + W^T Psi^-1 W).
    model = linear_gaussian(data_dim=3, latent_dim=1, noise=1.0, seed=2)
    x = model.sample(3000)
    scaled = model.weight / model.noise_scale.unsqueeze(-1)
    expected = 0.5 * torch.logdet(torch.eye(1, dtype=torch.float64) + scaled.T @ scaled).item()
    estimates = torch.tensor(
        [diagnose(model, ExactPosterior(model), x, seed=s).mutual_info for s in range(5)]
    )
    # The aggregate-posterior estimator is biased down by at most log N; check against its spread.
    stderr = estimates.std().item() / math.sqrt(5)
    assert abs(estimates.mean().item() - expected) < 4 * stderr + 0.02
    assert bool((estimates <= diagnose(model, ExactPosterior(model), x, seed=0).rate + 0.05).all())


def test_monte_carlo_rate_matches_numerical_integration_when_no_kl_formula_exists():
    model = LinearGaussian.from_params(
        torch.ones(2, 1, dtype=torch.float64), torch.zeros(2), torch.ones(2)
    )
    loc, scale, df = 0.3, 0.8, 5.0

    def student_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.StudentT(df, x.new_full((1,), loc), scale).to_event(1))

    x = model.sample(500)
    diagnosis = diagnose(model, student_guide, x, num_particles=400, seed=0)
    q = scipy.stats.t(df, loc, scale)
    expected, _ = scipy.integrate.quad(
        lambda z: q.pdf(z) * (q.logpdf(z) - scipy.stats.norm.logpdf(z)), -60, 60
    )
    assert not diagnosis.rate_is_analytic
    # Monte Carlo over 500 x 400 draws: standard error well below 0.01 nats here.
    assert diagnosis.rate == pytest.approx(expected, abs=0.01)


def test_discrete_latent_rate_uses_the_categorical_kl():
    model = GaussianMixture(2, 3).double()
    x = model.sample(100)
    diagnosis = diagnose(model, AmortizedCategorical(2, 3).double(), x, seed=0)
    assert diagnosis.rate_is_analytic
    assert diagnosis.latent_dims == 0
    assert diagnosis.rate >= 0


def test_rate_threshold_must_be_positive(linear):
    model, x = linear
    with pytest.raises(ValueError, match="rate_threshold"):
        diagnose(model, PriorGuide(model), x, rate_threshold=0.0)
