from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from _pairs import ChainModel, linear_gaussian

from guides import AmortizedCategorical, AmortizedGaussian, ExactPosterior, PriorGuide
from inference import compare, diagnose, elbo, exact_log_marginal, fit, iw_log_marginal
from inference.estimators.bounds import Estimate
from lvm_models import GaussianMixture, GaussianVAE

Z = 4.0  # standard errors: a correct estimator strays this far with probability 6e-5


@pytest.fixture(scope="module")
def linear():
    pyro.set_rng_seed(0)  # the data must not depend on which tests ran before
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5)
    return model, model.sample(30)


def test_elbo_of_exact_posterior_is_log_marginal_with_zero_variance(linear):
    model, x = linear
    estimate = elbo(model, ExactPosterior(model), x, num_particles=50, seed=0)
    torch.testing.assert_close(estimate.per_point, model.log_marginal(x), rtol=0, atol=1e-10)
    assert estimate.per_point_stderr.max().item() < 1e-10


@pytest.mark.parametrize("num_samples", [1, 7, 100])
def test_iw_of_exact_posterior_is_log_marginal_for_every_k(linear, num_samples):
    model, x = linear
    estimate = iw_log_marginal(model, ExactPosterior(model), x, num_samples=num_samples, seed=0)
    torch.testing.assert_close(estimate.per_point, model.log_marginal(x), rtol=0, atol=1e-10)


def test_iw_with_prior_proposal_rises_towards_log_marginal(linear):
    model, x = linear
    means = [
        iw_log_marginal(model, PriorGuide(model), x, num_samples=k, num_replicates=r, seed=k)
        for k, r in [(1, 2000), (10, 400), (100, 100), (1000, 20)]
    ]
    exact = model.log_marginal(x).mean().item()
    for smaller, larger in zip(means[:-1], means[1:]):
        assert larger.mean - smaller.mean > 3 * math.hypot(larger.stderr, smaller.stderr)
    assert means[-1].mean < exact + 3 * means[-1].stderr


def test_iw_with_prior_proposal_at_100000_samples_is_within_3_stderr_of_exact(linear):
    model, x = linear
    estimate = iw_log_marginal(model, PriorGuide(model), x, num_samples=100_000, seed=0)
    exact = model.log_marginal(x).mean().item()
    assert abs(estimate.mean - exact) < 3 * estimate.stderr
    assert 0 < estimate.stderr < 0.05


def test_iw_k1_and_elbo_estimate_the_same_quantity(linear):
    model, x = linear
    guide = PriorGuide(model)
    bound = elbo(model, guide, x, num_particles=2000, seed=1)
    iw_1 = iw_log_marginal(model, guide, x, num_samples=1, num_replicates=2000, seed=2)
    assert abs(bound.mean - iw_1.mean) < 3 * math.hypot(bound.stderr, iw_1.stderr)


def test_same_seed_gives_same_numbers_and_leaves_global_rng_alone(linear):
    model, x = linear
    state = torch.get_rng_state()
    first = iw_log_marginal(model, PriorGuide(model), x, num_samples=50, seed=3)
    second = iw_log_marginal(model, PriorGuide(model), x, num_samples=50, seed=3)
    assert torch.equal(first.per_point, second.per_point)
    assert torch.equal(torch.get_rng_state(), state)
    other = iw_log_marginal(model, PriorGuide(model), x, num_samples=50, seed=4)
    assert not torch.equal(first.per_point, other.per_point)


def test_chunking_does_not_change_the_estimate(linear):
    model, x = linear
    whole = iw_log_marginal(model, PriorGuide(model), x, num_samples=300, chunk_size=300, seed=5)
    pieces = iw_log_marginal(model, PriorGuide(model), x, num_samples=300, chunk_size=7, seed=5)
    # Other chunk sizes draw other particles, so the two agree within their standard errors.
    assert abs(whole.mean - pieces.mean) < 4 * math.hypot(whole.stderr, pieces.stderr)


def test_peak_particles_per_call_is_bounded_by_chunk_size(linear):
    model, x = linear
    particles_per_call = []

    def recording_guide(x):
        with pyro.poutine.trace() as tape:
            PriorGuide(model)(x)
        value = tape.trace.nodes["z"]["value"]  # (K, N, k) under the particle plate
        particles_per_call.append(value.shape[0] if value.dim() == 3 else 1)

    iw_log_marginal(model, recording_guide, x, num_samples=5000, chunk_size=64, seed=0)
    assert max(particles_per_call) == 64
    assert sum(particles_per_call) >= 5000


def test_every_estimator_works_on_a_users_plain_function_model_with_two_latent_sites():
    pair = ChainModel(data_dim=3, seed=0)
    x = pair.sample(25)
    exact = pair.log_marginal(x)
    torch.testing.assert_close(exact_log_marginal(pair.model, x), exact, rtol=0, atol=1e-6)
    bound = elbo(pair.model, pair.guide, x, num_particles=200, seed=0)
    assert bool((bound.per_point < exact + 3 * bound.per_point_stderr).all())
    iw = iw_log_marginal(pair.model, pair.guide, x, num_samples=20_000, seed=0)
    assert abs(iw.mean + _iw_bias(iw) - exact.mean().item()) < Z * iw.stderr
    assert iw.mean - bound.mean > Z * math.hypot(iw.stderr, bound.stderr)


