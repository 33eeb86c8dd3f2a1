from __future__ import annotations

import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.stats
import torch
from _pairs import linear_gaussian

from guides import AmortizedCategorical, ExactPosterior, PriorGuide
from inference import diagnose
from lvm_models import GaussianMixture, LinearGaussian

Z = 4.0  # standard errors: a correct estimator strays this far with probability 6e-5
ROUND_OFF = 1e-9  # float64 sums of the same terms in another order

# A Student-t guide against the model's Normal prior: torch has no KL for the pair.
STUDENT_DF, STUDENT_LOC, STUDENT_SCALE = 5.0, 0.3, 0.8
STUDENT_PARTICLES = 400


@pytest.fixture(scope="module")
def linear():
    pyro.set_rng_seed(0)  # the data must not depend on which tests ran before
    model = linear_gaussian(data_dim=5, latent_dim=2, noise=0.5)
    return model, model.sample(400)


@pytest.fixture(scope="module")
def student_t():
    """p(z) = N(0, 1), p(x given z) = N(z 1, I) in D = 2; q(z given x) = t(5, 0.3, 0.8), any x."""
    pyro.set_rng_seed(0)
    model = LinearGaussian.from_params(
        torch.ones(2, 1, dtype=torch.float64), torch.zeros(2), torch.ones(2)
    )

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            loc = x.new_full((1,), STUDENT_LOC)
            pyro.sample("z", dist.StudentT(STUDENT_DF, loc, STUDENT_SCALE).to_event(1))

    x = model.sample(500)
    diagnosis = diagnose(model, guide, x, num_particles=STUDENT_PARTICLES, seed=0)
    return SimpleNamespace(x=x, diagnosis=diagnosis)


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


def test_elbo_is_minus_rate_plus_distortion_for_a_monte_carlo_rate(student_t):
    diagnosis = student_t.diagnosis
    assert diagnosis.rate_is_analytic is False
    # Rate, distortion and ELBO are read off the same draws, so the identity holds draw by draw:
    # only float64 summation order separates the two sides.
    assert diagnosis.elbo == pytest.approx(
        -(diagnosis.rate + diagnosis.distortion), rel=ROUND_OFF, abs=ROUND_OFF
    )


def test_distortion_of_a_student_t_guide_matches_its_closed_form(student_t):
    # -log p(x given z) = (D/2) log 2 pi + 0.5 sum_d (x_d - z)^2 with z = loc + u, u ~ t(df, 0, s):
    # its mean and variance per point follow from the moments of u (E u = E u^3 = 0).
    q = scipy.stats.t(STUDENT_DF, 0.0, STUDENT_SCALE)
    variance, fourth = q.var(), q.moment(4)
    x = student_t.x
    offset = (x - STUDENT_LOC).sum(-1)  # (N,): sum_d (x_d - loc)
    data_dim = x.shape[1]
    mean = 0.5 * data_dim * math.log(2 * math.pi) + 0.5 * (
        (x - STUDENT_LOC).pow(2).sum(-1) + data_dim * variance
    )  # (N,)
    per_point_variance = offset.pow(2) * variance + 0.25 * data_dim**2 * (fourth - variance**2)
    stderr = (per_point_variance.sum() / STUDENT_PARTICLES).sqrt().item() / x.shape[0]
    assert abs(student_t.diagnosis.distortion - mean.mean().item()) < Z * stderr


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


