from __future__ import annotations

import math
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as numpyro_dist
import pyro.poutine as poutine
import pytest
import torch
from _pairs import linear_gaussian
from numpyro.infer.util import log_density
from pyro.distributions import constraints
from pyro.nn import PyroParam

from guides import AmortizedCategorical, AmortizedGaussian, ExactPosterior
from inference import (
    NumPyroGuide,
    UnreliableReferenceWarning,
    amortization_gap,
    compare,
    elbo,
    exact_log_marginal,
    iw_log_marginal,
    numpyro_backend,
    numpyro_elbo,
    numpyro_exact_log_marginal,
    numpyro_iw_log_marginal,
    nuts_log_marginal,
    to_numpyro,
)
from inference.backends.arviz import to_inference_data
from inference.backends.numpyro.bounds import _importance_estimate, _mean_and_stderr
from inference.estimators.bounds import weight_diagnostics
from lvm_models import AutoregressiveVAE, BernoulliVAE, GaussianMixture, GaussianVAE


def _mixture() -> GaussianMixture:
    generator = torch.Generator().manual_seed(0)
    return GaussianMixture.from_params(
        torch.randn(3, generator=generator, dtype=torch.float64),
        3 * torch.randn(3, 4, generator=generator, dtype=torch.float64),
        0.5 + torch.rand(3, 4, generator=generator, dtype=torch.float64),
    )


def _nonlinear_vae() -> GaussianVAE:
    """A 2-D latent, tanh decoder with noise scale about 0.2: a curved, non-Gaussian posterior."""
    torch.manual_seed(0)
    model = GaussianVAE(3, 2, hidden=(16,)).double()
    with torch.no_grad():
        model.decoder[-1].bias[3:].fill_(-1.5)
    return model


def _broad_encoder(data_dim: int, latent_dim: int) -> AmortizedGaussian:
    """An untrained encoder whose scales (about 1.3) exceed the posterior's: light-tailed weights,
    so the delta-method standard errors can be trusted."""
    torch.manual_seed(1)
    guide = AmortizedGaussian(data_dim, latent_dim, hidden=(8,)).double()
    with torch.no_grad():
        guide.encoder[-1].bias[latent_dim:].fill_(1.0)
    return guide


def _numpyro_log_density(program, x: torch.Tensor, z: torch.Tensor) -> float:
    """NumPyro's log_density of the program at latent z, data x (jitted: one compilation)."""
    log_joint = jax.jit(lambda x, z: log_density(program, (x,), {}, {"z": z})[0])
    return float(log_joint(x.numpy(), z.numpy()))


def _assert_within_three_standard_errors(jax_estimate, torch_estimate) -> None:
    """The two means differ by less than 3 standard errors of their difference."""
    difference = jax_estimate.mean - torch_estimate.mean
    assert abs(difference) < 3 * math.hypot(jax_estimate.stderr, torch_estimate.stderr)


MODELS = {
    "linear-gaussian": lambda: linear_gaussian(4, 2, 1.0),
    "mixture": _mixture,
    "vae-diagonal": lambda: GaussianVAE(4, 2, hidden=(8, 8)).double(),
    "vae-full": lambda: GaussianVAE(4, 2, hidden=(8,), covariance="full").double(),
    "vae-full-from-z": lambda: GaussianVAE(
        4, 2, hidden=(8,), covariance="full", cholesky_from_z=True
    ).double(),
    "vae-bernoulli": lambda: BernoulliVAE(6, 2, hidden=(8,)).double(),
}


@pytest.fixture(scope="module")
def linear():
    model = linear_gaussian(4, 2, 0.5)
    return model, model.sample(10)


@pytest.fixture(scope="module")
def linear_reference(linear):
    model, x = linear
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableReferenceWarning)
        return nuts_log_marginal(model, x, seed=0)


@pytest.mark.parametrize("name", MODELS)
def test_mirror_has_the_log_joint_of_the_pyro_model(name):
    model = MODELS[name]()
    if name == "vae-full":
        tril = torch.eye(4, dtype=torch.float64) + torch.tril(torch.full((4, 4), 0.3), -1)
        model.scale_tril = PyroParam(tril, constraints.lower_cholesky)
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(num_data=6)  # draws z and x from the model
        x, z = trace.nodes["x"]["value"], trace.nodes["z"]["value"]
        expected = (
            poutine.trace(poutine.condition(model, data={"z": z})).get_trace(x).log_prob_sum()
        )
    assert _numpyro_log_density(to_numpyro(model), x, z) == pytest.approx(
        expected.item(), abs=1e-10
    )


@pytest.mark.parametrize(
    "make_guide",
    [lambda: AmortizedGaussian(4, 2, hidden=(8, 8)), lambda: AmortizedCategorical(4, 3)],
    ids=["gaussian", "categorical"],
)
def test_encoder_mirror_has_the_log_density_of_the_pyro_guide(make_guide):
    guide = make_guide().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    with torch.no_grad():
        trace = poutine.trace(guide).get_trace(x)
    z = trace.nodes["z"]["value"]
    expected = trace.log_prob_sum().item()
    assert _numpyro_log_density(to_numpyro(guide), x, z) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("name", ["linear-gaussian", "mixture"])
