"""Annealed importance sampling and bidirectional Monte Carlo against exact log p(x).

Every tolerance is a multiple of the estimator's own standard error (delta method over the
chains), so the tests check the estimators are right, not merely close.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import FactorAnalysis

from guides import AmortizedGaussian, PriorGuide
from inference import AISEstimate, BDMCResult, ais_log_marginal, bdmc, fit, iw_log_marginal
from lvm_models import BernoulliVAE, GaussianMixture, LinearGaussian, datasets

NUM_SE = 3.0  # tolerance in standard errors


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """AIS here runs thousands of small tensor operations, which one thread does fastest and
    which a busy machine slows down most when split over several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _within(estimate: float, reference: float, stderr: float) -> bool:
    return abs(estimate - reference) <= NUM_SE * stderr


@pytest.fixture(scope="module")
def factor_analysis() -> tuple[LinearGaussian, torch.Tensor]:
    """A 16-D factor analysis model of the (continuous) digits, fitted by scikit-learn, and
    eight of its data points. Noise standard deviations are floored at 0.05 (some pixels are
    always 0), which keeps the posterior's scales within a factor of 5 of each other."""
    pixels = load_digits().data / 16.0  # (1797, 64) in [0, 1]
    fitted = FactorAnalysis(n_components=16, random_state=0).fit(pixels)
    noise_scale = np.maximum(np.sqrt(fitted.noise_variance_), 0.05)
    model = LinearGaussian.from_params(fitted.components_.T, fitted.mean_, noise_scale)
    return model, torch.tensor(pixels[:8])


def test_ais_from_prior_matches_exact_log_marginal(factor_analysis):
    model, x = factor_analysis
    estimate = ais_log_marginal(
        model, None, x, num_steps=500, num_chains=16, num_leapfrog=5, seed=0
    )
    exact = model.log_marginal(x)
    assert isinstance(estimate, AISEstimate)
    assert estimate.per_point.shape == (8,)
    assert _within(estimate.mean, exact.mean().item(), estimate.stderr)
    assert bool(((estimate.acceptance > 0.4) & (estimate.acceptance < 0.9)).all())


def test_ais_with_prior_guide_is_ais_from_the_prior(factor_analysis):
    model, x = factor_analysis
    x = x[:3]
    options = dict(num_steps=20, num_chains=4, num_leapfrog=3, seed=5)
    from_none = ais_log_marginal(model, None, x, **options)
    from_guide = ais_log_marginal(model, PriorGuide(model), x, **options)
    torch.testing.assert_close(from_none.per_point, from_guide.per_point)


def test_ais_weights_are_unbiased_even_with_two_steps():
    """E[w] = p(x) for any number of steps: with the step sizes frozen before the main run, a
    short run is a poor estimator but an exact one (its log mean weight converges to log p(x)
    as chains are added)."""
    weight = torch.tensor([[2.0, 0.5], [1.0, -1.5], [0.3, 0.7]], dtype=torch.float64)
    noise_scale = torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64)
    model = LinearGaussian.from_params(weight, torch.zeros(3, dtype=torch.float64), noise_scale)
    x = torch.tensor([[1.0, 2.0, 0.0], [-2.0, 0.5, 1.0], [3.0, -1.0, 0.2]], dtype=torch.float64)
    estimate = ais_log_marginal(
        model, None, x, num_steps=2, num_chains=4000, num_leapfrog=3, seed=0
    )
    error = (estimate.per_point - model.log_marginal(x)).abs()
    assert bool((error <= NUM_SE * estimate.per_point_stderr).all())


@pytest.fixture(scope="module")
def sandwiches(factor_analysis) -> dict[int, BDMCResult]:
    model, x = factor_analysis
    return {
        steps: bdmc(model, None, x, num_steps=steps, num_chains=16, num_leapfrog=5, seed=1)
        for steps in (50, 500)
    }


def test_bdmc_sandwiches_exact_log_marginal_of_simulated_data(factor_analysis, sandwiches):
    model, x = factor_analysis
    result = sandwiches[500]
    exact = model.log_marginal(result.x).mean().item()
    assert result.certified and result.note == ""
    assert result.x.shape == x.shape and not torch.equal(result.x, x)
    assert set(result.latents) == {"z"}
    assert result.lower.mean <= exact + NUM_SE * result.lower.stderr
    assert result.upper.mean >= exact - NUM_SE * result.upper.stderr
    torch.testing.assert_close(result.width, result.upper.per_point - result.lower.per_point)


