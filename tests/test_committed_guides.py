"""Rate floors built into the guide family: the delta-VAE's committed rate and BN-VAE's means."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro import distributions as dist
from pyro.nn import PyroModule
from torch.distributions import kl_divergence

from guides import (
    AmortizedGaussian,
    BatchNormGaussian,
    CommittedRateGaussian,
    NonStandardPriorError,
    check_standard_normal_prior,
)
from guides.committed import MAX_DELTA, standard_normal_kl_floor
from inference import diagnose, fit
from inference.studies.registry import GUIDES, MODELS
from lvm_models import GaussianMixture, GaussianVAE, datasets

DATA_DIM, LATENT_DIM = 4, 2
DELTA = 0.25  # committed nats per dimension: a floor of 0.5 nat, ten times the collapsed rate
GAMMA = 0.5  # BN-VAE's fixed scale: a floor of 0.25 nat


def _kl_per_dimension(guide, x: torch.Tensor) -> torch.Tensor:
    """(N, k): KL(q(z_j given x_n) || N(0, 1)), analytic."""
    q = guide.distribution(x).base_dist
    return kl_divergence(q, dist.Normal(torch.zeros_like(q.loc), 1.0))


def _random_encoder(guide, seed: int, weight_scale: float) -> None:
    """Redraw every weight and bias from N(0, weight_scale^2), reaching saturated outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in guide.encoder.parameters():
            parameter.copy_(
                weight_scale * torch.randn(parameter.shape, generator=generator).double()
            )


@settings(max_examples=30, deadline=None)
@given(
    delta=st.floats(1e-3, 8.0),
    seed=st.integers(0, 2**31 - 1),
    weight_scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_committed_guide_kl_from_standard_normal_is_at_least_delta_in_every_dimension(
    delta, seed, weight_scale
):
    guide = CommittedRateGaussian(DATA_DIM, 3, delta=delta, hidden=(8,)).double()
    _random_encoder(guide, seed, weight_scale)
    x = 5 * torch.randn(64, DATA_DIM, generator=torch.Generator().manual_seed(seed)).double()
    assert _kl_per_dimension(guide, x).min() >= delta - 1e-6


def test_committed_bound_is_reached_at_zero_mean_and_the_largest_scale():
    guide = CommittedRateGaussian(DATA_DIM, LATENT_DIM, delta=DELTA, hidden=(8,)).double()
    last = guide.encoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 50.0]))  # mu = 0, sigmoid(raw) = 1
    kl = _kl_per_dimension(guide, torch.randn(5, DATA_DIM).double())
    torch.testing.assert_close(kl, torch.full_like(kl, DELTA), atol=1e-9, rtol=0)


def test_committed_largest_scale_solves_the_floor_equation():
    guide = CommittedRateGaussian(DATA_DIM, LATENT_DIM, delta=DELTA)
    assert 0 < guide.min_scale < guide.max_scale < 1
    assert standard_normal_kl_floor(guide.max_scale) == pytest.approx(DELTA, abs=1e-12)


@pytest.mark.parametrize("delta", [0.0, -0.1, math.nan, math.inf, MAX_DELTA, True, "0.1"])
def test_committed_guide_refuses_a_delta_outside_its_range(delta):
    with pytest.raises(ValueError, match="delta must be a number of nats"):
        CommittedRateGaussian(DATA_DIM, LATENT_DIM, delta=delta)


def test_a_vanishing_delta_still_keeps_every_scale_below_the_priors():
    # Documented: delta -> 0 is not the plain AmortizedGaussian, whose scales can exceed 1.
    guide = CommittedRateGaussian(DATA_DIM, LATENT_DIM, delta=1e-9, hidden=(8,)).double()
    _random_encoder(guide, seed=0, weight_scale=10.0)
    scale = guide.distribution(10 * torch.randn(256, DATA_DIM).double()).base_dist.scale
    assert scale.max() < 1


class _ShiftedPrior(PyroModule):
    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.ones(2), 1.0).to_event(1))


@pytest.mark.parametrize(
    ("model", "prior"),
    [(GaussianMixture(DATA_DIM, 3), "Categorical"), (_ShiftedPrior(), "loc in \\[1, 1\\]")],
)
def test_a_rate_floor_refuses_a_prior_other_than_the_standard_normal(model, prior):
    with pytest.raises(NonStandardPriorError, match=prior):
        check_standard_normal_prior(model, torch.randn(3, DATA_DIM))


def test_the_standard_normal_check_passes_a_vae_and_draws_no_random_numbers():
    model, x = GaussianVAE(DATA_DIM, LATENT_DIM), torch.randn(3, DATA_DIM)
    torch.manual_seed(0)
    check_standard_normal_prior(model, x)
    after_check = torch.rand(())
    torch.manual_seed(0)
    assert torch.rand(()) == after_check


@pytest.mark.parametrize("name", ["committed-rate-gaussian", "batchnorm-gaussian"])
def test_the_registry_builds_rate_floors_for_a_vae_only(name):
    vae = MODELS["gaussian-vae"].build(DATA_DIM, LATENT_DIM)
    assert GUIDES[name].build(vae, 10).latent_dim == LATENT_DIM
    with pytest.raises(NonStandardPriorError):
        GUIDES[name].build(MODELS["gaussian-mixture"].build(DATA_DIM, 3), 10)


