"""The price of forcing the latent: remedies in fit, the beta sweep, the linear oracle."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from guides import AmortizedGaussian
from inference import fit, rate_distortion
from inference.diagnostics import diagnose
from inference.frontier import linear_beta_optimum
from lvm_models import GaussianVAE, LinearGaussian

NOISE_SCALE = 0.5  # sigma^2 = 0.25
SPECTRUM = (4.0, 2.0, 1.0, 0.5, 0.15, 0.1)  # the data's covariance eigenvalues
LATENT_DIM = 4


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


def test_rate_distortion_table_has_one_row_per_beta_on_the_elbo_identity(spectrum_data):
    x = spectrum_data[:1000]
    table = rate_distortion(
        lambda: LinearGaussian(6, 2, noise="isotropic", fixed_noise=NOISE_SCALE).double(),
        lambda model: AmortizedGaussian(6, 2, hidden=()).double(),
        x,
        betas=(0.5, 2.0),
        steps=300,
        num_samples=50,
        seed=0,
        jit=True,
    )
    assert [row.beta for row in table.rows] == [0.5, 2.0]
    for row in table.rows:
        assert row.elbo == pytest.approx(-(row.rate + row.distortion))
        assert row.elbo <= row.iw + 3 * row.iw_stderr and row.exact is not None
    assert table.rows[0].rate > table.rows[1].rate  # a smaller beta buys rate
    assert json.loads(table.to_json())["rows"][1]["beta"] == 2.0
    assert "distortion" in str(table)


@pytest.mark.parametrize("betas", [(), (1.0, -0.5), ("one",)])
def test_bad_betas_are_named(spectrum_data, betas):
    with pytest.raises(ValueError, match="betas must be"):
        rate_distortion(lambda: None, lambda model: None, spectrum_data, betas=betas, steps=1)


def test_lvm_frontier_quick_writes_the_table_and_both_plots(tmp_path):
    command = [sys.executable, "-m", "inference.cli", "frontier", "--quick", "--quiet"]
    completed = subprocess.run(
        [*command, "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads((tmp_path / "frontier.json").read_text())
    assert all(len(sweep["rows"]) == 3 for sweep in report["sweeps"].values())
    for name in ("rate_distortion.png", "log_px_against_rate.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "distortion" in completed.stdout
