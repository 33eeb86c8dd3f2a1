"""The price of a remedy: log p(x) from the exact oracle where it certifies one, IW_K where it
cannot (and labelled so), with the paired standard error over points."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from _pairs import linear_gaussian

from guides import AmortizedGaussian, BatchNormGaussian, CommittedRateGaussian, PriorGuide
from inference import CyclicalAnnealing, exact_log_marginal, fit, iw_log_marginal
from inference.studies import experiments
from inference.studies.experiments import QUICK_BUDGET
from inference.studies.remedies import (
    REMEDIES,
    RemedyResult,
    format_remedies,
    log_px_change,
    price_remedies,
    remedy_named,
)
from lvm_models import GaussianVAE

NUM_SAMPLES = 200


@pytest.fixture(scope="module")
def trained():
    """A tiny linear-Gaussian model and encoder fitted to 32 points; the baseline is another
    linear-Gaussian model. Both have a closed-form log p(x)."""
    pyro.set_rng_seed(0)
    x = linear_gaussian(data_dim=4, seed=2).sample(32).float()
    model = linear_gaussian(data_dim=4, seed=0).float()
    guide = AmortizedGaussian(4, 2, hidden=())
    fit(model, guide, x, steps=100, lr=0.05, seed=0, progress=False)
    baseline = linear_gaussian(data_dim=4, seed=1).float()
    return model, guide, (baseline, PriorGuide(baseline)), x


def _change(trained, **options):
    model, guide, baseline, x = trained
    return log_px_change(
        model, guide, x, baseline=baseline, num_samples=NUM_SAMPLES, seed=0, **options
    )


def test_priced_figure_is_the_exact_mean_log_marginal(trained):
    model, _, (baseline, _), x = trained
    change = _change(trained)
    exact, baseline_exact = exact_log_marginal(model, x), exact_log_marginal(baseline, x)
    assert change.priced_by == "exact" and change.note == ""
    assert change.log_px == pytest.approx(exact.double().mean().item(), abs=1e-9)
    assert change.exact == change.log_px
    assert change.mean == pytest.approx((exact - baseline_exact).double().mean().item(), abs=1e-6)


def test_iw_beside_the_exact_value_is_below_it_within_its_stderr(trained):
    change = _change(trained)
    assert change.iw.num_samples == NUM_SAMPLES
    assert change.iw.mean <= change.exact + 3 * change.iw.stderr
    assert change.iw_gap == pytest.approx(change.exact - change.iw.mean, abs=1e-12)


def test_stderr_is_the_paired_standard_error_over_points(trained):
    model, _, (baseline, _), x = trained
    change = _change(trained)
    differences = (exact_log_marginal(model, x) - exact_log_marginal(baseline, x)).tolist()
    mean = sum(differences) / len(differences)
    variance = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    assert change.stderr == pytest.approx(math.sqrt(variance / len(differences)), rel=1e-5)


def test_a_given_baseline_exact_value_is_used_as_is(trained):
    model, _, _, x = trained
    baseline_exact = torch.zeros(x.shape[0])
    change = _change(trained, baseline_exact=baseline_exact)
    assert change.mean == pytest.approx(exact_log_marginal(model, x).double().mean().item())


def _no_exact_pair(data_dim: int = 4):
    """A pair whose 3-D latent is beyond the quadrature oracle: no certified log p(x)."""
    model = GaussianVAE(data_dim, 3, hidden=(8,))
    return model, AmortizedGaussian(data_dim, 3, hidden=(8,))


@pytest.mark.parametrize("side", ["model", "baseline"])
def test_without_an_exact_value_the_price_falls_back_to_iw_and_says_so(trained, side):
    model, guide, baseline, x = trained
    if side == "model":
        model, guide = _no_exact_pair()
    else:
        baseline = _no_exact_pair()
    change = log_px_change(model, guide, x, baseline=baseline, num_samples=NUM_SAMPLES, seed=0)
    iw = iw_log_marginal(model, guide, x, num_samples=NUM_SAMPLES, seed=0)
    baseline_iw = iw_log_marginal(*baseline, x, num_samples=NUM_SAMPLES, seed=0)
    assert change.priced_by == "iw"
    assert "dimension 3" in change.note
    assert change.note.startswith("baseline: ") == (side == "baseline")
    assert change.log_px == pytest.approx(iw.mean, abs=1e-9)
    assert change.mean == pytest.approx(iw.mean - baseline_iw.mean, abs=1e-9)


def test_the_table_marks_a_row_priced_by_iw():
    def row(priced_by: str) -> RemedyResult:
        exact = priced_by == "exact"
        return RemedyResult(
            case="1b",
            remedy="beta = 0.2",
            rate=2.0,
            rate_gained=1.5,
            active_units=2,
            elbo=-6.0,
            elbo_change=-1.0,
            priced_by=priced_by,
            log_px=-5.0 if exact else -5.1,
            exact=-5.0 if exact else None,
            iw=-5.1,
            iw_stderr=0.01,
            iw_num_samples=1000,
            iw_gap=0.1 if exact else None,
            log_px_change=-0.2,
            log_px_change_stderr=0.01,
            note="" if exact else "no exact log p(x) for this model",
            seconds=1.0,
        )

    exact_only = format_remedies([row("exact")])
    with_fallback = format_remedies([row("exact"), row("iw")])
    assert "IW_1000" in exact_only and "*" not in exact_only
    assert with_fallback.splitlines()[2].count("*") == 1 and "* by IW_K" in with_fallback


def test_bad_arguments_are_named(trained):
    model, guide, baseline, x = trained
    with pytest.raises(TypeError, match="baseline must be a \\(model, guide\\) tuple"):
        log_px_change(model, guide, x, baseline=baseline[0])
    with pytest.raises(ValueError, match="at least 2 points"):
        log_px_change(model, guide, x[:1], baseline=baseline)
    with pytest.raises(ValueError, match="baseline_exact must have shape"):
        log_px_change(model, guide, x, baseline=baseline, baseline_exact=torch.zeros(3))


def test_pricing_needs_the_plain_runs_trained_pairs():
    with pytest.raises(ValueError, match="case 1b's trained pair"):
        price_remedies([], QUICK_BUDGET, progress=False)


EXPECTED_OPTIONS = {
    "beta = 0.2": {"beta": 0.2},
    "KL warm-up": {"kl_warmup_steps": QUICK_BUDGET.steps // 2},
    "cyclical KL": {"kl_schedule": CyclicalAnnealing(cycles=4, ratio=0.5)},
    "free bits 1 nat": {"free_bits": 1.0},
    "aggressive": {"aggressive": True},
    "delta-VAE 0.5 nat": {},
    "BN-VAE gamma 1": {},
    "IWAE-DReG K=5": {"objective": "iwae", "num_particles": 5, "gradient": "dreg"},
}
EXPECTED_GUIDES = {"delta-VAE 0.5 nat": CommittedRateGaussian, "BN-VAE gamma 1": BatchNormGaussian}


@pytest.mark.parametrize("remedy", REMEDIES, ids=lambda remedy: remedy.name)
def test_each_remedy_reaches_fit_with_its_options_and_its_guide(remedy, monkeypatch):
    """The study trains what the table names: switched off, a row would be the plain pair."""
    calls = []
    monkeypatch.setattr(experiments, "fit", lambda model, guide, x, **kw: calls.append((guide, kw)))
    setup = experiments.CORRELATED_FULL_COVARIANCE
    x, _ = experiments.experiment_data(setup, QUICK_BUDGET, 0)
    options = remedy.fit_options(QUICK_BUDGET.steps)
    experiments.train_pair(setup, x, QUICK_BUDGET, 0, False, guide_family=remedy.guide_family,
                           **options)  # fmt: skip
    ((guide, passed),) = calls
    assert {k: passed[k] for k in EXPECTED_OPTIONS[remedy.name]} == EXPECTED_OPTIONS[remedy.name]
    assert type(guide) is EXPECTED_GUIDES.get(remedy.name, AmortizedGaussian)
    if isinstance(guide, CommittedRateGaussian):
        assert guide.delta == 0.5
    if isinstance(guide, BatchNormGaussian):
        assert guide.gamma.item() == 1.0
        remedy.ready(guide, x)  # its running statistics become the training data's
        raw_means = guide._raw(x)[0]
        assert torch.allclose(guide.batch_norm.running_mean, raw_means.mean(0))


def test_remedies_are_found_by_name_and_an_unknown_one_is_named():
    assert [remedy_named(remedy.name) for remedy in REMEDIES] == list(REMEDIES)
    with pytest.raises(ValueError, match="unknown remedy 'warm'; known: beta = 0.2"):
        remedy_named("warm")