def test_discrete_latent_with_amortized_categorical_guide_reaches_exact_value():
    model = GaussianMixture.from_params(
        torch.tensor([0.0, 0.5, -0.5], dtype=torch.float64),
        torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64),
        torch.ones(3, 2, dtype=torch.float64),
    )
    x = model.sample(40)
    guide = AmortizedCategorical(2, 3).double()
    estimate = iw_log_marginal(model, guide, x, num_samples=3000, seed=0)
    exact = model.log_marginal(x).mean().item()
    assert abs(estimate.mean + _iw_bias(estimate) - exact) < Z * estimate.stderr


def test_khat_is_small_for_a_good_proposal_and_large_for_a_bad_one(linear):
    model, x = linear
    good = iw_log_marginal(model, ExactPosterior(model), x, num_samples=2000, seed=0)
    assert bool((good.khat < 0.5).all())
    assert torch.allclose(good.ess, torch.full_like(good.ess, 2000.0))

    def overconfident(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(2) + 2.0, 0.1).to_event(1))

    bad = iw_log_marginal(model, overconfident, x, num_samples=2000, seed=0)
    assert bad.khat.nanmean().item() > 0.7
    assert bad.ess.mean().item() < 50


@pytest.mark.parametrize(
    ("guide_body", "message"),
    [
        ("missing", "does not sample latent site"),
        ("extra", "that the model does not have"),
        ("plate", "plate"),
    ],
)
def test_a_guide_that_does_not_match_the_model_is_rejected_by_name(linear, guide_body, message):
    model, x = linear

    def guide(x):
        size = x.shape[0] - 1 if guide_body == "plate" else x.shape[0]
        with pyro.plate("data", size):
            if guide_body != "missing":
                pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            if guide_body == "extra":
                pyro.sample("w", dist.Normal(x.new_zeros(()), 1.0))

    with pytest.raises(ValueError, match=message):
        iw_log_marginal(model, guide, x, num_samples=2)


@pytest.mark.parametrize(
    ("argument", "value"), [("num_samples", 0), ("chunk_size", 0), ("num_replicates", 0)]
)
def test_bad_counts_are_named(linear, argument, value):
    model, x = linear
    options = {"num_samples": 5, argument: value}
    with pytest.raises(ValueError, match=argument):
        iw_log_marginal(model, PriorGuide(model), x, **options)


def test_elbo_needs_at_least_one_particle(linear):
    model, x = linear
    with pytest.raises(ValueError, match="num_particles"):
        elbo(model, PriorGuide(model), x, num_particles=0)


def test_vae_with_amortized_guide_satisfies_elbo_below_iw(linear):
    _, x = linear
    model = GaussianVAE(4, 2, hidden=(8,)).double()
    guide = AmortizedGaussian(4, 2, hidden=(8,)).double()
    bound = elbo(model, guide, x, num_particles=500, seed=0)
    iw = iw_log_marginal(model, guide, x, num_samples=500, seed=0)
    exact = exact_log_marginal(model, x).mean().item()
    assert bound.mean < iw.mean < exact + 3 * iw.stderr


def test_fit_compare_and_diagnose_work_on_the_users_plain_function_model():
    pair = ChainModel(data_dim=3, seed=3)
    x = pair.sample(200)
    fit(pair.model, pair.guide, x, steps=300, lr=0.05, seed=0, progress=False)
    exact = pair.log_marginal(x).mean().item()
    table = compare(pair.model, pair.guide, x, num_samples=(1, 100), seed=0)
    assert table.row("exact").mean == pytest.approx(exact, abs=1e-5)
    assert (
        table.row("elbo").mean < table.row("iw", 100).mean < exact + 3 * table.row("iw", 100).stderr
    )
    diagnosis = diagnose(pair.model, pair.guide, x, seed=0)
    assert diagnosis.exact == pytest.approx(exact, abs=1e-5)
    assert diagnosis.rate > 0.5 and diagnosis.active_units == 2


def _iw_bias(estimate: Estimate) -> float:
    """How far E[IW_K] sits below log p(x), averaged over points, to second order.

    log of a mean weight: E log w_bar ~ log p(x) - Var(w_bar) / (2 p(x)^2), and the delta-method
    standard error of one K-sample estimate is se = sd(w_bar) / p(x), so the bias is se^2 / 2.
    """
    return 0.5 * estimate.per_point_stderr.pow(2).mean().item()


def test_a_long_estimate_without_a_progress_bar_says_what_it_will_cost(monkeypatch):
    from inference import _progress

    monkeypatch.setattr(_progress, "NOTICE_SECONDS", 0.0)  # every job counts as long
    model = GaussianVAE(3, 2, hidden=(4,))
    x = torch.randn(4, 3)
    guide = AmortizedGaussian(3, 2, hidden=(4,))
    with pytest.warns(_progress.CostWarning, match=r"iw_log_marginal will take about .*4 chunks"):
        iw_log_marginal(model, guide, x, num_samples=8, chunk_size=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", _progress.CostWarning)  # a progress bar says enough
        iw_log_marginal(model, guide, x, num_samples=8, chunk_size=2, seed=0, progress=True)
