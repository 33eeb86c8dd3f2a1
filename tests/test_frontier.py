"""The price of forcing the latent: remedies in fit, the beta sweep, the linear oracle."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
import torch
from pyro import distributions as dist
from torch.distributions import kl_divergence

from guides import AmortizedGaussian
from inference import fit, rate_distortion
from inference.estimators.diagnostics import diagnose
from inference.studies.frontier import linear_beta_optimum
from lvm_models import GaussianVAE, LinearGaussian

NOISE_SCALE = 0.5  # sigma^2 = 0.25
SPECTRUM = (4.0, 2.0, 1.0, 0.5, 0.15, 0.1)  # the data's covariance eigenvalues
LATENT_DIM = 4
Z = 4.0  # standard errors: a correct estimate strays this far with probability 6e-5
# rate_distortion measures each row with diagnose's defaults: its distortion averages this
# many draws of z per point.
DIAGNOSE_DRAWS = inspect.signature(diagnose).parameters["num_particles"].default


@pytest.fixture(scope="module")
def spectrum_data() -> torch.Tensor:
    """Gaussian data whose covariance has the eigenvalues SPECTRUM in a random basis."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    white = torch.randn(4000, 6, generator=generator, dtype=torch.float64)
    return (white * torch.tensor(SPECTRUM).sqrt()) @ basis.T + 1.0


def train_linear(x: torch.Tensor, beta: float) -> tuple[LinearGaussian, AmortizedGaussian]:
    torch.manual_seed(0)
    model = LinearGaussian(6, LATENT_DIM, noise="isotropic", fixed_noise=NOISE_SCALE).double()
    guide = AmortizedGaussian(6, LATENT_DIM, hidden=()).double()
    fit(model, guide, x, steps=3000, lr=1e-2, beta=beta, seed=0, progress=False, jit=True)
    return model, guide


# beta sigma^2 = 2.5 (between 4 and 2), 0.75 (between 1 and 0.5), 0.3 (between 0.5 and 0.15).
@pytest.mark.parametrize(("beta", "expected_active"), [(10.0, 1), (3.0, 3), (1.2, 4)])
def test_beta_objective_keeps_the_directions_above_beta_sigma_squared(
    spectrum_data, beta, expected_active
):
    optimum = linear_beta_optimum(spectrum_data, LATENT_DIM, NOISE_SCALE, beta)
    assert optimum.active_units == expected_active
    model, guide = train_linear(spectrum_data, beta)
    assert diagnose(model, guide, spectrum_data[:1000], seed=0).active_units == expected_active
    learned = torch.linalg.svdvals(model.weight.detach()) ** 2  # descending
    expected = optimum.squared_singular_values
    kept = expected > 0
    torch.testing.assert_close(learned[kept], expected[kept], rtol=0.05, atol=0.0)
    # A dropped direction keeps a weight far below the smallest kept one.
    assert bool((learned[~kept] < 0.05 * expected[kept].min()).all())


def test_a_one_step_warm_up_to_beta_one_trains_as_the_plain_elbo(spectrum_data):
    x = spectrum_data[:500].float()
    parameters = []
    for options in ({}, {"beta": 1.0, "kl_warmup_steps": 1}):
        torch.manual_seed(0)
        model, guide = GaussianVAE(6, 2, hidden=(8,)), AmortizedGaussian(6, 2, hidden=(8,))
        fit(model, guide, x, steps=20, batch_size=50, seed=0, progress=False, **options)
        parameters.append([p.detach().clone() for p in [*model.parameters(), *guide.parameters()]])
    for plain, explicit in zip(*parameters):
        assert torch.equal(plain, explicit)


def test_history_records_beta_rate_and_distortion_during_warm_up(spectrum_data):
    x = spectrum_data[:500].float()
    torch.manual_seed(0)
    model, guide = GaussianVAE(6, 2, hidden=(8,)), AmortizedGaussian(6, 2, hidden=(8,))
    result = fit(
        model, guide, x, steps=40, kl_warmup_steps=20, beta=0.5, log_every=10, progress=False
    )
    history = result.history
    assert history.logged_steps == (9, 19, 29, 39)
    assert history.beta == (0.25, 0.5, 0.5, 0.5)
    assert len(history.rate) == len(history.distortion) == 4
    assert all(rate >= 0 for rate in history.rate)


@pytest.fixture(scope="module")
def linear_sweep(spectrum_data):
    """A two-beta sweep of pPCA with a linear encoder: the table, the pairs it measured, x."""
    x = spectrum_data[:1000]
    pairs = []

    def make_guide(model: LinearGaussian) -> AmortizedGaussian:
        guide = AmortizedGaussian(6, 2, hidden=()).double()
        pairs.append((model, guide))
        return guide

    table = rate_distortion(
        lambda: LinearGaussian(6, 2, noise="isotropic", fixed_noise=NOISE_SCALE).double(),
        make_guide,
        x,
        betas=(0.5, 2.0),
        steps=300,
        num_samples=50,
        seed=0,
        jit=True,
    )
    return table, pairs, x


