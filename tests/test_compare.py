from __future__ import annotations

import json
import math

import pytest
from _pairs import linear_gaussian

from guides import AmortizedGaussian, ExactPosterior, PriorGuide
from inference import compare
from lvm_models import GaussianVAE


@pytest.fixture(scope="module")
def linear():
    model = linear_gaussian(data_dim=4, latent_dim=2, noise=0.5)
    return model, model.sample(20)


def test_every_row_is_exact_for_the_exact_posterior(linear):
    model, x = linear
    table = compare(model, ExactPosterior(model), x, num_samples=(1, 10), seed=0)
    exact = table.row("exact").mean
    assert exact == pytest.approx(model.log_marginal(x).mean().item(), abs=1e-12)
    for row in table.rows:
        assert row.mean == pytest.approx(exact, abs=1e-10)


def test_rows_are_ordered_elbo_below_iw_below_exact(linear):
    model, x = linear
    table = compare(model, PriorGuide(model), x, num_samples=(1, 10, 100), seed=0)
    means = [table.row("elbo").mean] + [table.row("iw", k).mean for k in (10, 100)]
    stderrs = [table.row("elbo").stderr] + [table.row("iw", k).stderr for k in (10, 100)]
    for (low, low_se), (high, high_se) in zip(zip(means, stderrs), zip(means[1:], stderrs[1:])):
        assert high - low > 3 * math.hypot(low_se, high_se)
    assert means[-1] < table.row("exact").mean + 3 * stderrs[-1]


def test_iw_at_k1_and_elbo_agree_within_their_standard_errors(linear):
    model, x = linear
    table = compare(model, PriorGuide(model), x, num_samples=(1, 300), seed=1)
    elbo_row, iw_row = table.row("elbo"), table.row("iw", 1)
    assert abs(elbo_row.mean - iw_row.mean) < 3 * math.hypot(elbo_row.stderr, iw_row.stderr)


def test_table_prints_and_serialises(linear):
    model, x = linear
    table = compare(model, PriorGuide(model), x, num_samples=(1, 10), seed=0)
    text = str(table)
    assert "exact" in text and "nats" in text
    assert json.loads(table.to_json()) == table.to_dict()
    assert [row["estimator"] for row in table.to_dict()["rows"]] == ["elbo", "iw", "iw", "exact"]


def test_a_model_without_exact_value_says_why_and_has_no_exact_row():
    model = GaussianVAE(5, 3, hidden=(8,))
    x = model.sample(10)
    table = compare(model, AmortizedGaussian(5, 3, hidden=(8,)), x, num_samples=(1, 5), seed=0)
    assert "dimension 3 > 2" in table.exact_note
    with pytest.raises(KeyError):
        table.row("exact")


def test_same_seed_gives_the_same_table(linear):
    model, x = linear
    first = compare(model, PriorGuide(model), x, num_samples=(1, 10), seed=3)
    second = compare(model, PriorGuide(model), x, num_samples=(1, 10), seed=3)
    assert first.to_dict() == second.to_dict()


def test_rows_say_what_k_and_the_draws_are(linear):
    model, x = linear
    table = compare(model, PriorGuide(model), x, num_samples=(1, 10), particles_per_row=100)
    rows = table.to_dict()["rows"]
    assert [(row["num_samples"], row["draws"]) for row in rows[:3]] == [
        (100, 100),
        (1, 100),
        (10, 100),
    ]
    assert rows[-1]["draws"] is None  # the exact row draws nothing
    elbo_line = str(table).splitlines()[1]
    assert elbo_line.split()[:3] == ["elbo", "-", "100"]  # the ELBO has draws, not a K
    assert "K: weights averaged inside the log" in str(table) and "ESS: " in str(table)


def test_rows_whose_khat_exceeds_the_psis_threshold_are_flagged():
    # A prior proposal for a sharp posterior: heavy-tailed weights, k-hat well above 0.7.
    model = linear_gaussian(data_dim=8, latent_dim=2, noise=0.1)
    x = model.sample(10)
    table = compare(model, PriorGuide(model), x, num_samples=(100,), seed=0)
    flagged = table.row("iw", 100)
    assert flagged.max_khat > 0.7 and flagged.khat_unreliable
    assert table.to_dict()["rows"][1]["khat_unreliable"] is True
    assert table.to_dict()["khat_threshold"] == 0.7
    text = str(table)
    assert f"{flagged.max_khat:.2f} !" in text
    assert "k-hat > 0.7 (PSIS's threshold)" in text and "cannot be trusted" in text


def test_a_trustworthy_table_has_no_khat_flag(linear):
    model, x = linear
    table = compare(model, ExactPosterior(model), x, num_samples=(1, 10), seed=0)
    assert not any(row.khat_unreliable for row in table.rows)
    assert "cannot be trusted" not in str(table)
