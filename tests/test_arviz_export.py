from __future__ import annotations

import arviz as az
import numpy as np
import pyro
import pytest
import torch

from guides import AmortizedGaussian, ExactPosterior, PriorGuide
from inference import fit
from inference.arviz_export import importance_weight_diagnostics, to_inference_data
from tests._pairs import ChainModel, linear_gaussian


@pytest.fixture(scope="module")
def pair_and_data():
    pyro.set_rng_seed(0)  # module fixtures are built before the per-test reseed
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5)
    return model, AmortizedGaussian(4, 2, hidden=(8,)).double(), model.sample(12)


def test_export_lays_out_draws_weights_and_data_by_point(pair_and_data):
    model, guide, x = pair_and_data
    idata = to_inference_data(model, guide, x, num_draws=50, seed=0)
    assert idata.posterior["z"].dims == ("chain", "draw", "point", "z_dim")
    assert idata.posterior["z"].shape == (1, 50, 12, 2)
    assert idata.sample_stats["log_weight"].shape == (1, 50, 12)
    np.testing.assert_array_equal(idata.observed_data["data"].values, x.numpy())


def test_exported_weights_of_the_exact_posterior_all_equal_log_marginal(pair_and_data):
    model, _, x = pair_and_data
    idata = to_inference_data(model, ExactPosterior(model), x, num_draws=20, seed=0)
    expected = model.log_marginal(x).detach().numpy()
    np.testing.assert_allclose(
        idata.sample_stats["log_weight"].values[0], np.tile(expected, (20, 1)), atol=1e-9
    )


def test_latent_sites_are_named_from_the_trace():
    chain = ChainModel()
    idata = to_inference_data(chain.model, chain.guide, chain.sample(5), num_draws=10, seed=0)
    assert set(idata.posterior.data_vars) == {"top", "middle"}


def test_same_seed_gives_the_same_export(pair_and_data):
    model, guide, x = pair_and_data
    first = to_inference_data(model, guide, x, num_draws=30, seed=3)
    second = to_inference_data(model, guide, x, num_draws=30, seed=3)
    np.testing.assert_array_equal(first.posterior["z"].values, second.posterior["z"].values)


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
    for group in ("posterior", "sample_stats", "observed_data", "reference_posterior", "training"):
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