def test_exact_log_marginal_is_the_same_in_pyro_and_numpyro(name):
    model = MODELS[name]()
    x = model.sample(20)
    torch.testing.assert_close(
        numpyro_exact_log_marginal(model, x),
        exact_log_marginal(model, x).detach(),
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["linear-gaussian", "vae-diagonal"])
def test_iw_estimates_agree_with_pyro_within_standard_errors(name):
    # Both posteriors are broad (noise 1, or an untrained decoder), the encoder broader still.
    model = MODELS[name]()
    x = model.sample(10)
    guide = _broad_encoder(4, 2)
    jax_estimate = numpyro_iw_log_marginal(model, guide, x, num_samples=1000, seed=0)
    torch_estimate = iw_log_marginal(model, guide, x, num_samples=1000, seed=0)
    assert float(jax_estimate.khat.max()) < 0.7 and float(torch_estimate.khat.max()) < 0.7
    _assert_within_three_standard_errors(jax_estimate, torch_estimate)


def test_elbo_agrees_with_pyro_within_standard_errors(linear):
    model, x = linear
    guide = _broad_encoder(4, 2)
    jax_estimate = numpyro_elbo(model, guide, x, num_particles=500, seed=0)
    torch_estimate = elbo(model, guide, x, num_particles=500, seed=0)
    _assert_within_three_standard_errors(jax_estimate, torch_estimate)