def test_bdmc_sandwich_narrows_with_more_steps(sandwiches):
    assert sandwiches[50].width.mean() > 5 * sandwiches[500].width.mean()
    assert sandwiches[500].width.mean() < 1.0


def test_bdmc_on_real_data_is_not_certified(factor_analysis):
    model, x = factor_analysis
    result = bdmc(
        model, None, x[:2], num_steps=10, num_chains=4, num_leapfrog=3, seed=0, simulate=False
    )
    assert not result.certified
    assert "not a certified bound" in result.note
    assert torch.equal(result.x, x[:2]) and result.latents == {}


def _squared_mean_model(x: torch.Tensor) -> None:
    """z ~ N(0, 1), x ~ N(z^2, 0.1^2): for x > 0 the posterior has two modes, +- sqrt(x)."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("x", dist.Normal((z**2).unsqueeze(-1), 0.1).to_event(1), obs=x)


def _grid_log_marginal(log_joint, low: float, high: float, points: int) -> torch.Tensor:
    """log of the integral of exp(log_joint(u)) du over [low, high] by a Riemann sum: (N,)."""
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    return torch.logsumexp(log_joint(grid.unsqueeze(-1)), 0) + math.log(grid[1] - grid[0])


def test_ais_on_bimodal_posterior_matches_brute_force_grid():
    x = torch.tensor([[1.0], [2.0], [0.3], [-0.2]], dtype=torch.float64)

    def log_joint(z):  # (M, 1) -> (M, N)
        prior = dist.Normal(0.0, 1.0).log_prob(z)
        return prior + dist.Normal(z**2, 0.1).log_prob(x.T)

    exact = _grid_log_marginal(log_joint, -8.0, 8.0, 200_001)
    estimate = ais_log_marginal(_squared_mean_model, None, x, num_steps=200, num_chains=32, seed=0)
    assert _within(estimate.mean, exact.mean().item(), estimate.stderr)
    assert bool(((estimate.per_point - exact).abs() <= NUM_SE * estimate.per_point_stderr).all())


LOGITS = torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], dtype=torch.float64)


def _mixture_with_scale(x: torch.Tensor) -> None:
    """k ~ Categorical, s ~ LogNormal(0, 0.5), x ~ N(mu_k, s^2 I): a discrete latent summed
    out by enumeration, and a positive continuous one moved by HMC as log s."""
    with pyro.plate("data", x.shape[0]):
        k = pyro.sample("k", dist.Categorical(logits=LOGITS))
        s = pyro.sample("s", dist.LogNormal(torch.zeros((), dtype=x.dtype), 0.5))
        pyro.sample("x", dist.Normal(MEANS[k], s.unsqueeze(-1)).to_event(1), obs=x)


def test_ais_sums_out_discrete_latent_by_enumeration():
    x = torch.tensor([[-2.1, 0.3], [1.0, 0.5], [0.2, -2.5], [0.0, 0.0]], dtype=torch.float64)

    def log_joint(log_s):  # (M, 1) -> (M, N): log sum_k p(k, s, x) + log |ds/du|
        s = log_s.exp()
        prior = dist.LogNormal(0.0, 0.5).log_prob(s) + log_s
        components = dist.Normal(MEANS, s.unsqueeze(-1)).to_event(1)  # batch (M, K)
        likelihood = components.log_prob(x.unsqueeze(1).unsqueeze(1))  # (N, M, K)
        mixed = torch.logsumexp(likelihood + torch.log_softmax(LOGITS, 0), -1)  # (N, M)
        return prior + mixed.T

    exact = _grid_log_marginal(log_joint, -6.0, 6.0, 100_001)
    estimate = ais_log_marginal(_mixture_with_scale, None, x, num_steps=100, num_chains=32, seed=0)
    assert _within(estimate.mean, exact.mean().item(), estimate.stderr)


def test_ais_of_purely_discrete_model_is_exact_enumeration():
    mixture = GaussianMixture.from_params(LOGITS, MEANS, torch.ones_like(MEANS))
    x = torch.tensor([[-2.1, 0.3], [1.0, 0.5], [0.2, -2.5]], dtype=torch.float64)
    estimate = ais_log_marginal(mixture, None, x, num_steps=10, num_chains=4, seed=0)
    torch.testing.assert_close(estimate.per_point, mixture.log_marginal(x))
    assert bool((estimate.per_point_stderr == 0).all())


def _poisson_latent_model(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        count = pyro.sample("count", dist.Poisson(torch.tensor(3.0)))
        pyro.sample("x", dist.Normal(count.unsqueeze(-1), 1.0).to_event(1), obs=x)


def test_discrete_latent_without_enumerable_support_is_named():
    with pytest.raises(ValueError, match="'count'"):
        ais_log_marginal(_poisson_latent_model, None, torch.ones(3, 1), num_steps=5, num_chains=2)


@pytest.fixture(scope="module")
def trained_vae() -> tuple[BernoulliVAE, AmortizedGaussian, torch.Tensor]:
    """A small Bernoulli VAE of 300 binarised digits, trained briefly."""
    pyro.set_rng_seed(0)
    x = datasets.binarized_digits(seed=0).x[:300]
    model, guide = BernoulliVAE(64, 4, hidden=(32,)), AmortizedGaussian(64, 4, hidden=(32,))
    fit(model, guide, x, steps=300, batch_size=100, lr=1e-2, seed=0, progress=False)
    return model, guide, x[:16]


def test_ais_from_encoder_is_at_least_iw_bound(trained_vae):
    model, guide, x = trained_vae
    estimate = ais_log_marginal(
        model, guide, x, num_steps=100, num_chains=8, num_leapfrog=5, seed=0
    )
    iw = iw_log_marginal(model, guide, x, num_samples=100, seed=0)
    assert estimate.mean >= iw.mean - NUM_SE * math.hypot(estimate.stderr, iw.stderr)


def test_same_seed_gives_same_numbers(trained_vae):
    model, guide, x = trained_vae
    options = dict(num_steps=10, num_chains=3, num_leapfrog=2)
    first = ais_log_marginal(model, guide, x[:4], seed=7, **options)
    again = ais_log_marginal(model, guide, x[:4], seed=7, **options)
    other = ais_log_marginal(model, guide, x[:4], seed=8, **options)
    assert torch.equal(first.per_point, again.per_point)
    assert not torch.equal(first.per_point, other.per_point)
    sandwich = bdmc(model, guide, x[:4], seed=7, **options)
    assert torch.equal(sandwich.x, bdmc(model, guide, x[:4], seed=7, **options).x)


def _guide_of_another_site(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("w", dist.Normal(x.new_zeros(()), 1.0))


def _two_observed_sites(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("a", dist.Normal(z, 1.0), obs=x[:, 0])
        pyro.sample("b", dist.Normal(z, 1.0), obs=x[:, 1])


@pytest.mark.parametrize(
    "options, error, match",
    [
        (dict(num_steps=0), ValueError, "num_steps"),
        (dict(num_steps=True), ValueError, "num_steps"),
        (dict(num_steps=2.5), ValueError, "num_steps"),
        (dict(num_chains=0), ValueError, "num_chains"),
        (dict(num_chains=False), ValueError, "num_chains"),
        (dict(num_leapfrog=0), ValueError, "num_leapfrog"),
        (dict(target_accept=1.0), ValueError, "target_accept"),
        (dict(target_accept="high"), TypeError, "target_accept"),
        (dict(num_warmup_steps=0), ValueError, "num_warmup_steps"),
    ],
)
def test_bad_options_raise_naming_the_argument(options, error, match):
    arguments = dict(num_steps=5, num_chains=2) | options
    x = torch.zeros(2, 2, dtype=torch.float64)
    for estimator in (ais_log_marginal, bdmc):
        with pytest.raises(error, match=match):
            estimator(_two_observed_sites, None, x, **arguments)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.zeros(()), ValueError, "leading dimension of data points"),
        (torch.tensor([[0.0, math.nan]]), ValueError, "NaN"),
        (np.zeros((2, 2)), TypeError, "torch.Tensor"),
    ],
)
def test_bad_data_raises(x, error, match):
    with pytest.raises(error, match=match):
        ais_log_marginal(_squared_mean_model, None, x, num_steps=5, num_chains=2)


def test_guide_missing_latent_site_is_named():
    x = torch.ones(3, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="'z'"):
        ais_log_marginal(_squared_mean_model, _guide_of_another_site, x, num_steps=5, num_chains=2)


def _guide_with_auxiliary_site(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        scale = pyro.sample(
            "scale", dist.LogNormal(x.new_zeros(()), 1.0), infer={"is_auxiliary": True}
        )
        pyro.sample("z", dist.Normal(x.new_zeros(()), scale))


def test_guide_with_auxiliary_site_is_refused():
    x = torch.ones(3, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="auxiliary"):
        ais_log_marginal(
            _squared_mean_model, _guide_with_auxiliary_site, x, num_steps=5, num_chains=2
        )


def test_bdmc_simulation_needs_one_observed_site():
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="exactly one observed site"):
        bdmc(_two_observed_sites, None, x, num_steps=5, num_chains=2)
    result = bdmc(_two_observed_sites, None, x, num_steps=2, num_chains=2, simulate=False)
    assert result.lower.per_point.shape == (3,)


def test_bdmc_simulation_must_match_the_size_of_x():
    with pytest.raises(ValueError, match="elements"):
        bdmc(_squared_mean_model, None, torch.zeros(3, 2), num_steps=5, num_chains=2)


# --- AIS as the reference of compare, diagnose and check_bounds where no exact value exists ---


@pytest.fixture(scope="module")
def factor_analysis_as_a_function(factor_analysis):
    """The same 16-D factor analysis written as a user's plain function: no exact route."""
    model, x = factor_analysis

    def user_model(x):
        with pyro.plate("data", x.shape[0]):
            code = pyro.sample("code", dist.Normal(x.new_zeros(16), 1.0).to_event(1))
            pixels = dist.Normal(code @ model.weight.T + model.bias, model.noise_scale)
            pyro.sample("pixels", pixels.to_event(1), obs=x)

    return user_model, model.log_marginal(x[:4]), x[:4]


