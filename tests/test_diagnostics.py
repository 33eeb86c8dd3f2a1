from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.optimize
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


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tensors here hold a few thousand numbers: one thread is the fastest, and on a busy
    machine a second one only waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def _channel(information: float, seed: int = 0) -> LinearGaussian:
    """A linear-Gaussian model, D = 6 and k = 2, whose I(x; z) = 0.5 log det(I + W^T Psi^-1 W)
    is ``information`` nats: a random non-orthogonal W scaled to hit it."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    noise = torch.full((6,), 0.5, dtype=torch.float64)
    scaled = direction / noise.unsqueeze(-1)
    eigenvalues = torch.linalg.eigvalsh(scaled.T @ scaled)

    def excess(log_scale: float) -> float:
        return 0.5 * torch.log1p(math.exp(2 * log_scale) * eigenvalues).sum().item() - information

    scale = math.exp(scipy.optimize.brentq(excess, -20.0, 20.0))
    bias = torch.randn(6, generator=generator, dtype=torch.float64)
    return LinearGaussian.from_params(scale * direction, bias, noise)


def _closed_form_information(model: LinearGaussian) -> float:
    scaled = model.weight / model.noise_scale.unsqueeze(-1)
    eye = torch.eye(model.latent_dim, dtype=torch.float64)
    return 0.5 * torch.logdet(eye + scaled.T @ scaled).item()


CHANNEL_POINTS = 1000
INFORMATION = (1.0, 2.0, 4.0, 8.0)


@pytest.fixture(scope="module")
def channels():
    """diagnose by each method on N = 1000 draws of channels with I(x; z) = 1, 2, 4, 8 nats."""
    results = {}
    for information in INFORMATION:
        model = _channel(information)
        pyro.set_rng_seed(1)
        x = model.sample(CHANNEL_POINTS)
        results[information] = {
            method: diagnose(
                model, ExactPosterior(model), x, with_exact=False, mutual_info_method=method, seed=0
            )
            for method in ("auto", "knn", "aggregate")
        }
    return results


def test_channel_has_the_information_asked_for():
    assert _closed_form_information(_channel(3.0)) == pytest.approx(3.0, rel=1e-9)


@pytest.mark.parametrize("method", ["auto", "knn"])
@pytest.mark.parametrize("information", INFORMATION)
def test_mutual_information_matches_the_linear_gaussian_closed_form(channels, information, method):
    # q the exact posterior, a 2-D latent: within 10% of I(x; z) = 0.5 log det(I + W^T Psi^-1
    # W) from 1 to 8 nats (past log N = 6.9), and within Z of its own standard errors, by
    # default and by the k-NN estimate alone.
    diagnosis = channels[information][method]
    assert not diagnosis.mutual_info_is_bound
    error = abs(diagnosis.mutual_info - information)
    assert error < 0.1 * information
    assert error < Z * diagnosis.mutual_info_stderr


def test_default_keeps_the_aggregate_estimate_where_its_bias_bound_is_within_noise(channels):
    methods = {i: channels[i]["auto"].mutual_info_method for i in INFORMATION}
    assert methods == {1.0: "aggregate", 2.0: "aggregate", 4.0: "knn", 8.0: "knn"}


@pytest.mark.parametrize("information", INFORMATION)
def test_aggregate_estimate_is_accurate_or_flagged_as_a_bound(channels, information):
    diagnosis = channels[information]["aggregate"]
    assert diagnosis.mutual_info_method == "aggregate"
    assert diagnosis.mutual_info_ceiling == pytest.approx(math.log(CHANNEL_POINTS))
    if diagnosis.mutual_info_is_bound:
        # A lower bound: below the truth, up to its noise.
        assert diagnosis.mutual_info < information + Z * diagnosis.mutual_info_stderr
    else:
        assert abs(diagnosis.mutual_info - information) < 0.1 * information


def test_aggregate_estimate_saturates_below_log_n_and_says_so(channels):
    # 8 nats > log 1000 = 6.9: the aggregate estimate cannot reach it, whatever the draws.
    diagnosis = channels[8.0]["aggregate"]
    assert diagnosis.mutual_info_lower <= diagnosis.mutual_info_ceiling
    assert diagnosis.mutual_info_is_bound
    assert diagnosis.mutual_info_upper - diagnosis.mutual_info_lower > 1.0


@pytest.mark.parametrize("information", (1.0, 2.0))
def test_aggregate_bounds_bracket_the_information(channels, information):
    # InfoNCE below, leave-one-out above, each in expectation; one data set, so each side
    # gets Z standard errors of the aggregate estimate.
    diagnosis = channels[information]["aggregate"]
    slack = Z * diagnosis.mutual_info_stderr
    assert diagnosis.mutual_info_lower - slack <= information <= diagnosis.mutual_info_upper + slack


@pytest.fixture(scope="module")
def replicates():
    """diagnose on 24 independent data sets (fresh x and draws) of a mis-specified pair.

    x comes from a model whose first column of W is 1.5 times the diagnosed model's, so the
    aggregate posterior is not the prior and I_q < rate strictly; the second latent unit's
    activity Var_x(E_q[z_2]) = a / (1 + a), a = w^2 / psi^2, is exactly the threshold 0.01.
    """
    column = torch.tensor([1.0, 2.0, -1.0, 0.0], dtype=torch.float64)
    noise = torch.full((4,), 0.5, dtype=torch.float64)
    weak = math.sqrt(0.25 / 99)  # a = 1/99: activity 0.01
    threshold_column = torch.tensor([0.0, 0.0, 0.0, weak], dtype=torch.float64)
    weight = torch.stack([column, threshold_column], -1)
    model = LinearGaussian.from_params(weight, torch.zeros(4), noise)
    source = LinearGaussian.from_params(
        torch.stack([1.5 * column, threshold_column], -1), torch.zeros(4), noise
    )
    diagnoses = {"knn": [], "aggregate": []}
    for seed in range(REPLICATES):
        pyro.set_rng_seed(200 + seed)
        x = source.sample(REPLICATE_POINTS)
        for method, results in diagnoses.items():
            results.append(
                diagnose(
                    model,
                    ExactPosterior(model),
                    x,
                    with_exact=False,
                    mutual_info_method=method,
                    seed=seed,
                )
            )
    return diagnoses


REPLICATES, REPLICATE_POINTS = 24, 300
# (R - 1) s^2 / sigma^2 ~ chi2(R - 1) for R normal replicates with standard deviation sigma:
# the ratio of their spread to a right standard error lies in these limits but with
# probability 6e-5 (Z = 4 two-sided).
_TAIL = 3e-5
SPREAD_LIMITS = tuple(
    math.sqrt(scipy.stats.chi2.ppf(q, REPLICATES - 1) / (REPLICATES - 1))
    for q in (_TAIL, 1 - _TAIL)
)


def _spread_over_stderr(values, stderrs) -> float:
    values = torch.tensor(values, dtype=torch.float64)
    stderrs = torch.tensor(stderrs, dtype=torch.float64)
    return (values.std() / stderrs.pow(2).mean().sqrt()).item()


@pytest.mark.parametrize(
    ("figure", "method"),
    [
        ("rate", "knn"),
        ("distortion", "knn"),
        ("mutual_info", "knn"),
        ("mutual_info", "aggregate"),
    ],
)
def test_stderr_matches_the_spread_of_replicates(replicates, figure, method):
    assert {d.mutual_info_method for d in replicates[method]} == {method}
    values = [getattr(d, figure) for d in replicates[method]]
    stderrs = [getattr(d, f"{figure}_stderr") for d in replicates[method]]
    low, high = SPREAD_LIMITS
    assert low < _spread_over_stderr(values, stderrs) < high


def test_mutual_information_of_the_replicates_lies_below_their_rate(replicates):
    # q(z) differs from p(z) here, so I_q = R - KL(q(z) || p(z)) < R; the clamp at the rate
    # must not be what the estimate reads.
    diagnoses = replicates["knn"]
    gaps = torch.tensor([d.rate - d.mutual_info for d in diagnoses], dtype=torch.float64)
    assert gaps.mean() > Z * gaps.std() / math.sqrt(len(diagnoses))
    assert all(d.mutual_info < d.rate for d in diagnoses)


@pytest.mark.parametrize("unit", [0, 1], ids=["active", "at_threshold"])
def test_unit_activity_stderr_matches_the_spread_of_replicates(replicates, unit):
    values = [d.unit_activity[unit] for d in replicates["knn"]]
    stderrs = [d.unit_activity_stderr[unit] for d in replicates["knn"]]
    low, high = SPREAD_LIMITS
    assert low < _spread_over_stderr(values, stderrs) < high


def test_unit_at_the_threshold_is_counted_uncertain(replicates):
    # Its activity is the threshold itself, so it lies within 2 standard errors of it with
    # probability 0.954 per replicate; fewer flags than the binomial's 6e-5 quantile fail.
    diagnoses = replicates["knn"]
    flagged = sum(d.active_units_uncertain == 1 for d in diagnoses)
    assert flagged > scipy.stats.binom.ppf(6e-5, len(diagnoses), 0.954)
    assert all(d.active_units in (1, 2) for d in diagnoses)


def test_clearly_active_and_inactive_units_are_not_uncertain():
    weight = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    model = LinearGaussian.from_params(weight, torch.zeros(3), torch.full((3,), 0.3))
    x = model.sample(300)
    diagnosis = diagnose(model, ExactPosterior(model), x, seed=0)
    assert diagnosis.active_units_uncertain == 0
    assert diagnosis.unit_activity[1] == 0.0


def test_mutual_info_method_must_be_known(linear):
    model, x = linear
    with pytest.raises(ValueError, match="mutual_info_method"):
        diagnose(model, ExactPosterior(model), x, mutual_info_method="kde")


def test_knn_method_refuses_a_discrete_latent():
    generator = torch.Generator().manual_seed(0)
    model = GaussianMixture.from_params(
        torch.zeros(2, dtype=torch.float64),
        torch.randn(2, 2, generator=generator, dtype=torch.float64),
        torch.ones(2, 2, dtype=torch.float64),
    )
    x = model.sample(50)
    with pytest.raises(ValueError, match="discrete"):
        diagnose(model, AmortizedCategorical(2, 2).double(), x, mutual_info_method="knn")


def test_diagnosis_serialises_to_json(linear):
    model, x = linear
    diagnosis = diagnose(model, ExactPosterior(model), x, seed=0)
    assert json.loads(json.dumps(diagnosis.to_dict()))["gaps"] is None


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
