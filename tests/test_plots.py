"""The study figures: each writes a PNG without warnings, puts every experiment's IW gap on one
log scale, keeps far references from squashing the curves, and prints no label over another."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import pytest

from inference.estimators.compare import Comparison, ComparisonRow
from inference.estimators.diagnostics import Diagnosis
from inference.studies import plots
from inference.studies.experiments import ExperimentResult
from inference.studies.frontier import FrontierRow, RateDistortion
from inference.studies.sandwich import SandwichCurve, SandwichRow

KS = (1, 10, 100)


def experiment(
    key: str,
    gaps: tuple[float, ...] = (0.5, 0.1, 0.02),
    *,
    stderr: float = 1e-4,
    exact: float | None = -5.0,
    rate: float = 2.0,
    references: dict[str, float] | None = None,
) -> ExperimentResult:
    """A trained pair as the collapse study reports it: IW_K at exact - gaps[i] for K = KS."""
    truth = -5.0 if exact is None else exact
    rows = [ComparisonRow("elbo", 1000, truth - gaps[0], stderr)]
    rows += [ComparisonRow("iw", k, truth - gap, stderr) for k, gap in zip(KS, gaps)]
    if exact is not None:
        rows.append(ComparisonRow("exact", None, exact, 0.0))
    diagnosis = Diagnosis(
        rate=rate,
        distortion=-truth - rate,
        elbo=truth - gaps[0],
        active_units=int(rate > 0.05),
        latent_dims=2,
        mutual_info=rate,
        exact=exact,
        gap=None if exact is None else gaps[0],
        latent_ignored=rate < 0.05,
        rate_threshold=0.05,
        rate_is_analytic=True,
    )
    steps = [100, 200, 300, 400, 500]
    history = {
        "step": steps,
        "elbo": [truth - gaps[0] - 2.0 / step for step in steps],
        "iw": [truth - gaps[-1] - 1.0 / step for step in steps],
        "rate": [rate * (1 + 10 / step) for step in steps],
    }
    return ExperimentResult(
        key,
        f"experiment {key}",
        "synthetic",
        "none",
        rate < 0.05,
        Comparison(tuple(rows), 64),
        diagnosis,
        history,
        references or {},
        0.0,
    )


@pytest.fixture
def results() -> list[ExperimentResult]:
    return [
        experiment("1a", (1e-3, 4e-4, 2e-4), rate=1e-3),
        experiment("1b", (1.2, 0.5, 0.2), references={"ml_gaussian_diagonal": -100.0}),
        experiment("2", (0.05, 0.01, 0.003), references={"ml_gaussian_full": -5.08}),
    ]


def sweep(rates: list[float], betas: list[float]) -> RateDistortion:
    rows = tuple(
        FrontierRow(beta, rate, 5.0 - 0.3 * rate, -5.0 - rate / 10, -5.0, 0.01, -4.9, 2)
        for beta, rate in zip(betas, rates)
    )
    return RateDistortion(rows, 64, 100)


@pytest.fixture
def tables() -> dict[str, RateDistortion]:
    """Two sweeps whose collapsed betas pile up at rate 0, as the VAE sweep's do."""
    betas = [0.1, 0.5, 1.0, 2.0, 4.0]
    return {
        "linear": sweep([6.0, 3.0, 2.0, 1.5, 1.0], betas),
        "VAE": sweep([5.0, 2.1, 0.01, 0.0, 0.02], betas),
    }