def test_compare_adds_an_ais_row_where_no_exact_value_exists(factor_analysis_as_a_function):
    from inference import compare

    model, exact, x = factor_analysis_as_a_function
    table = compare(
        model, PriorGuide(model), x, num_samples=(1, 10), reference="ais", ais_steps=300, seed=0
    )
    assert "no exact value" in table.exact_note
    row = table.row("ais")
    assert _within(row.mean, exact.mean().item(), row.stderr)
    assert row.mean > table.row("iw", 10).mean


def test_diagnose_measures_the_gap_from_ais_when_asked(factor_analysis_as_a_function):
    from inference import diagnose

    model, exact, x = factor_analysis_as_a_function
    plain = diagnose(model, PriorGuide(model), x, seed=0)
    assert plain.reference is None and plain.gap is None
    diagnosis = diagnose(model, PriorGuide(model), x, reference="ais", ais_steps=300, seed=0)
    assert diagnosis.reference == "ais"
    assert diagnosis.gap == pytest.approx(diagnosis.reference_value - diagnosis.elbo)
    assert abs(diagnosis.reference_value - exact.mean().item()) < 0.5


def test_check_bounds_checks_each_bound_against_ais(factor_analysis_as_a_function):
    from inference import check_bounds

    model, _, x = factor_analysis_as_a_function
    report = check_bounds(
        model,
        PriorGuide(model),
        x,
        num_samples=(1, 10),
        particles_per_row=200,
        reference="ais",
        ais_steps=300,
    )
    assert report.exact is None and report.ais is not None
    assert "IW_10 <= AIS" in report.checks


class _TooSmallMultivariateNormal(dist.MultivariateNormal):
    """A Gaussian whose log_prob is 1 nat too small: a guide built on it claims less mass
    than it draws from, so its bounds exceed log p(x) (by 1 nat for the exact posterior)."""

    def log_prob(self, value):
        return super().log_prob(value) - 1.0


def test_check_bounds_against_ais_catches_a_bound_above_log_px(
    factor_analysis, factor_analysis_as_a_function
):
    from inference import check_bounds

    linear_gaussian, _ = factor_analysis
    model, _, x = factor_analysis_as_a_function

    def exact_posterior_claiming_less_mass(x):
        posterior = linear_gaussian.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "code", _TooSmallMultivariateNormal(posterior.loc, scale_tril=posterior.scale_tril)
            )

    with pytest.raises(AssertionError, match="<= AIS"):
        check_bounds(
            model,
            exact_posterior_claiming_less_mass,
            x,
            num_samples=(1, 10),
            particles_per_row=200,
            reference="ais",
            ais_steps=300,
        )
