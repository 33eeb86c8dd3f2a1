"""Deliberately broken estimators: the bound properties must catch each of them.

Each mutant is patched into the estimator the checks use; a property that passes on a mutant
could not fail, so these tests are the evidence that the properties have teeth. A mutant is
killed by ``check_bounds`` or by a property test of the suite, run here on the mutant:

============================================  ================================================
mutant                                        killed by
============================================  ================================================
ELBO without its KL term                      check_bounds (ELBO <= log p(x))
log q(z given x) with the wrong sign          check_bounds (<= log p(x))
log w without log q (log p(x, z) alone)       check_bounds (ELBO <= log p(x))
IW_K of replicates: log-sum-exp, no -log K    check_bounds (IW_K <= log p(x))
IW_K of one estimate: log-sum-exp, no -log K  test_bounds: IW of the exact posterior is log p(x)
fit's IWAE loss without its + log K           test_train: the loss is nats per point (iwae)
beta on log p(z) only, not on log q           test_train: beta weighs model and guide; warm-up
cyclical annealing at a constant beta         test_train: cyclical annealing weighs each step
DReG running the plain IWAE gradient          test_dreg: DReG's encoder variance is lower
IW stderr without the 1 / sqrt(K)             the IW stderr is the spread of its estimates
IW stderr without the -1 (1 / sqrt(ESS))      the IW stderr is the spread of its estimates
an oracle off by 0.01 nats                    check_bounds (tightness, <= log p(x))
============================================  ================================================
"""

from __future__ import annotations

import math
from dataclasses import replace

import pyro
import pyro.distributions as dist
import pytest
import torch
from _pairs import linear_gaussian
from test_bounds import (
    test_iw_of_exact_posterior_is_log_marginal_for_every_k as iw_of_exact_posterior_is_exact,
)
from test_dreg import near_posterior  # noqa: F401 (a fixture of the DReG mutant's test)
from test_dreg import test_dregs_encoder_gradient_has_a_lower_variance as dreg_has_lower_variance
from test_train import (
    test_beta_weights_the_latent_log_densities_in_model_and_guide as beta_weighs_model_and_guide,
)
from test_train import (
    test_cyclical_annealing_weighs_each_steps_kl_by_its_schedule as cyclical_weighs_each_step,
)
from test_train import test_kl_warmup_raises_beta_linearly as kl_warmup_raises_beta_linearly
from test_train import test_loss_is_nats_per_point as loss_is_nats_per_point

import inference.estimators._compiled
import inference.estimators.bounds
import inference.training.train
from guides import ExactPosterior
from inference import check_bounds, iw_log_marginal
from inference._programs import log_density_per_point, vectorized_traces
from inference.training.objectives import IWAE
from inference.training.schedules import CyclicalAnnealing
from lvm_models import datasets

Z = 4.0  # standard errors: a correct estimate strays this far with probability 6e-5


@pytest.fixture(scope="module")
def sharp():
    """A linear-Gaussian model with a sharp posterior (its entropy is negative)."""
    pyro.set_rng_seed(0)  # module fixtures are built before the per-test reseed
    model = linear_gaussian(data_dim=8, latent_dim=2, noise=0.1, seed=4)
    return model, model.sample(12)


@pytest.fixture(scope="module")
def linear_pair():
    """A linear-Gaussian model of 4-D data with a 2-D latent, and 10 points drawn from it."""
    pyro.set_rng_seed(0)
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5, seed=0)
    return model, model.sample(10)


def _log_weights_without_the_kl(model, guide, x, num_particles, info):
    """Mutant: log p(x given z) alone, as if the ELBO forgot its KL term."""
    model_trace, _ = vectorized_traces(model, guide, x, num_particles, info)
    return log_density_per_point(model_trace, info, num_particles, info.observed_sites)


def _log_weights_with_the_guide_sign_flipped(model, guide, x, num_particles, info):
    """Mutant: log p(x, z) + log q(z given x) instead of minus."""
    model_trace, guide_trace = vectorized_traces(model, guide, x, num_particles, info)
    names = list(info.observed_sites + info.latent_sites)
    log_joint = log_density_per_point(model_trace, info, num_particles, names)
    return log_joint + log_density_per_point(guide_trace, info, num_particles, info.latent_sites)


def _log_weights_without_the_guide(model, guide, x, num_particles, info):
    """Mutant: log w = log p(x, z), the guide's log q(z given x) dropped."""
    model_trace, _ = vectorized_traces(model, guide, x, num_particles, info)
    names = list(info.observed_sites + info.latent_sites)
    return log_density_per_point(model_trace, info, num_particles, names)


