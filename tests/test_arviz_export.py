from __future__ import annotations

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import xarray as xr
from _pairs import ChainModel, linear_gaussian

from guides import AmortizedGaussian, ExactPosterior, PriorGuide
from inference import fit
from inference.backends.arviz import (
    importance_weight_diagnostics,
    importance_weighted_summary,
    to_inference_data,
)


@pytest.fixture(scope="module")
def pair_and_data():
    pyro.set_rng_seed(0)  # module fixtures are built before the per-test reseed
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5)
    return model, AmortizedGaussian(4, 2, hidden=(8,)).double(), model.sample(12)


def test_export_lays_out_draws_weights_and_data_by_point(pair_and_data):
    model, guide, x = pair_and_data
    idata = to_inference_data(model, guide, x, num_draws=50, seed=0)
    assert idata.proposal["z"].dims == ("chain", "draw", "point", "z_dim")
    assert idata.proposal["z"].shape == (1, 50, 12, 2)
    assert idata.proposal["log_weight"].dims == ("chain", "draw", "point")
    assert idata.proposal["log_weight"].shape == (1, 50, 12)
    np.testing.assert_array_equal(idata.observed_data["data"].values, x.numpy())


def test_guide_draws_are_not_exported_as_posterior_draws(pair_and_data):
    model, guide, x = pair_and_data
    idata = to_inference_data(model, guide, x, num_draws=5, seed=0)
    # az.summary and az.plot_posterior read the posterior group: there is none to misread.
    assert set(idata.groups()) == {"proposal", "observed_data"}


def test_exported_weights_of_the_exact_posterior_all_equal_log_marginal(pair_and_data):
    model, _, x = pair_and_data
    idata = to_inference_data(model, ExactPosterior(model), x, num_draws=20, seed=0)
    expected = model.log_marginal(x).detach().numpy()
    np.testing.assert_allclose(
        idata.proposal["log_weight"].values[0], np.tile(expected, (20, 1)), atol=1e-9
    )


def test_latent_sites_are_named_from_the_trace():
    chain = ChainModel()
    idata = to_inference_data(chain.model, chain.guide, chain.sample(5), num_draws=10, seed=0)
    assert set(idata.proposal.data_vars) == {"top", "middle", "log_weight"}


def test_same_seed_gives_the_same_export(pair_and_data):
    model, guide, x = pair_and_data
    first = to_inference_data(model, guide, x, num_draws=30, seed=3)
    second = to_inference_data(model, guide, x, num_draws=30, seed=3)
    np.testing.assert_array_equal(first.proposal["z"].values, second.proposal["z"].values)


def test_weighted_mean_of_the_draws_is_the_exact_posterior_mean_within_its_standard_error():
    pyro.set_rng_seed(0)
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5)
    x = model.sample(12)
    posterior = model.posterior(x)
    loc, scale_tril = posterior.loc.detach(), posterior.scale_tril.detach()

    def broad_shifted_guide(x):
        # Wider than the posterior (light-tailed weights: the delta-method SE holds), and off
        # centre, so the unweighted mean of the draws would be wrong by 0.3.
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc + 0.3, scale_tril=1.5 * scale_tril))

    idata = to_inference_data(model, broad_shifted_guide, x, num_draws=2000, seed=0)
    assert bool((importance_weight_diagnostics(idata).khat < 0.5).all())
    summary = importance_weighted_summary(idata)["z"]
    error = summary.sel(statistic="mean").values - loc.numpy()  # (12, 2)
    # 24 comparisons: 4 standard errors keeps the chance of a false alarm below 2e-3.
    assert bool((np.abs(error) < 4 * summary.sel(statistic="mcse_mean").values).all())
    unweighted = idata.proposal["z"].mean(("chain", "draw")).values
    assert bool((np.abs(unweighted - loc.numpy()) > 0.2).all())


