"""Deliberately broken estimators: the bound properties must catch each of them.

Each mutant is patched into the estimator the checks use; a property that passes on a mutant
could not fail, so these tests are the evidence that the properties have teeth.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from _pairs import linear_gaussian

import inference.bounds
from guides import ExactPosterior
from inference import check_bounds
from inference._programs import log_density_per_point, vectorized_traces


@pytest.fixture(scope="module")
def sharp():
    """A linear-Gaussian model with a sharp posterior (its entropy is negative)."""
    pyro.set_rng_seed(0)  # module fixtures are built before the per-test reseed
    model = linear_gaussian(data_dim=8, latent_dim=2, noise=0.1, seed=4)
    return model, model.sample(12)


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


def _feed_summing_instead_of_averaging(self, log_weights, replicates, num_samples):
    """Mutant: IW_K = log sum_k w_k, forgetting the 1/K."""
    grouped = log_weights.reshape(replicates, num_samples, -1)
    self.update(torch.logsumexp(grouped, 1))


def test_a_correct_estimator_passes(sharp):
    model, x = sharp
    report = check_bounds(model, ExactPosterior(model), x)
    assert "ELBO <= log p(x)" in report.checks


def test_an_elbo_that_forgets_the_kl_term_is_caught(sharp, monkeypatch):
    model, x = sharp
    monkeypatch.setattr(inference.bounds, "log_importance_weights", _log_weights_without_the_kl)
    with pytest.raises(AssertionError, match=r"violated ELBO <= "):
        check_bounds(model, ExactPosterior(model), x)


def test_a_guide_log_density_with_the_wrong_sign_is_caught(sharp, monkeypatch):
    model, x = sharp
    monkeypatch.setattr(
        inference.bounds, "log_importance_weights", _log_weights_with_the_guide_sign_flipped
    )
    with pytest.raises(AssertionError, match=r"violated .* <= log p\(x\)"):
        check_bounds(model, ExactPosterior(model), x)


def test_an_iw_estimate_that_sums_instead_of_averaging_is_caught(sharp, monkeypatch):
    model, x = sharp
    monkeypatch.setattr(
        inference.bounds._RunningMoments, "feed", _feed_summing_instead_of_averaging
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
    monkeypatch.setattr(inference.bounds, "log_importance_weights", _log_weights_without_the_kl)
    with pytest.raises(AssertionError) as failure:
        check_bounds(model, ExactPosterior(model), x)
    message = str(failure.value)
    assert "point 0" in message and "se of difference" in message
    assert not math.isnan(float(message.split("ELBO=")[1].split(" ")[0]))