def _feed_summing_instead_of_averaging(self, log_weights, replicates, num_samples):
    """Mutant: IW_K = log sum_k w_k, forgetting the 1/K."""
    grouped = log_weights.reshape(replicates, num_samples, -1)
    self.update(torch.logsumexp(grouped, 1))


_log_mean_exp = inference.estimators.bounds._RunningLogMeanExp.log_mean_exp


def _log_sum_exp_instead_of_log_mean_exp(self):
    """Mutant: one IW_K estimate as log sum_k w_k, forgetting the -log K."""
    return _log_mean_exp(self) + math.log(self.count)


_iwae_loss = IWAE.loss


def _iwae_loss_without_its_log_k(self, info):
    """Mutant: fit's IWAE loss -sum_n log sum_k w_kn, forgetting the + log K."""
    loss = _iwae_loss(self, info)

    def mutant(model, guide, x, *args, **kwargs):
        return loss(model, guide, x, *args, **kwargs) - x.shape[0] * math.log(self.num_particles)

    return mutant


def _scale_only_the_models_latent_sites(self, msg):
    """Mutant of fit's beta: log p(z) weighted by beta, log q(z given x) left at weight 1.

    The model's latent sites replay the guide's draws, so only they hold a value already.
    """
    if msg["type"] == "sample" and not msg["is_observed"] and msg["value"] is not None:
        msg["scale"] = self.scale * msg["scale"]


def _delta_method_stderr_off_by_sqrt_k(ess, num_samples):
    """Mutant: sqrt(K / ESS - 1), the delta method without its 1 / sqrt(K)."""
    return (num_samples / ess - 1).clamp_min(0).sqrt()


def _delta_method_stderr_without_the_minus_one(ess, num_samples):
    """Mutant: sqrt((K / ESS) / K) = 1 / sqrt(ESS), the delta method without its -1."""
    return ess.rsqrt()


def inflated_posterior_guide(model):
    """q(z given x) = N(m, 1.5 S), p(z given x) = N(m, S): close to exact, weights of finite
    variance, K / ESS - 1 about (1.5^2 / 2)^(k/2) - 1 = 0.125 for a 2-D latent."""

    def guide(x):
        posterior = model.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z", dist.MultivariateNormal(posterior.loc, 1.5 * posterior.covariance_matrix)
            )

    return guide


def assert_iw_stderr_is_the_spread_of_independent_estimates(model, x, num_samples=100):
    """The delta-method stderr of one IW_K estimate, squared, must average to the variance of
    independent estimates: summed over points, within Z standard errors of both sides (the
    sample variance of R normal estimates has variance 2 v^2 / (R - 1))."""
    replicates = 40
    guide = inflated_posterior_guide(model)
    # Each copy of x gets draws of its own: R independent estimates of every point at once.
    estimate = iw_log_marginal(
        model, guide, x.repeat(replicates, 1), num_samples=num_samples, seed=0
    )
    values = estimate.per_point.reshape(replicates, -1)  # (R, N)
    reported = estimate.per_point_stderr.reshape(replicates, -1) ** 2  # (R, N)
    spread = values.var(0)  # (N,)
    spread_variance = (2 * spread**2 / (replicates - 1)).sum()
    reported_variance = (reported.var(0) / replicates).sum()
    difference = (reported.mean(0).sum() - spread.sum()).item()
    tolerance = Z * (spread_variance + reported_variance).sqrt().item()
    assert abs(difference) <= tolerance, (
        f"IW_{num_samples} stderr^2 summed over points is {reported.mean(0).sum().item():.3e}; "
        f"the variance of independent estimates is {spread.sum().item():.3e} (tolerance "
        f"{tolerance:.1e})"
    )


def test_a_correct_estimator_passes(sharp):
    model, x = sharp
    report = check_bounds(model, ExactPosterior(model), x)
    assert "ELBO <= log p(x)" in report.checks


def test_an_elbo_that_forgets_the_kl_term_is_caught(sharp, monkeypatch):
    model, x = sharp
    monkeypatch.setattr(
        inference.estimators._compiled, "log_importance_weights", _log_weights_without_the_kl
    )
    with pytest.raises(AssertionError, match=r"violated ELBO <= "):
        check_bounds(model, ExactPosterior(model), x)


def test_a_guide_log_density_with_the_wrong_sign_is_caught(sharp, monkeypatch):
    model, x = sharp
    monkeypatch.setattr(
        inference.estimators._compiled,
        "log_importance_weights",
        _log_weights_with_the_guide_sign_flipped,
    )
    with pytest.raises(AssertionError, match=r"violated .* <= log p\(x\)"):
        check_bounds(model, ExactPosterior(model), x)