def _batch_norm_guide(seed: int) -> BatchNormGaussian:
    torch.manual_seed(seed)
    guide = BatchNormGaussian(DATA_DIM, 3, gamma=GAMMA, hidden=(8,)).double()
    with torch.no_grad():
        guide.beta.copy_(torch.randn(3))
    return guide


@pytest.mark.parametrize("seed", range(5))
def test_batch_norm_means_have_second_moment_gamma_squared_plus_beta_squared(seed):
    guide = _batch_norm_guide(seed)
    loc = guide.distribution(torch.randn(32, DATA_DIM).double()).base_dist.loc  # (32, 3)
    torch.testing.assert_close(loc.mean(0), guide.beta, atol=1e-10, rtol=0)
    torch.testing.assert_close((loc**2).mean(0), GAMMA**2 + guide.beta**2, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", range(5))
def test_batch_norm_batch_average_kl_is_at_least_half_gamma_squared_per_dimension(seed):
    guide = _batch_norm_guide(seed)
    with torch.no_grad():
        guide.beta.zero_()  # the floor's tightest case
    kl = _kl_per_dimension(guide, torch.randn(32, DATA_DIM).double()).mean(0)  # (3,)
    assert kl.min() >= 0.5 * GAMMA**2 - 1e-6


def test_batch_norm_normalises_each_row_when_particles_add_a_leading_dim():
    guide = _batch_norm_guide(0)
    x = torch.randn(16, DATA_DIM).double()
    expanded = guide.distribution(x.expand(3, 16, DATA_DIM)).base_dist.loc  # (3, 16, 3)
    plain = guide.distribution(x).base_dist.loc
    torch.testing.assert_close(expanded, plain.expand(3, 16, 3))


def test_batch_norm_gamma_is_fixed_not_trained():
    guide = BatchNormGaussian(DATA_DIM, LATENT_DIM, gamma=GAMMA)
    assert all(parameter is not guide.gamma for parameter in guide.parameters())
    assert "gamma" in dict(guide.named_buffers())


@pytest.mark.parametrize("gamma", [0.0, -1.0, math.nan, True])
def test_batch_norm_guide_refuses_a_gamma_that_is_not_positive(gamma):
    with pytest.raises(ValueError, match="gamma must be a positive number"):
        BatchNormGaussian(DATA_DIM, LATENT_DIM, gamma=gamma)


def test_batch_norm_guide_refuses_one_row_in_training_mode():
    with pytest.raises(ValueError, match="at least 2 rows"):
        BatchNormGaussian(DATA_DIM, LATENT_DIM)(torch.randn(1, DATA_DIM))


def test_calibrated_eval_mode_normalises_as_one_training_batch():
    guide = _batch_norm_guide(1)
    x = torch.randn(64, DATA_DIM).double()
    training = guide.distribution(x).base_dist.loc
    guide.calibrate(x)
    guide.eval()
    torch.testing.assert_close(guide.distribution(x).base_dist.loc, training)


# The collapse case 1a at a small size: independent Gaussian coordinates with a diagonal
# decoder, where the plain ELBO's optimum ignores z.
_FIT = {"steps": 300, "batch_size": 128, "lr": 1e-2, "seed": 0, "progress": False}


@pytest.fixture(scope="module")
def data():
    x = datasets.independent_gaussian(num_data=2256, data_dim=DATA_DIM, seed=0).x
    return x[:2000], x[2000:]


def _fitted_rate(guide, data, calibrate: bool = False) -> float:
    x, x_eval = data
    torch.manual_seed(0)
    model = GaussianVAE(DATA_DIM, LATENT_DIM, hidden=(32,))
    fit(model, guide, x, **_FIT)
    if calibrate:
        guide.calibrate(x)
        x_eval = x
    return diagnose(model, guide, x_eval, with_exact=False, seed=0).rate


@pytest.fixture(scope="module")
def plain_rate(data):
    torch.manual_seed(0)
    return _fitted_rate(AmortizedGaussian(DATA_DIM, LATENT_DIM, hidden=(32,)), data)


def test_the_plain_encoder_collapses_on_independent_gaussian_data(plain_rate):
    assert plain_rate < 0.05


def test_a_committed_rate_keeps_the_trained_rate_above_latent_dim_times_delta(data, plain_rate):
    torch.manual_seed(0)
    guide = CommittedRateGaussian(DATA_DIM, LATENT_DIM, delta=DELTA, hidden=(32,))
    assert _fitted_rate(guide, data) >= LATENT_DIM * DELTA > plain_rate


def test_batch_normalised_means_keep_the_trained_rate_above_half_gamma_squared(data, plain_rate):
    # Exact on the data BN's statistics are calibrated to; on other points only approximate.
    torch.manual_seed(0)
    guide = BatchNormGaussian(DATA_DIM, LATENT_DIM, gamma=GAMMA, hidden=(32,))
    floor = 0.5 * GAMMA**2 * LATENT_DIM
    assert _fitted_rate(guide, data, calibrate=True) >= floor - 1e-6 > plain_rate