@pytest.mark.parametrize("num_samples", [3000, 40_000], ids=["below-cap", "above-cap"])
def test_the_two_reductions_agree_on_the_same_log_weights(num_samples):
    # Same weights in, JAX's reduction and ArviZ's fit against PyTorch's reduction and fit.
    scales = np.linspace(0.2, 2.0, 6)
    log_weights = scales * np.random.default_rng(0).standard_normal((num_samples, 6))
    chunks = (jnp.asarray(part) for part in np.array_split(log_weights, 7))
    jax_estimate = _importance_estimate(chunks, num_samples)
    torch_weights = torch.from_numpy(log_weights)
    ess, khat = weight_diagnostics(torch_weights)
    log_mean = torch.logsumexp(torch_weights, 0) - math.log(num_samples)
    torch.testing.assert_close(jax_estimate.per_point, log_mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(jax_estimate.ess, ess, rtol=1e-10, atol=0)
    torch.testing.assert_close(jax_estimate.khat, khat, rtol=0, atol=1e-6)


def test_streamed_khat_is_arviz_psislw_on_all_the_weights():
    log_weights = np.random.default_rng(1).standard_t(3, size=(5000, 4))
    chunks = (jnp.asarray(part) for part in np.array_split(log_weights, 9))
    _, expected = az.psislw(log_weights.T, reff=1.0)
    np.testing.assert_allclose(
        _importance_estimate(chunks, 5000).khat.numpy(), expected, rtol=0, atol=1e-12
    )


def test_streamed_moments_are_the_mean_and_its_standard_error():
    values = 1e6 + np.random.default_rng(2).standard_normal((1000, 3))  # far from zero
    mean, stderr = _mean_and_stderr(jnp.asarray(part) for part in np.array_split(values, 6))
    np.testing.assert_allclose(mean, values.mean(0), rtol=1e-14)
    np.testing.assert_allclose(stderr, values.std(0, ddof=1) / math.sqrt(1000), rtol=1e-9)


def test_iw_estimate_of_the_exact_posterior_is_exact_with_no_tail(linear):
    model, x = linear
    posterior = model.posterior(x)
    loc, scale_tril = (
        jnp.asarray(t.detach().numpy()) for t in (posterior.loc, posterior.scale_tril)
    )
    exact = NumPyroGuide(lambda _: numpyro_dist.MultivariateNormal(loc, scale_tril=scale_tril))
    estimate = numpyro_iw_log_marginal(model, exact, x, num_samples=200, seed=0)
    expected = model.log_marginal(x).detach()
    torch.testing.assert_close(estimate.per_point, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(estimate.ess, torch.full((10,), 200.0, dtype=torch.float64))
    assert bool((estimate.khat == -math.inf).all())


def test_iw_estimate_does_not_depend_on_chunk_size(linear):
    model, x = linear
    guide = _broad_encoder(4, 2)
    whole = numpyro_iw_log_marginal(model, guide, x, num_samples=100, seed=3)
    chunked = numpyro_iw_log_marginal(model, guide, x, num_samples=100, chunk_size=30, seed=3)
    torch.testing.assert_close(chunked.per_point, whole.per_point, rtol=0, atol=1e-12)


def test_nuts_reference_matches_the_linear_gaussian_closed_form(linear, linear_reference):
    model, x = linear
    exact = model.log_marginal(x).detach()
    assert abs(linear_reference.mean - exact.mean().item()) < 3 * linear_reference.stderr
    # Ten points: 4 standard errors keeps the chance of a false alarm below 1e-3.
    assert bool(
        ((linear_reference.per_point - exact).abs() < 4 * linear_reference.per_point_stderr).all()
    )


def test_nuts_reference_matches_the_quadrature_oracle_of_a_2d_vae():
    model = _nonlinear_vae()
    x = model.sample(10)
    exact = exact_log_marginal(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableReferenceWarning)
        reference = nuts_log_marginal(model, x, seed=0)
    assert abs(reference.mean - exact.mean().item()) < 3 * reference.stderr
    assert bool(((reference.per_point - exact).abs() < 4 * reference.per_point_stderr).all())


def test_nuts_reference_reports_convergence_per_point(linear_reference):
    assert linear_reference.rhat.shape == linear_reference.bulk_ess.shape == (10,)
    assert bool((linear_reference.rhat < 1.01).all() and (linear_reference.bulk_ess > 200).all())


def test_nuts_draws_export_to_arviz_with_the_same_rhat(linear, linear_reference):
    model, x = linear
    draws = linear_reference.draws  # (chain, draw, N, k)
    assert draws.shape[:3] == (2, 1000, 10)
    idata = to_inference_data(
        model, ExactPosterior(model), x, num_draws=5, reference_draws={"z": draws}, seed=0
    )
    rhat = az.rhat(idata.reference_posterior)["z"].values.max(-1)
    np.testing.assert_allclose(rhat, linear_reference.rhat.numpy())


def test_short_chains_warn_naming_the_points(linear):
    model, x = linear
    with pytest.warns(UnreliableReferenceWarning, match=r"point\(s\) \[\d"):
        nuts_log_marginal(model, x, num_warmup=5, num_samples=10, num_importance=100, seed=0)


def test_amortization_gap_vanishes_for_the_exact_posterior(linear, linear_reference):
    model, x = linear
    exact_encoder = iw_log_marginal(model, ExactPosterior(model), x, num_samples=10, seed=0)
    gap = amortization_gap(linear_reference, exact_encoder)
    assert abs(gap.mean) < 3 * gap.stderr


def test_amortization_gap_of_an_untrained_encoder_is_positive(linear, linear_reference):
    model, x = linear
    encoder = iw_log_marginal(model, _broad_encoder(4, 2), x, num_samples=10, seed=0)
    gap = amortization_gap(linear_reference, encoder)
    assert gap.mean > 3 * gap.stderr


def test_compare_adds_the_nuts_reference_as_a_row(linear, linear_reference, monkeypatch):
    # The reference itself is tested above; here only how compare reports it (no second NUTS run).
    model, x = linear
    monkeypatch.setattr(numpyro_backend, "nuts_log_marginal", lambda *_, **__: linear_reference)
    table = compare(model, _broad_encoder(4, 2), x, num_samples=(1, 10), seed=0, reference="nuts")
    assert [row.estimator for row in table.rows] == ["elbo", "iw", "iw", "nuts", "exact"]
    nuts = table.row("nuts")
    assert (nuts.num_samples, nuts.mean, nuts.stderr) == (
        10_000,
        linear_reference.mean,
        linear_reference.stderr,
    )
    assert abs(nuts.mean - table.row("exact").mean) < 3 * nuts.stderr


def test_compare_rejects_an_unknown_reference(linear):
    model, x = linear
    with pytest.raises(ValueError, match="reference must be one of"):
        compare(model, _broad_encoder(4, 2), x, reference="hmc")


def test_to_numpyro_names_a_module_it_cannot_convert():
    with pytest.raises(TypeError, match="AutoregressiveVAE"):
        to_numpyro(AutoregressiveVAE(4, 2))


def test_nuts_reference_needs_a_continuous_latent():
    model = _mixture()
    with pytest.raises(ValueError, match="discrete latent"):
        nuts_log_marginal(model, model.sample(3))


@pytest.mark.parametrize(
    ("option", "value"),
    [("num_chains", 1), ("num_warmup", 0), ("num_importance", 0), ("proposal_df", 2.0)],
)
def test_nuts_reference_checks_its_options(linear, option, value):
    model, x = linear
    with pytest.raises(ValueError, match=option):
        nuts_log_marginal(model, x, **{option: value})


def test_estimators_check_that_the_guide_samples_the_models_latent(linear):
    model, x = linear
    guide = NumPyroGuide(lambda x: to_numpyro(model).prior, site="w")
    with pytest.raises(ValueError, match="site 'w'"):
        numpyro_iw_log_marginal(model, guide, x, num_samples=10)


def test_estimators_check_x(linear):
    model, _ = linear
    with pytest.raises(ValueError, match="x must be 2-D"):
        numpyro_elbo(model, _broad_encoder(4, 2), torch.zeros(4, dtype=torch.float64))


def test_the_lazy_names_of_inference_are_the_backends_public_names():
    import inference
    import inference.backends.numpyro as backend

    lazy = {name for name, module in inference._LAZY_NAMES.items() if module == backend.__name__}
    assert lazy == set(backend.__all__)