def test_an_iw_estimate_that_sums_instead_of_averaging_is_caught(sharp, monkeypatch):
    model, x = sharp
    monkeypatch.setattr(
        inference.estimators.bounds._RunningMoments, "feed", _feed_summing_instead_of_averaging
    )
    with pytest.raises(AssertionError, match=r"violated IW_\d+ <= "):
        check_bounds(model, ExactPosterior(model), x, num_samples=(1, 100))


def test_an_oracle_that_is_off_by_a_little_is_caught(sharp):
    model, x = sharp
    wrong_exact = model.log_marginal(x) - 0.01
    with pytest.raises(AssertionError, match=r"tightness|<= log p\(x\)"):
        check_bounds(model, ExactPosterior(model), x, exact=wrong_exact)


def test_the_error_names_points_and_figures(sharp, monkeypatch):
    model, x = sharp
    monkeypatch.setattr(
        inference.estimators._compiled, "log_importance_weights", _log_weights_without_the_kl
    )
    with pytest.raises(AssertionError) as failure:
        check_bounds(model, ExactPosterior(model), x)
    message = str(failure.value)
    assert "point 0" in message and "se of difference" in message
    assert not math.isnan(float(message.split("ELBO=")[1].split(" ")[0]))


def test_an_iw_estimate_without_the_guide_density_is_caught(sharp, monkeypatch):
    # The posterior is sharp: E_q log q > 0, so dropping it lifts the "ELBO" above log p(x).
    model, x = sharp
    monkeypatch.setattr(
        inference.estimators._compiled, "log_importance_weights", _log_weights_without_the_guide
    )
    with pytest.raises(AssertionError, match=r"violated ELBO <= log p\(x\)"):
        check_bounds(model, ExactPosterior(model), x)


def test_one_iw_estimate_that_sums_instead_of_averaging_is_caught(sharp, monkeypatch):
    monkeypatch.setattr(
        inference.estimators.bounds._RunningLogMeanExp,
        "log_mean_exp",
        _log_sum_exp_instead_of_log_mean_exp,
    )
    with pytest.raises(AssertionError):
        iw_of_exact_posterior_is_exact(sharp, 7)


def test_an_iwae_loss_without_its_log_k_is_caught(monkeypatch):
    monkeypatch.setattr(IWAE, "loss", _iwae_loss_without_its_log_k)
    x = datasets.correlated_gaussian(num_data=100, data_dim=6, seed=0).x
    with pytest.raises(AssertionError):
        loss_is_nats_per_point(x, "iwae", 4)


@pytest.mark.parametrize("beta", [0.0, 2.5])
def test_beta_on_the_models_latent_sites_only_is_caught(monkeypatch, beta):
    monkeypatch.setattr(
        inference.training.train._ScaleLatent,
        "_process_message",
        _scale_only_the_models_latent_sites,
    )
    with pytest.raises(AssertionError):
        beta_weighs_model_and_guide(beta)


def test_a_kl_warm_up_on_the_models_latent_sites_only_is_caught(monkeypatch):
    monkeypatch.setattr(
        inference.training.train._ScaleLatent,
        "_process_message",
        _scale_only_the_models_latent_sites,
    )
    with pytest.raises(AssertionError):
        kl_warmup_raises_beta_linearly()


def test_the_iw_stderr_is_the_spread_of_independent_estimates(linear_pair):
    model, x = linear_pair
    assert_iw_stderr_is_the_spread_of_independent_estimates(model, x)


@pytest.mark.parametrize(
    "mutant", [_delta_method_stderr_off_by_sqrt_k, _delta_method_stderr_without_the_minus_one]
)
def test_a_wrong_iw_stderr_is_caught(linear_pair, monkeypatch, mutant):
    model, x = linear_pair
    monkeypatch.setattr(inference.estimators.bounds, "_delta_method_stderr", mutant)
    with pytest.raises(AssertionError, match="stderr"):
        assert_iw_stderr_is_the_spread_of_independent_estimates(model, x)


def test_cyclical_annealing_at_a_constant_beta_is_caught(monkeypatch):
    monkeypatch.setattr(CyclicalAnnealing, "__call__", lambda self, step, steps: self.beta)
    with pytest.raises(AssertionError):
        cyclical_weighs_each_step()


def test_dreg_that_runs_the_plain_gradient_is_caught(monkeypatch, near_posterior):  # noqa: F811
    plain_loss = IWAE.loss
    monkeypatch.setattr(
        IWAE, "loss", lambda self, info: plain_loss(replace(self, gradient="plain"), info)
    )
    with pytest.raises(AssertionError):
        dreg_has_lower_variance(near_posterior, 10)