@pytest.fixture(scope="module")
def channel():
    """Replicates of diagnose on a linear-Gaussian channel, each on fresh data and draws.

    q is the exact posterior, so the aggregate-posterior estimator is InfoNCE (van den Oord et
    al., 2018) with the true density ratio r(x, z) = p(z given x) / p(z) as critic:
    I - E[mutual_info] = E log (1/N) sum_m r(x_m, z_n) lies in [0, log(1 + chi2 / N)] by Jensen
    (E r(x_n, z_n) = 1 + chi2, E r(x_m, z_n) = 1 for m != n), where
    chi2 = chi2(p(x, z) || p(x) p(z)) = det(I + W^T Psi^-1 W) - 1 = exp(2 I) - 1 for a Gaussian
    channel. Each replicate draws new x as well, so their spread is the estimator's whole error.
    """
    model = linear_gaussian(data_dim=3, latent_dim=1, noise=1.0, seed=0)
    scaled = model.weight / model.noise_scale.unsqueeze(-1)
    det = torch.det(torch.eye(1, dtype=torch.float64) + scaled.T @ scaled).item()
    num_data, replicates = 1500, 8
    diagnoses = []
    for seed in range(replicates):
        pyro.set_rng_seed(100 + seed)
        x = model.sample(num_data)
        diagnoses.append(diagnose(model, ExactPosterior(model), x, seed=seed))
    return SimpleNamespace(
        information=0.5 * math.log(det),
        bias_bound=math.log(1 + (det - 1) / num_data),
        mutual_info=torch.tensor([d.mutual_info for d in diagnoses], dtype=torch.float64),
        rate=torch.tensor([d.rate for d in diagnoses], dtype=torch.float64),
    )


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / math.sqrt(values.numel())


def test_mutual_information_matches_the_linear_gaussian_channel(channel):
    # For the exact posterior of a linear-Gaussian model, I(x; z) = 0.5 log det(I + W^T Psi^-1 W).
    mean, stderr = _mean_and_stderr(channel.mutual_info)
    assert channel.information - channel.bias_bound - Z * stderr <= mean
    assert mean <= channel.information + Z * stderr


def test_mutual_information_is_at_most_the_rate(channel):
    # Given x, E[mutual_info] = rate - KL(q(z) || p(z)), q(z) the aggregate posterior.
    mean, stderr = _mean_and_stderr(channel.mutual_info - channel.rate)
    assert mean <= Z * stderr


def test_monte_carlo_rate_matches_numerical_integration_when_no_kl_formula_exists(student_t):
    q = scipy.stats.t(STUDENT_DF, STUDENT_LOC, STUDENT_SCALE)

    def log_ratio(z):
        return q.logpdf(z) - scipy.stats.norm.logpdf(z)

    expected, _ = scipy.integrate.quad(lambda z: q.pdf(z) * log_ratio(z), -60, 60)
    second_moment, _ = scipy.integrate.quad(lambda z: q.pdf(z) * log_ratio(z) ** 2, -60, 60)
    # q ignores x, so the rate averages N * num_particles independent draws of log q - log p.
    num_draws = student_t.x.shape[0] * STUDENT_PARTICLES
    stderr = math.sqrt((second_moment - expected**2) / num_draws)
    assert not student_t.diagnosis.rate_is_analytic
    assert abs(student_t.diagnosis.rate - expected) < Z * stderr


def test_discrete_latent_rate_uses_the_categorical_kl():
    generator = torch.Generator().manual_seed(0)
    model = GaussianMixture.from_params(
        torch.randn(3, generator=generator, dtype=torch.float64),
        3 * torch.randn(3, 2, generator=generator, dtype=torch.float64),
        torch.ones(3, 2, dtype=torch.float64),
    )
    x = model.sample(100)
    guide = AmortizedCategorical(2, 3).double()
    diagnosis = diagnose(model, guide, x, seed=0)
    q = guide.distribution(x).probs  # (N, 3)
    p = torch.softmax(model.logits, -1)  # (3,)
    expected = (q * (q.log() - p.log())).sum(-1).mean().item()
    assert diagnosis.rate_is_analytic
    assert diagnosis.latent_dims == 0
    assert diagnosis.rate == pytest.approx(expected, rel=1e-12)


def test_rate_threshold_must_be_positive(linear):
    model, x = linear
    with pytest.raises(ValueError, match="rate_threshold"):
        diagnose(model, PriorGuide(model), x, rate_threshold=0.0)
