"""`lvm collapse --quick` end to end: the essay's pipeline, read back from its JSON.

--quick is a smoke test with a budget small enough for the suite (under a minute on 2 cores):
these tests check that every stage runs and what holds at any budget, and the conclusions
that the small budget already shows.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from inference.studies.experiments import QUICK_BUDGET, run_row
from inference.studies.remedies import measure_remedy


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("collapse")
    command = ["collapse", "--quick", "--quiet", "--out", str(out), "--workers", "2"]
    completed = subprocess.run(
        [sys.executable, "-m", "inference.studies.cli", *command], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads((out / "results.json").read_text())
    return out, completed, {row["key"]: row for row in report["experiments"]}


def test_quick_is_labelled_a_smoke_test_in_output_and_json(run):
    out, completed, _ = run
    assert "smoke test (--quick)" in completed.stdout
    assert json.loads((out / "results.json").read_text())["smoke_test"] is True


def test_progress_lines_count_the_rows_and_the_remedies(run):
    """Two workers (the fixture's): a line as each of the 9 rows and 24 remedies ends."""
    _, completed, _ = run
    stderr = completed.stderr
    assert "[lvm collapse] done 1 of 33: " in stderr and "done 33 of 33: " in stderr
    assert "1a, independent Gaussian, diagonal decoder (" in stderr
    for label in ("4b, binarised digits", "1b, aggressive", "4b, IWAE-DReG K=5", "1c, BN-VAE"):
        assert label in stderr, label


def test_a_diagonal_decoder_uses_far_less_rate_on_independent_than_on_correlated_data(run):
    # The full run's 1a ignores z (rate < 0.05); the smoke budget stops before collapse is
    # complete, but already spends almost no rate where the decoder is powerful.
    _, _, rows = run
    assert rows["1a"]["rate"] < 0.2 < 0.1 * rows["1c"]["rate"]


@pytest.mark.parametrize("key", ["1c", "3a"])
def test_a_decoder_that_is_not_powerful_uses_the_latent(run, key):
    _, _, rows = run
    assert not rows[key]["latent_ignored"]
    assert rows[key]["rate"] > 0.5


def test_every_row_satisfies_elbo_below_iw_below_exact(run):
    _, _, rows = run
    for key, row in rows.items():
        iw, stderr = row["iw"]["mean"], row["iw"]["stderr"]
        assert row["elbo"] <= iw + 3 * stderr, key
        if row["exact"] is not None:
            assert iw - 3 * stderr <= row["exact"], key


def test_correlated_data_with_diagonal_decoder_beats_the_collapsed_diagonal_solution(run):
    _, _, rows = run
    row = rows["1c"]
    assert row["elbo"] > row["references"]["ml_gaussian_diagonal"] + 5.0


def test_autoregressive_decoder_is_at_least_as_good_as_the_factorised_one(run):
    _, _, rows = run
    factorised, autoregressive = rows["4a"]["iw"], rows["4b"]["iw"]
    # Independent estimates: the standard error of their difference adds in quadrature.
    stderr = math.hypot(autoregressive["stderr"], factorised["stderr"])
    assert autoregressive["mean"] >= factorised["mean"] - 3 * stderr


def test_summary_table_and_plots_are_written(run):
    out, completed, rows = run
    stdout = completed.stdout
    assert len(rows) == 9
    assert "latent ignored" in stdout and "nats" in stdout
    for name in ("training_curves.png", "rates.png", "iw_against_k.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_histories_record_elbo_rate_and_iw(run):
    _, _, rows = run
    for row in rows.values():
        history = row["history"]
        assert (
            len(history["step"])
            == len(history["elbo"])
            == len(history["rate"])
            == len(history["iw"])
        )
        assert len(history["step"]) >= 5


def _remedies(out):
    return json.loads((out / "results.json").read_text())["remedies"]


def test_remedies_force_the_latent_of_the_powerful_cases_and_price_it(run):
    out, completed, rows = run
    stdout = completed.stdout
    remedies = _remedies(out)
    assert [row["case"] for row in remedies] == ["1b"] * 8 + ["4b"] * 8 + ["1c"] * 8
    assert len({row["remedy"] for row in remedies}) == 8
    for row in remedies:
        if row["case"] != "1c":  # the powerful cases: every remedy buys rate
            assert row["rate_gained"] > 0, row
        if row["remedy"].startswith("delta-VAE"):  # a floor of 0.5 nat in each of 2 dims
            assert row["rate"] >= 1.0 - 1e-6, row
        assert math.isfinite(row["log_px_change"]) and row["log_px_change_stderr"] > 0, row
    assert rows["1c"]["diagnosis"]["active_units"] == 2  # not powerful: z used unforced
    assert "Remedies for collapse" in stdout


def test_workers_give_the_numbers_of_a_run_in_this_process(run):
    """Every run seeds itself: a row and a remedy measured here match the workers' ones."""
    out, _, rows = run
    row = run_row("1b", QUICK_BUDGET, 0)
    assert row.diagnosis.rate == pytest.approx(rows["1b"]["diagnosis"]["rate"], abs=1e-9)
    assert row.exact == pytest.approx(rows["1b"]["exact"], abs=1e-9)
    remedy = measure_remedy("1b", "cyclical KL", QUICK_BUDGET, 0)
    theirs = next(r for r in _remedies(out) if (r["case"], r["remedy"]) == ("1b", "cyclical KL"))
    assert remedy.rate == pytest.approx(theirs["rate"], abs=1e-9)
    assert remedy.measured.exact.double().mean().item() == pytest.approx(theirs["exact"], abs=1e-9)


def test_remedies_are_priced_by_the_exact_log_marginal_with_iw_beside_it(run):
    out, _, rows = run
    for row in _remedies(out):
        assert row["priced_by"] == "exact", row["note"]
        assert row["log_px"] == row["exact"]
        assert row["iw"] <= row["exact"] + 3 * row["iw_stderr"], row
        assert row["iw_gap"] == pytest.approx(row["exact"] - row["iw"], abs=1e-12)
        # The change is exact minus exact: of the means, whatever its standard error says.
        plain = rows[row["case"]]["exact"]
        assert row["log_px_change"] == pytest.approx(row["exact"] - plain, abs=1e-5), row
