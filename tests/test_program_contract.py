"""The contract with a user's Pyro program: any data-plate name (sized or not), data of any
shape (N, ...), extra arguments, networks that cannot take a particle dimension, global
latents. Each estimator learns what it needs from the trace."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from inference import (
    NoExactValueError,
    VectorizationWarning,
    check_bounds,
    compare,
    diagnose,
    elbo,
    exact_log_marginal,
    fit,
    iw_log_marginal,
    log_evidence,
)

F64 = torch.float64


def _gaussian_pair(plate_name: str = "data", sized: bool = True):
    """z ~ N(0, 1), x given z ~ N(z, 1) per point (x of shape (N,)); q = N(x / 2, 1)."""

    def plate(x):
        return pyro.plate(plate_name, x.shape[0]) if sized else pyro.plate(plate_name)

    def model(x):
        with plate(x):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=F64), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with plate(x):
            pyro.sample("z", dist.Normal(x / 2, 1.0))

    return model, guide


def _exact(x):  # x ~ N(0, 2)
    return dist.Normal(0.0, math.sqrt(2.0)).log_prob(x)


@pytest.mark.parametrize("plate_name", ["data", "documents"])
@pytest.mark.parametrize("sized", [True, False])
def test_the_data_plate_is_found_by_its_size_whatever_its_name(plate_name, sized):
    model, guide = _gaussian_pair(plate_name, sized)
    x = torch.linspace(-2, 2, 7, dtype=F64)  # data of shape (N,)
    estimate = iw_log_marginal(model, guide, x, num_samples=2000, seed=0)
    assert estimate.per_point.shape == (7,)
    worst = ((estimate.per_point - _exact(x)).abs() / estimate.per_point_stderr).max()
    assert worst < 4
    torch.testing.assert_close(exact_log_marginal(model, x), _exact(x), rtol=0, atol=1e-6)


def test_two_plates_of_size_n_are_ambiguous_until_named():
    def model(x):
        with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", x.shape[1], dim=-1):
            pyro.sample("z", dist.Normal(x / 2, 1.0))

    x = torch.randn(4, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"\['rows', 'cols'\] all have size N=4.*data_plate="):
        elbo(model, guide, x)
    by_rows = elbo(model, guide, x, num_particles=4000, data_plate="rows", seed=0)
    assert by_rows.per_point.shape == (4,)
    # q = N(x / 2, 1) against the posterior N(x / 2, 1 / 2): KL = log sqrt(1/2) + 1 - 1/2.
    kl = math.log(0.5**0.5) + 0.5
    expected = (_exact(x) - kl).sum(-1)  # (4,): one ELBO per row
    assert ((by_rows.per_point - expected).abs() / by_rows.per_point_stderr).max() < 4


def test_images_of_shape_n_c_h_w_are_data_points_along_the_first_dim():
    def model(x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=F64), 1.0))
            loc = z[:, None, None, None].expand(x.shape)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(3), obs=x)

    def guide(x):
        with pyro.plate("images", x.shape[0]):
            pyro.sample("z", dist.Normal(x.mean((1, 2, 3)), 1.0))

    x = torch.randn(5, 2, 3, 3, dtype=F64)
    # The everyday idiom z[:, None, None, None] mixes particles and points when vectorised:
    # the estimators notice and run particles one at a time.
    with pytest.warns(VectorizationWarning, match="one at a time"):
        estimate = iw_log_marginal(model, guide, x, num_samples=500, seed=0)
    flat = x.reshape(5, -1)
    covariance = torch.eye(18, dtype=F64) + torch.ones(18, 18, dtype=F64)
    exact = dist.MultivariateNormal(torch.zeros(18, dtype=F64), covariance).log_prob(flat)
    assert ((estimate.per_point - exact).abs() / estimate.per_point_stderr).max() < 4
    with pytest.raises(NoExactValueError, match="cannot take: the vectorised run fails"):
        exact_log_marginal(model, x)  # the oracle refuses rather than mix the points


def test_an_index_that_mixes_particles_with_points_is_caught_not_averaged():
    def model(x):  # right in plain Pyro; under a particle plate z[:, None] is (K, 1, N)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=F64), 1.0))
            pyro.sample("x", dist.Normal(z[:, None], 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.mean(-1), 1.0))

    # One column: under particles, Normal(z[:, None]).to_event(1) has batch (K, 1) and event
    # (N,), which x (N, 1) broadcasts against without complaint, mixing every point.
    x = torch.randn(6, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    exact = dist.Normal(0.0, math.sqrt(2.0)).log_prob(x[:, 0])
    with pytest.warns(VectorizationWarning, match="differs from the same draw run alone"):
        estimate = iw_log_marginal(model, guide, x, num_samples=1000, seed=0)
    assert ((estimate.per_point - exact).abs() / estimate.per_point_stderr).max() < 4
    with pytest.raises(NoExactValueError, match="differs from the same draw run alone"):
        exact_log_marginal(model, x)


class _BatchNormPair(nn.Module):
    """An encoder with BatchNorm1d and a decoder with softmax(dim=1), as in ProdLDA: both
    assume a plain (N, D) batch."""

    def __init__(self, data_dim: int = 6, latent_dim: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(data_dim, 8), nn.BatchNorm1d(8), nn.Tanh())
        self.loc, self.log_scale = nn.Linear(8, latent_dim), nn.Linear(8, latent_dim)
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.latent_dim = latent_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("documents", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            probs = torch.softmax(self.decoder(z), dim=1)
            pyro.sample("x", dist.Multinomial(probs=probs, validate_args=False), obs=x)

    def guide(self, x):
        pyro.module("encoder", self)
        with pyro.plate("documents", x.shape[0]):
            hidden = self.encoder(x)
            pyro.sample(
                "z", dist.Normal(self.loc(hidden), self.log_scale(hidden).exp()).to_event(1)
            )

    def hand_written_log_weights(self, x, num_samples):
        """log p(x, z) - log q(z given x), one plain batch per particle: (K, N)."""
        rows = []
        with torch.no_grad():
            for _ in range(num_samples):
                hidden = self.encoder(x)
                q = dist.Normal(self.loc(hidden), self.log_scale(hidden).exp()).to_event(1)
                z = q.sample()
                p_z = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
                probs = torch.softmax(self.decoder(z), dim=1)
                log_lik = dist.Multinomial(probs=probs, validate_args=False).log_prob(x)
                rows.append(p_z.log_prob(z) + log_lik - q.log_prob(z))
        return torch.stack(rows)


def test_networks_that_need_a_plain_batch_are_evaluated_one_particle_at_a_time():
    pair = _BatchNormPair()
    x = torch.randint(0, 5, (40, 6)).float()
    pyro.clear_param_store()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VectorizationWarning)
        fit(
            pair.model,
            pair.guide,
            x,
            steps=30,
            batch_size=20,
            num_particles=2,
            seed=0,
            progress=False,
        )
        pair.eval()
        estimate = iw_log_marginal(pair.model, pair.guide, x, num_samples=200, seed=0)
        bound = elbo(pair.model, pair.guide, x, num_particles=200, seed=0)
    # Independent hand-written estimates: IW_200 from 20 replicates, the ELBO from 4000 draws.
    log_weights = pair.hand_written_log_weights(x, 4000).double()  # (4000, N)
    replicates = torch.logsumexp(log_weights.reshape(20, 200, -1), 1) - math.log(200)  # (20, N)
    hand_iw = replicates.mean(0).mean().item()
    hand_iw_se = (replicates.var(0) / 20).sum().sqrt().item() / x.shape[0]
    assert abs(estimate.mean - hand_iw) < 4 * math.hypot(estimate.stderr, hand_iw_se)
    hand_elbo = log_weights.mean(0).mean().item()
    hand_elbo_se = (log_weights.var(0) / 4000).sum().sqrt().item() / x.shape[0]
    assert abs(bound.mean - hand_elbo) < 4 * math.hypot(bound.stderr, hand_elbo_se)


def test_extra_arguments_reach_model_and_guide_and_follow_the_minibatch():
    def model(x, shift):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(shift, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    loc = torch.zeros((), dtype=F64, requires_grad=True)

    def guide(x, shift):
        pyro.param("offset", loc)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x + shift) / 2 + pyro.param("offset"), 0.5**0.5))

    shift = torch.linspace(-3, 3, 50, dtype=F64)  # per point: x ~ N(shift, 2)
    x = shift + math.sqrt(2.0) * torch.randn(
        50, dtype=F64, generator=torch.Generator().manual_seed(0)
    )
    pyro.clear_param_store()
    fit(
        model,
        guide,
        x,
        model_args=(shift,),
        steps=200,
        batch_size=10,
        lr=0.05,
        seed=0,
        progress=False,
    )
    assert abs(pyro.param("offset").item()) < 0.15  # the exact posterior has offset 0
    bound = elbo(model, guide, x, num_particles=10, model_args=(shift,), seed=0)
    exact = dist.Normal(shift, math.sqrt(2.0)).log_prob(x)
    torch.testing.assert_close(
        exact_log_marginal(model, x, model_args=(shift,)), exact, rtol=0, atol=1e-6
    )
    assert bound.mean <= exact.mean().item() + 3 * bound.stderr
    table = compare(model, guide, x, num_samples=(1, 10), model_args=(shift,), seed=0)
    assert table.row("exact").mean == pytest.approx(exact.mean().item())
    assert diagnose(model, guide, x, model_args=(shift,), seed=0).gap >= -0.05
    check_bounds(model, guide, x, num_samples=(1, 10), particles_per_row=400, model_args=(shift,))


def test_global_latents_are_named_and_their_evidence_is_estimated_for_the_whole_data_set():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def exact_guide(x):
        n = x.shape[0]
        pyro.sample("mu", dist.Normal(x.sum() / (n + 1), (1 / (n + 1)) ** 0.5))

    def broad_guide(x):
        pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 2.0))

    x = torch.tensor([0.3, 1.2, -0.4, 2.0, 0.9], dtype=F64)
    truth = dist.MultivariateNormal(
        torch.zeros(5, dtype=F64), torch.eye(5, dtype=F64) + 1
    ).log_prob(x)
    with pytest.raises(ValueError, match=r"\['mu'\] lie outside the data plate"):
        iw_log_marginal(model, broad_guide, x, num_samples=10)
    exact = log_evidence(model, exact_guide, x, num_samples=50, seed=0)
    assert exact.value == pytest.approx(truth.item(), abs=1e-9) and exact.stderr == 0
    broad = log_evidence(model, broad_guide, x, num_samples=20000, seed=0)
    assert abs(broad.value - truth.item()) < 4 * broad.stderr
    assert "whole data set" in broad.label


def _global_and_local():
    """mu ~ N(0, 1) shared, z_n ~ N(0, 1) per point, x_n ~ N(mu + z_n, 1): x ~ N(0, 2I + 11^T)."""

    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=F64), 1.0))
            pyro.sample("x", dist.Normal(mu + z, 1.0), obs=x)

    def guide(x):
        mu = pyro.sample("mu", dist.Normal(x.mean() / 2, 0.6))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x - mu) / 2, 0.8))

    return model, guide


@pytest.mark.parametrize("method", ["iw", "ais"])
def test_the_evidence_of_global_and_local_latents_matches_the_closed_form(method):
    model, guide = _global_and_local()
    x = torch.tensor([0.5, -1.0, 2.0, 1.5], dtype=F64)
    covariance = 2 * torch.eye(4, dtype=F64) + torch.ones(4, 4, dtype=F64)
    truth = dist.MultivariateNormal(torch.zeros(4, dtype=F64), covariance).log_prob(x).item()
    samples = 4000 if method == "iw" else 16
    estimate = log_evidence(
        model, guide, x, num_samples=samples, method=method, num_steps=300, seed=0
    )
    assert abs(estimate.value - truth) < 4 * estimate.stderr + 1e-3
    assert estimate.num_data == 4 and estimate.per_point == pytest.approx(estimate.value / 4)


def test_estimates_run_in_eval_mode_and_leave_batchnorm_statistics_alone():
    pair = _BatchNormPair()
    x = torch.randint(0, 5, (30, 6)).float()
    pair.train()
    before = pair.encoder[1].running_mean.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VectorizationWarning)
        iw_log_marginal(pair.model, pair.guide, x, num_samples=20, seed=0)
        diagnose(pair.model, pair.guide, x, seed=0)
    assert torch.equal(pair.encoder[1].running_mean, before)
    assert pair.training and pair.encoder[1].training  # the caller's mode comes back


def test_dtype_casts_the_modules_of_model_and_guide_methods_and_restores_them():
    pair = _BatchNormPair()
    x = torch.randint(0, 5, (30, 6)).double()
    seen = []
    pair.decoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VectorizationWarning)
        elbo(pair.model, pair.guide, x, num_particles=4, dtype=F64, seed=0)
    assert seen and set(seen) == {F64}  # the decoder, behind a method, ran in float64
    assert pair.decoder.weight.dtype == torch.float32  # and is cast back after the call


def test_per_point_figures_given_fixed_globals_say_what_they_are_given():
    model, _ = _global_and_local()
    given = pyro.poutine.condition(model, data={"mu": torch.tensor(0.3, dtype=F64)})

    def local_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x - 0.3) / 2, 0.5**0.5))  # the exact posterior

    x = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    estimate = iw_log_marginal(given, local_guide, x, num_samples=10, seed=0)
    assert estimate.given == ("mu",)
    expected = dist.Normal(0.3, math.sqrt(2.0)).log_prob(x)  # log p(x_n given mu = 0.3)
    torch.testing.assert_close(estimate.per_point, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(exact_log_marginal(given, x), expected, rtol=0, atol=1e-6)