def test_weighted_summary_steps_through_the_weighted_cdf():
    # Draws 1, 2, 3, 4 (shuffled) with weights 0.1 .. 0.4: mean 3, sd 1, cumulative weights
    # 0.1, 0.3, 0.6, 1.0.
    draws, weights = np.array([3.0, 1.0, 4.0, 2.0]), np.array([0.3, 0.1, 0.4, 0.2])
    proposal = xr.Dataset(
        {
            "z": (("chain", "draw", "point", "z_dim"), draws.reshape(1, 4, 1, 1)),
            "log_weight": (("chain", "draw", "point"), np.log(7 * weights).reshape(1, 4, 1)),
        }
    )
    idata = az.InferenceData(proposal=proposal)
    summary = importance_weighted_summary(idata, quantiles=(0.05, 0.3, 0.5, 0.95))["z"]
    assert list(summary["statistic"].values) == [
        "mean", "sd", "mcse_mean", "q0.05", "q0.3", "q0.5", "q0.95"
    ]  # fmt: skip
    mcse = np.sqrt((weights**2 * (draws - 3.0) ** 2).sum())
    np.testing.assert_allclose(
        summary.values[:, 0, 0], [3.0, 1.0, mcse, 1.0, 2.0, 3.0, 4.0], rtol=1e-12
    )


@pytest.mark.parametrize("noise", [1.0, 2.0, 3.0])
def test_khat_and_ess_agree_with_arviz(noise):
    model = linear_gaussian(data_dim=3, latent_dim=1, noise=noise)
    x = model.sample(30)
    idata = to_inference_data(model, PriorGuide(model), x, num_draws=4000, seed=0)
    diagnostics = importance_weight_diagnostics(idata)
    assert bool((diagnostics.khat < 0.5).all())
    # The same generalized Pareto fit (Zhang and Stephens) on the same tail.
    torch.testing.assert_close(diagnostics.khat, diagnostics.khat_arviz, rtol=0, atol=1e-6)
    # ArviZ's ESS is that of its smoothed weights: only the largest 3 sqrt(K) weights are
    # replaced by their expected order statistics, which moves the ESS by a few percent here.
    relative = (diagnostics.ess - diagnostics.ess_arviz).abs() / diagnostics.ess
    assert float(relative.max()) < 0.05


def test_export_round_trips_through_netcdf(pair_and_data, tmp_path):
    model, guide, x = pair_and_data
    result = fit(model, guide, x, steps=5, seed=0, progress=False)
    reference = {"z": np.random.default_rng(0).normal(size=(2, 7, 12, 2))}
    idata = to_inference_data(
        model, guide, x, num_draws=40, history=result.history, reference_draws=reference, seed=0
    )
    path = tmp_path / "export.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    for group in ("proposal", "observed_data", "reference_posterior", "training"):
        assert loaded[group].identical(idata[group]), group
    np.testing.assert_array_equal(loaded.training["loss"].values, np.array(result.history.losses))


def test_history_dict_uses_its_step_entry_as_coordinate(pair_and_data):
    model, guide, x = pair_and_data
    history = {"step": [10, 20, 30], "elbo": [-3.0, -2.0, -1.5], "rate": [1.0, 0.5, 0.2]}
    idata = to_inference_data(model, guide, x, num_draws=5, history=history, seed=0)
    assert list(idata.training["step"].values) == [10, 20, 30]
    assert list(idata.training["rate"].values) == [1.0, 0.5, 0.2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_draws": 0}, "num_draws must be an integer >= 1"),
        ({"reference_draws": {"z": np.zeros((1, 5, 3, 2))}}, r"reference_draws\['z'\]"),
        ({"history": {"loss": [1.0, 2.0], "rate": [1.0]}}, "equal-length"),
    ],
)
def test_bad_arguments_are_named(pair_and_data, options, message):
    model, guide, x = pair_and_data
    with pytest.raises(ValueError, match=message):
        to_inference_data(model, guide, x, **options)


def test_summaries_name_a_missing_proposal_group_and_bad_quantiles(pair_and_data):
    model, guide, x = pair_and_data
    with pytest.raises(ValueError, match="'proposal' group"):
        importance_weight_diagnostics(az.from_dict(posterior={"z": np.zeros((1, 5, 3))}))
    idata = to_inference_data(model, guide, x, num_draws=5, seed=0)
    with pytest.raises(ValueError, match=r"quantiles must lie in \(0, 1\)"):
        importance_weighted_summary(idata, quantiles=(0.5, 1.0))