@pytest.fixture
def curve() -> SandwichCurve:
    rows = (
        SandwichRow(10, -23.7, 0.1, -22.7, 0.08, 1.0, 0.5),
        SandwichRow(100, -23.45, 0.01, -23.40, 0.01, 0.05, 2.0),
    )
    return SandwichCurve(rows, 32, 16, -23.42)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "draw",
    [
        lambda r, t, c, path: plots.plot_training_curves(r, path, iw_samples=100),
        lambda r, t, c, path: plots.plot_rates(r, path),
        lambda r, t, c, path: plots.plot_iw_against_k(r, path),
        lambda r, t, c, path: plots.plot_rate_distortion(t, path),
        lambda r, t, c, path: plots.plot_log_px_against_rate(t, path),
        lambda r, t, c, path: plots.plot_sandwich(c, path, "synthetic model"),
    ],
    ids=["training_curves", "rates", "iw_against_k", "rate_distortion", "log_px", "sandwich"],
)
def test_every_plot_writes_a_png_without_warnings(draw, results, tables, curve, tmp_path):
    path = draw(results, tables, curve, tmp_path / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def plotted_points(ax, marker: str) -> set[tuple[float, float]]:
    """The (x, y) of every marker of this kind on the axes, y rounded to 6 significant digits."""
    return {
        (x, float(f"{y:.6g}"))
        for line in ax.lines
        if line.get_marker() == marker
        for x, y in line.get_xydata()
    }


def test_iw_gaps_of_every_experiment_share_one_log_axis(results):
    figure = plots.iw_against_k_figure(results)
    (ax,) = figure.axes
    gaps = {y for _, y in plotted_points(ax, "o")}
    assert ax.get_yscale() == "log"
    assert {1e-3, 1.2, 0.05} <= gaps  # the 1-nat and the 0.001-nat gap on one scale
    plt.close(figure)


def test_iw_gap_within_two_standard_errors_is_drawn_as_the_bound_it_is_below():
    unresolved = experiment("3", (0.5, 0.1, 1e-4), stderr=1e-3)
    figure = plots.iw_against_k_figure([unresolved])
    bounds = sorted(y for _, y in plotted_points(figure.axes[0], "v"))
    assert bounds == pytest.approx([1e-4 + 2e-3])
    plt.close(figure)


def test_experiment_without_exact_log_px_is_named_not_drawn(results):
    figure = plots.iw_against_k_figure([*results, experiment("4b", exact=None)])
    (ax,) = figure.axes
    assert "4b" in ax.get_title()
    assert not any(text.get_text().startswith("4b") for text in ax.get_legend().get_texts())
    plt.close(figure)


def test_far_reference_is_written_at_the_panel_edge_instead_of_squashing_the_curves(results):
    figure = plots.training_curves_figure(results)
    ax = figure.axes[1]  # 1b, whose diagonal-Gaussian reference lies 95 nats below its curves
    low, _ = ax.get_ylim()
    assert low > -10.0
    assert any("-100.00" in text.get_text() for text in ax.texts)
    plt.close(figure)


def test_near_reference_stays_on_the_scale(results):
    figure = plots.training_curves_figure(results)
    low, _ = figure.axes[2].get_ylim()  # experiment 2: its reference lies just below the curves
    assert low < -5.08
    plt.close(figure)


def test_training_curves_legend_names_the_k_of_the_iw_estimate(results):
    figure = plots.training_curves_figure(results, iw_samples=100)
    (legend,) = figure.legends
    assert "IW_100 (K = 100 samples)" in [text.get_text() for text in legend.get_texts()]
    plt.close(figure)


def test_panels_of_pairs_that_ignore_z_are_titled_and_shaded(results):
    figure = plots.training_curves_figure(results)
    ignored, used = figure.axes[0], figure.axes[1]
    assert "z ignored" in ignored.get_title() and "uses z" in used.get_title()
    assert ignored.get_facecolor() != used.get_facecolor()
    plt.close(figure)


def beta_labels(figure) -> list:
    (ax,) = figure.axes
    return [text for text in ax.texts if text.get_text().startswith("β=")]


@pytest.mark.parametrize("build", [plots.rate_distortion_figure, plots.log_px_against_rate_figure])
def test_beta_labels_do_not_overlap(build, tables):
    figure = build(tables)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in beta_labels(figure)]
    assert len(boxes) >= 8
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    plt.close(figure)


@pytest.mark.parametrize("build", [plots.rate_distortion_figure, plots.log_px_against_rate_figure])
def test_every_beta_is_labelled_once_per_sweep(build, tables):
    figure = build(tables)
    betas = sorted(
        beta
        for label in beta_labels(figure)
        for beta in label.get_text().removeprefix("β=").split(", ")
    )
    assert betas == sorted(["0.1", "0.5", "1", "2", "4"] * 2)
    plt.close(figure)


def test_betas_whose_points_coincide_share_one_label(tables):
    figure = plots.rate_distortion_figure(tables)
    texts = [label.get_text() for label in beta_labels(figure)]
    assert "β=1, 2, 4" in texts  # the VAE sweep's three collapsed points, 0.02 nats apart
    plt.close(figure)


def test_rates_title_names_the_pairs_that_ignore_z(results):
    figure = plots.rates_figure(results)
    assert "1a ignore z" in figure.get_suptitle()
    plt.close(figure)


def test_iw_title_states_the_largest_gap(results):
    figure = plots.iw_against_k_figure(results)
    assert "1.2 nats at K = 1 (1b)" in figure.get_suptitle()
    plt.close(figure)


def test_log_px_title_states_where_it_peaks_and_what_the_highest_rate_costs():
    rows = tuple(
        FrontierRow(beta, rate, 1.0, -5.0, -6.0, 0.01, exact, 1)
        for beta, rate, exact in [(0.1, 8.0, -7.5), (1.0, 2.0, -5.0), (4.0, 0.5, -5.5)]
    )
    figure = plots.log_px_against_rate_figure({"sweep": RateDistortion(rows, 64, 100)})
    assert "peaks at β = 1; 2.50 nats lower at R = 8.0 (β = 0.1)" in figure.get_suptitle()
    plt.close(figure)


def test_sandwich_title_states_the_final_width(curve):
    figure = plots.sandwich_figure(curve, "synthetic model")
    assert "0.050 nats at T = 100 (from 1.00 at T = 10)" in figure.get_suptitle()
    plt.close(figure)


def test_remedies_get_a_panel_of_their_own_with_every_name_and_the_plain_level():
    rows = tuple(
        FrontierRow(beta, rate, 1.0, -5.0, -6.0, 0.01, exact, 1)
        for beta, rate, exact in [(0.1, 8.0, -7.5), (1.0, 0.2, -5.0), (4.0, 0.1, -5.5)]
    )
    remedies = tuple(
        FrontierRow(1.0, rate, 1.0, -5.1, -5.05, 0.01, exact, 2, remedy=name)
        for name, rate, exact in [("KL warm-up", 1.0, -5.02), ("aggressive", 1.5, -5.04)]
    )
    table = RateDistortion(rows, 64, 100, remedies)
    figure = plots.log_px_against_rate_figure({"sweep": table})
    main, side = figure.axes
    labels = {text.get_text() for text in side.texts}
    assert {"KL warm-up", "aggressive", "plain ELBO (β = 1)"} <= labels
    assert any(line.get_ydata()[0] == -5.0 for line in side.lines if line.get_linestyle() == "--")
    plt.close(figure)
    figure = plots.rate_distortion_figure({"sweep": table})
    assert {"KL warm-up", "aggressive"} <= {text.get_text() for text in figure.axes[0].texts}
    plt.close(figure)