def linear_elbo(
    model: LinearGaussian, guide: AmortizedGaussian, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per point, in closed form for pPCA with a linear Gaussian encoder: the ELBO, the rate
    KL(q || p), and the variance under q of log p(x given z), each of shape (N,).

    With q = N(m, diag(s^2)), z = m + s eps, the residual is x - W z - b = r - A eps, with
    r = x - W m - b and A = W diag(s) (D, k), and log p(x given z) = c - |r - A eps|^2 / (2
    sigma^2). So E_q log p(x given z) = log N(x; W m + b, sigma^2 I) - tr(A^T A) / (2 sigma^2)
    and, eps being standard normal, Var_q |r - A eps|^2 = 4 |A^T r|^2 + 2 |A^T A|_F^2.
    """
    variance = NOISE_SCALE**2
    with torch.no_grad():
        q = guide.distribution(x).base_dist  # Normal, (N, k)
        decoded = q.loc @ model.weight.T + model.bias  # (N, D): W m + b
        residual = x - decoded
        spread = model.weight * q.scale.unsqueeze(-2)  # (N, D, k): A
        gram = spread.transpose(-1, -2) @ spread  # (N, k, k): A^T A
        projected = (spread.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)  # (N, k)
        log_likelihood = dist.Normal(decoded, NOISE_SCALE).log_prob(x).sum(-1)
        log_likelihood = log_likelihood - gram.diagonal(dim1=-2, dim2=-1).sum(-1) / (2 * variance)
        rate = kl_divergence(q, dist.Normal(0.0, 1.0)).sum(-1)
        squared_norm_variance = 4 * projected.pow(2).sum(-1) + 2 * gram.pow(2).sum((-2, -1))
    return log_likelihood - rate, rate, squared_norm_variance / (4 * variance**2)


def test_rate_distortion_table_has_one_row_per_beta_in_order(linear_sweep):
    table, _, _ = linear_sweep
    assert [row.beta for row in table.rows] == [0.5, 2.0]
    assert json.loads(table.to_json())["rows"][1]["beta"] == 2.0
    assert "distortion" in str(table)


def test_frontier_rate_is_the_closed_form_kl_of_the_trained_pair(linear_sweep):
    table, pairs, x = linear_sweep
    for row, (model, guide) in zip(table.rows, pairs):
        _, rate, _ = linear_elbo(model, guide, x)
        assert row.rate == pytest.approx(rate.mean().item(), rel=1e-9)


def test_frontier_elbo_is_the_closed_form_elbo_of_the_trained_pair(linear_sweep):
    """The row's ELBO is Monte Carlo (the distortion from diagnose's draws, num_particles per
    point); it must lie within Z of its standard errors of the closed form."""
    table, pairs, x = linear_sweep
    for row, (model, guide) in zip(table.rows, pairs):
        elbo, _, likelihood_variance = linear_elbo(model, guide, x)
        stderr = likelihood_variance.sum().sqrt().item() / DIAGNOSE_DRAWS**0.5 / x.shape[0]
        assert abs(row.elbo - elbo.mean().item()) < Z * stderr


def test_frontier_elbo_is_below_the_iw_estimate(linear_sweep):
    table, _, _ = linear_sweep
    for row in table.rows:
        assert row.elbo <= row.iw + Z * row.iw_stderr and row.exact is not None


def test_a_smaller_beta_buys_rate(linear_sweep):
    table, _, _ = linear_sweep
    assert table.rows[0].rate > table.rows[1].rate


@pytest.mark.parametrize("betas", [(), (1.0, -0.5), ("one",)])
def test_bad_betas_are_named(spectrum_data, betas):
    with pytest.raises(ValueError, match="betas must be"):
        rate_distortion(lambda: None, lambda model: None, spectrum_data, betas=betas, steps=1)


def test_lvm_frontier_quick_writes_the_table_and_both_plots(tmp_path):
    command = [sys.executable, "-m", "inference.studies.cli", "frontier", "--quick", "--quiet"]
    completed = subprocess.run([*command, "--out", str(tmp_path)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / "frontier.json").read_text())
    assert all(len(sweep["rows"]) == 3 for sweep in report["sweeps"].values())
    vae = report["sweeps"]["full-covariance Gaussian VAE"]
    assert [row["remedy"] for row in vae["remedies"]] == [
        "KL warm-up",
        "cyclical KL",
        "free bits 1 nat",
        "aggressive",
        "delta-VAE 0.5 nat",
        "BN-VAE gamma 1",
        "IWAE-DReG K=5",
    ]
    for row in vae["remedies"]:
        assert row["beta"] == 1.0 and row["exact"] is not None, row
        assert row["elbo"] <= row["iw"] + 3 * row["iw_stderr"], row
    assert "IWAE-DReG K=5" in completed.stdout
    for name in ("rate_distortion.png", "log_px_against_rate.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "distortion" in completed.stdout
