"""Figures of the collapse experiments, beta sweeps and BDMC sandwiches, as PNG files
(matplotlib, no display).

Each ``plot_*`` function writes one PNG and returns its path; the ``*_figure`` function behind
it returns the open :class:`~matplotlib.figure.Figure` (for a notebook, or a test that reads
the axes back). Every title states the figure's finding, computed from the results it is
given; every error bar is 2 standard errors. An experiment keeps its colour in every figure,
and a pair that ignores its latent is drawn dashed (or its panel shaded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from inference.studies.experiments import REFERENCE_LABELS, ExperimentResult  # noqa: E402
from inference.studies.frontier import RateDistortion  # noqa: E402
from inference.studies.sandwich import SandwichCurve  # noqa: E402

_COLUMNS = 3
_IGNORED_SHADE = "#fbe9e7"  # background of what belongs to a pair that ignores z
_REFERENCE_STYLES = {"ml_gaussian_full": ":", "ml_gaussian_diagonal": "-.", "ml_ppca": (0, (1, 3))}
_RATE_FLOOR = 1e-4  # a log axis cannot show a rate of 0
_REFERENCE_REACH = 0.5  # a reference further than this many curve spans away is written, not drawn
_DODGE = 0.025  # decades between the K positions of neighbouring experiments: bars stay apart
# Where a beta label may go, in points from its marker, in order of preference.
_LABEL_OFFSETS = (
    (5, 3, "left", "bottom"),
    (5, -3, "left", "top"),
    (-5, 3, "right", "bottom"),
    (-5, -3, "right", "top"),
    (0, 6, "center", "bottom"),
    (0, -6, "center", "top"),
)


def plot_training_curves(
    results: Sequence[ExperimentResult], path: Path, *, iw_samples: int | None = None
) -> Path:
    """ELBO and IW_K during training, with the final exact log p(x) and the ML references.

    :param iw_samples: the K of the recorded IW estimate (``Budget.record_iw_samples``), named
        in the legend; None: "IW estimate".
    """
    return _save(training_curves_figure(results, iw_samples=iw_samples), path)


def training_curves_figure(
    results: Sequence[ExperimentResult], *, iw_samples: int | None = None
) -> Figure:
    """One panel per experiment, zoomed on the end of training; a reference too far off to
    share the scale is written at the panel's edge with its value instead of drawn."""
    iw_name = "IW_K" if iw_samples is None else f"IW_{iw_samples}"
    iw_label = "IW estimate" if iw_samples is None else f"{iw_name} (K = {iw_samples} samples)"
    figure, axes = _panels(len(results))
    handles: dict[str, object] = {}
    for ax, result in zip(axes, results):
        steps, history = result.history["step"], result.history
        (handles["ELBO"],) = ax.plot(steps, history["elbo"], color="tab:blue")
        (handles[iw_label],) = ax.plot(steps, history["iw"], color="tab:orange")
        settled = len(steps) // 5
        levels = [*history["elbo"][settled:], *history["iw"][settled:]]
        if result.exact is not None:
            exact_line = ax.axhline(result.exact, color="black", linestyle="--")
            handles["exact log p(x) of the final model"] = exact_line
            levels.append(result.exact)
        for name, value in result.references.items():
            style = _REFERENCE_STYLES[name]
            handles[REFERENCE_LABELS[name]] = ax.axhline(value, color="gray", linestyle=style)
        off_scale = _zoom(ax, levels, result.references)
        if off_scale:
            ax.text(
                0.98,
                0.03,
                "\n".join(off_scale),
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=7,
                color="dimgray",
            )
        _mark_use_of_latent(ax, result)
        ax.set_xlabel("SVI step")
        ax.set_ylabel("nats per data point")
    if any(result.diagnosis.latent_ignored for result in results):
        handles["pair ignores z (final rate below threshold)"] = Patch(color=_IGNORED_SHADE)
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3, fontsize=8)
    figure.suptitle(
        f"ELBO and {iw_name} on the evaluation points during training: {_who_ignores(results)}"
    )
    return figure


def plot_rates(results: Sequence[ExperimentResult], path: Path) -> Path:
    """The rate KL(q(z|x) || p(z)) during training, one line per experiment."""
    return _save(rates_figure(results), path)


def rates_figure(results: Sequence[ExperimentResult]) -> Figure:
    """The rate on a log axis, the band below the collapse threshold shaded."""
    figure, ax = plt.subplots(figsize=(10, 4.8), layout="constrained")
    colors = _experiment_colors(results)
    for result in results:
        rates = [max(rate, _RATE_FLOOR) for rate in result.history["rate"]]
        ax.plot(
            result.history["step"],
            rates,
            "--" if result.diagnosis.latent_ignored else "-",
            color=colors[result.key],
            label=_legend_label(result),
        )
    threshold = results[0].diagnosis.rate_threshold if results else 0.05
    ax.set_yscale("log")
    bottom, top = ax.get_ylim()
    ax.axhspan(
        bottom,
        threshold,
        color=_IGNORED_SHADE,
        zorder=0,
        label=f"latent ignored: rate < {threshold} nats",
    )
    ax.set_ylim(bottom, max(top, 2 * threshold))
    ax.set_xlabel("SVI step")
    ax.set_ylabel("rate KL(q(z|x) || p(z)), nats per point")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    used = [result.diagnosis.rate for result in results if not result.diagnosis.latent_ignored]
    finding = _who_ignores(results)
    if used:
        whose = "of the others " if len(used) < len(results) else ""
        finding += f"; final rates {whose}{min(used):.2g} to {max(used):.2g} nats"
    figure.suptitle(f"How much the encoder uses the latent: {finding}")
    return figure


def plot_iw_against_k(results: Sequence[ExperimentResult], path: Path) -> Path:
    """exact log p(x) - IW_K (2 standard errors) against K, every experiment on one log scale."""
    return _save(iw_against_k_figure(results), path)


def iw_against_k_figure(results: Sequence[ExperimentResult]) -> Figure:
    """The gap exact log p(x) - IW_K, in nats, against K on one log-log axis: a 0.001-nat gap
    and a 1-nat gap read as what they are. A gap within 2 standard errors of 0 cannot be
    placed on a log axis; it is drawn as an open triangle at gap + 2 s.e., a bound it is below.
    Experiments without an exact log p(x), and IW_K above it by more than 2 s.e. (which a
    lower bound should not be), are named in a note. K = 1 is the ELBO in expectation."""
    figure, ax = plt.subplots(figsize=(10, 5.2), layout="constrained")
    colors = _experiment_colors(results)
    measured = [result for result in results if result.exact is not None]
    notes = [
        f"no exact log p(x), not shown: {result.key}" for result in results if result.exact is None
    ]
    for index, result in enumerate(measured):
        shift = 10 ** (_DODGE * (index - (len(measured) - 1) / 2))  # apart from its neighbours
        ks, gaps, errors, bounds, above = [], [], [], [], []
        for row in result.iw_rows:
            gap, two_se = result.exact - row.mean, 2 * _finite(row.stderr)
            if gap > two_se:
                ks.append(row.num_samples * shift)
                gaps.append(gap)
                errors.append(two_se)
            elif gap + two_se > 0:
                bounds.append((row.num_samples * shift, gap + two_se))
            else:
                above.append(str(row.num_samples))
        if above:
            notes.append(f"IW_K above exact by > 2 s.e.: {result.key} at K = {', '.join(above)}")
        if not (gaps or bounds):
            continue
        style = "--" if result.diagnosis.latent_ignored else "-"
        color = colors[result.key]
        ax.plot(*zip(*sorted([*zip(ks, gaps), *bounds])), style, color=color, alpha=0.6)
        ax.errorbar(ks, gaps, yerr=errors, fmt="o", color=color, capsize=2, markersize=5)
        if bounds:
            ax.plot(*zip(*bounds), "v", color=color, markerfacecolor="white", markersize=6)
        ax.plot([], [], style, marker="o", color=color, label=_legend_label(result))
    ax.plot([], [], "o", color="black", label="gap, 2 s.e. bars")
    ax.plot([], [], "v", color="black", markerfacecolor="white", label="within 2 s.e. of 0: below")
    if not any(line.get_xydata().size for line in ax.lines):
        ax.set(xlim=(1, 10), ylim=(1e-3, 1))  # an empty log axis has nothing to scale itself by
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K (importance samples; K = 1 is the ELBO in expectation)")
    ax.set_ylabel("exact log p(x) - IW_K, nats per point")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("\n".join(notes), fontsize=9)
    figure.suptitle(_iw_finding(measured))
    return figure


def plot_rate_distortion(tables: dict[str, RateDistortion], path: Path) -> Path:
    """The rate-distortion plane (Alemi et al., 2018, Fig. 1): D against R per beta, with the
    line R + D = -best ELBO on which every point has the best ELBO of its sweep."""
    return _save(rate_distortion_figure(tables), path)


def rate_distortion_figure(tables: dict[str, RateDistortion]) -> Figure:
    """Each sweep in its colour, every point labelled with its beta (betas whose points would
    print over each other share one label)."""
    figure, ax = plt.subplots(figsize=(7.5, 5.8), layout="constrained")
    points = []
    for (name, table), color in zip(tables.items(), _color_cycle(len(tables))):
        rates = [row.rate for row in table.rows]
        distortions = [row.distortion for row in table.rows]
        ax.plot(rates, distortions, "o-", color=color, label=name)
        points += [(row.rate, row.distortion, row.beta, color) for row in table.rows]
        if table.remedies:
            _remedy_stars(ax, table, "distortion", color, f"{name}: other remedies (β = 1)")
            points += [(row.rate, row.distortion, row.remedy, color) for row in table.remedies]
        span = [0.0, max(rates + [row.rate for row in table.remedies]) * 1.05]
        ax.plot(
            span,
            [-table.best_elbo - r for r in span],
            ":",
            color=color,
            label=f"R + D = {-table.best_elbo:.2f} (best ELBO)",
        )
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)), nats per point")
    ax.set_ylabel("distortion D = -E_q log p(x|z), nats per point")
    ax.legend(fontsize=8, loc="upper right")
    _label_betas(ax, points)
    figure.suptitle(_rate_distortion_finding(tables), fontsize=11)
    return figure


def plot_log_px_against_rate(tables: dict[str, RateDistortion], path: Path) -> Path:
    """log p(x) (IW estimate, 2 s.e.; exact where known) and the ELBO against the rate."""
    return _save(log_px_against_rate_figure(tables), path)


def log_px_against_rate_figure(tables: dict[str, RateDistortion]) -> Figure:
    """Colour says the sweep, the marker the quantity; every IW point labelled with its beta.
    Where a sweep has remedies (stars), a second panel zooms in on them, labelled."""
    with_remedies = {name: t for name, t in tables.items() if t.remedies}
    if with_remedies:
        figure, (ax, side) = plt.subplots(
            1, 2, figsize=(13, 6), width_ratios=(3, 2), layout="constrained"
        )
    else:
        figure, ax = plt.subplots(figsize=(8, 6), layout="constrained")
    points, handles = [], []
    for (name, table), color in zip(tables.items(), _color_cycle(len(tables))):
        rates = [row.rate for row in table.rows]
        ax.errorbar(
            rates,
            [row.iw for row in table.rows],
            yerr=[2 * _finite(row.iw_stderr) for row in table.rows],
            fmt="o-",
            color=color,
            capsize=3,
        )
        ax.plot(rates, [row.elbo for row in table.rows], "s:", color=color)
        exact = [(row.rate, row.exact) for row in table.rows if row.exact is not None]
        if exact:
            ax.plot(*zip(*exact), "x", color=color, markersize=9)
        points += [(row.rate, row.iw, row.beta, color) for row in table.rows]
        if table.remedies:
            _remedy_stars(ax, table, "iw", color)
        handles.append(Line2D([], [], color=color, label=name))
    handles += [
        Line2D([], [], marker="o", color="black", label="IW_K log p(x), 2 s.e."),
        Line2D([], [], marker="s", linestyle=":", color="black", label="ELBO"),
        Line2D([], [], marker="x", linestyle="", color="black", label="exact log p(x)"),
    ]
    if with_remedies:
        handles.append(
            Line2D([], [], marker="*", linestyle="", color="black", label="other remedies (right)")
        )
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)), nats per point")
    ax.set_ylabel("nats per data point")
    _label_betas(ax, points)
    if with_remedies:
        _remedies_panel(side, with_remedies, dict(zip(tables, _color_cycle(len(tables)))))
    figure.suptitle(_log_px_finding(tables), fontsize=10)
    return figure


def _remedy_stars(
    ax: Axes, table: RateDistortion, field: str, color: str, label: str | None = None
) -> None:
    """The remedies of ``table`` as stars: ``field`` of each row against its rate."""
    rates = [row.rate for row in table.remedies]
    values = [getattr(row, field) for row in table.remedies]
    ax.plot(rates, values, "*", color=color, markersize=10, label=label)


def _remedies_panel(ax: Axes, tables: dict[str, RateDistortion], colors: dict[str, str]) -> None:
    """Each remedy's log p(x) (exact where known, else IW_K with 2 s.e.) against its rate,
    labelled, beside the plain ELBO's (beta = 1) as a dashed line."""
    points = []
    for name, table in tables.items():
        color = colors[name]
        plain = next((row for row in table.rows if row.beta == 1.0), None)
        if plain is not None:
            level = plain.exact if plain.exact is not None else plain.iw
            ax.axhline(level, color=color, linestyle="--", linewidth=1)
            points.append((plain.rate, level, "plain ELBO (β = 1)", color))
            ax.plot([plain.rate], [level], "o", color=color)
        for row in table.remedies:
            value = row.exact if row.exact is not None else row.iw
            error = 0.0 if row.exact is not None else 2 * _finite(row.iw_stderr)
            ax.errorbar([row.rate], [value], yerr=[error], fmt="*", color=color, markersize=11)
            points.append((row.rate, value, row.remedy, color))
    ax.set_xlabel("rate R, nats per point")
    ax.set_ylabel("log p(x) (exact where known), nats per point")
    ax.set_title("the other remedies, at β = 1", fontsize=9)
    _label_betas(ax, points)


def plot_sandwich(curve: SandwichCurve, path: Path, label: str) -> Path:
    """Forward (lower) and reverse (upper) AIS against the annealing steps, 2 s.e. bars, and
    the exact log p(x) where known."""
    return _save(sandwich_figure(curve, label), path)


def sandwich_figure(curve: SandwichCurve, label: str) -> Figure:
    """The two bounds with the band between them shaded; ``label`` names the model and data."""
    figure, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    steps = [row.num_steps for row in curve.rows]
    ax.fill_between(
        steps,
        [row.lower for row in curve.rows],
        [row.upper for row in curve.rows],
        color="tab:gray",
        alpha=0.15,
        label="between the bounds",
    )
    for name, values, errors, marker, shift in (
        ("upper: reverse AIS from exact posterior draws", "upper", "upper_stderr", "v-", 1.03),
        ("lower: forward AIS", "lower", "lower_stderr", "^-", 1 / 1.03),
    ):
        ax.errorbar(
            [step * shift for step in steps],
            [getattr(row, values) for row in curve.rows],
            yerr=[2 * _finite(getattr(row, errors)) for row in curve.rows],
            fmt=marker,
            capsize=3,
            label=f"{name}, 2 s.e.",
        )
    if curve.exact is not None:
        ax.axhline(curve.exact, color="black", linestyle=":", label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("annealing steps T")
    ax.set_ylabel("log p(x), nats per point (simulated data)")
    ax.legend(fontsize=8)
    figure.suptitle(f"{_sandwich_finding(curve)}\n{label}", fontsize=10)
    return figure


def _panels(count: int) -> tuple[Figure, list]:
    rows = max(1, math.ceil(count / _COLUMNS))
    figure, axes = plt.subplots(
        rows,
        _COLUMNS,
        figsize=(4.4 * _COLUMNS, 3.5 * rows + 0.8),
        squeeze=False,
        layout="constrained",
    )
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.axis("off")
    return figure, flat[:count]


def _zoom(ax: Axes, levels: list[float], references: dict[str, float]) -> list[str]:
    """Show the end of training: the early, far-off losses would flatten every curve, and so
    would a reference far from them. Returns what the scale leaves out: "↓ name: value"."""
    finite = [level for level in levels if math.isfinite(level)]
    if not finite:
        return []
    low, high = min(finite), max(finite)
    reach = _REFERENCE_REACH * max(high - low, 0.02)
    near = {name: v for name, v in references.items() if low - reach <= v <= high + reach}
    off_scale = [
        f"{'↑' if value > high else '↓'} {REFERENCE_LABELS[name]}: {value:.2f}"
        for name, value in references.items()
        if name not in near
    ]
    low, high = min([low, *near.values()]), max([high, *near.values()])
    margin = max(0.05 * (high - low), 0.02)
    ax.set_ylim(low - margin, high + margin)
    return off_scale


def _mark_use_of_latent(ax: Axes, result: ExperimentResult) -> None:
    """Title the panel with the experiment, its final rate and ELBO gap; shade it if the pair
    ignores z."""
    d = result.diagnosis
    use = "z ignored" if d.latent_ignored else "uses z"
    detail = f"{use}: rate {d.rate:.2g} nats"
    if result.exact is not None:
        detail += f", exact - ELBO {result.exact - result.elbo:.2g}"
    ax.set_title(f"{_title(result)}\n{detail}", fontsize=9)
    if d.latent_ignored:
        ax.set_facecolor(_IGNORED_SHADE)


def _who_ignores(results: Sequence[ExperimentResult]) -> str:
    """Which pairs ignore z at the end of training, in words."""
    ignored = [result.key for result in results if result.diagnosis.latent_ignored]
    if not ignored:
        return "every pair uses z"
    if len(ignored) == len(results):
        return "every pair ignores z"
    rest = len(results) - len(ignored)
    return f"{', '.join(ignored)} ignore z, the other {rest} use it"


def _iw_finding(measured: Sequence[ExperimentResult]) -> str:
    """The largest gap at the smallest and at the largest K, and the largest gap of the pairs
    that ignore z."""
    if not measured:
        return "No experiment has an exact log p(x) to measure IW_K against"

    def largest(position: int, among: Sequence[ExperimentResult]) -> str:
        result = max(among, key=lambda r: r.exact - r.iw_rows[position].mean)
        row = result.iw_rows[position]
        return f"{result.exact - row.mean:.2g} nats at K = {row.num_samples} ({result.key})"

    finding = f"Gap to the exact log p(x): at most {largest(0, measured)}"
    finding += f", {largest(-1, measured)}"
    ignored = [result for result in measured if result.diagnosis.latent_ignored]
    if ignored and len(ignored) < len(measured):
        finding += f"\nwhere z is ignored (dashed), at most {largest(0, ignored)}"
    return finding


def _rate_distortion_finding(tables: dict[str, RateDistortion]) -> str:
    if not tables:
        return "Rate-distortion plane (no sweeps)"
    best = {name: max(t.rows, key=lambda row: row.elbo).beta for name, t in tables.items()}
    buys_rate = all(
        min(t.rows, key=lambda row: row.beta).rate == max(row.rate for row in t.rows)
        for t in tables.values()
    )
    finding = "Rate-distortion plane of the β sweeps" + (
        "; lowering β buys rate" if buys_rate else ""
    )
    if len(set(best.values())) == 1:
        where = "every sweep" if len(best) > 1 else "the sweep"
        return f"{finding}\nbest ELBO -(R + D) at β = {next(iter(best.values())):g} in {where}"
    places = ", ".join(f"β = {beta:g} ({name})" for name, beta in best.items())
    return f"{finding}\nbest ELBO -(R + D) at {places}"


def _log_px_finding(tables: dict[str, RateDistortion]) -> str:
    """Per sweep: where log p(x) (exact where every row has it, else IW_K) peaks, and what it
    has lost at the highest rate."""
    lines = ["What forcing the latent costs in log p(x)"]
    for name, table in tables.items():
        exact = all(row.exact is not None for row in table.rows)
        log_px = {row.beta: row.exact if exact else row.iw for row in table.rows}
        peak = max(table.rows, key=lambda row: log_px[row.beta])
        forced = max(table.rows, key=lambda row: row.rate)
        lost = log_px[peak.beta] - log_px[forced.beta]
        lines.append(
            f"{name}: {'exact' if exact else 'IW_K'} log p(x) peaks at β = {peak.beta:g}; "
            f"{lost:.2f} nats lower at R = {forced.rate:.1f} (β = {forced.beta:g})"
        )
    return "\n".join(lines)


def _sandwich_finding(curve: SandwichCurve) -> str:
    first, last = curve.rows[0], curve.rows[-1]
    finding = f"BDMC sandwich: upper - lower = {last.width:.3f} nats at T = {last.num_steps}"
    if len(curve.rows) > 1:
        finding += f" (from {first.width:.2f} at T = {first.num_steps})"
    if abs(last.width) <= 2 * math.hypot(_finite(last.lower_stderr), _finite(last.upper_stderr)):
        finding += ", closed within 2 s.e."
    return finding


def _label_betas(ax: Axes, points: list[tuple[float, float, float | str, str]]) -> None:
    """Write "β=..." next to each (x, y, beta, colour) point (a remedy's name where a string
    stands for beta), at the first of a few offsets where it covers no other label, no marker
    of any line and not the legend (else where it covers least); points of one colour and
    kind closer than a label's height share one label ("β=1, 2, 4")."""
    figure = ax.figure
    figure.canvas.draw()  # the final layout and limits, in which the labels are placed
    renderer = figure.canvas.get_renderer()
    pixel = figure.dpi / 72  # pixels per typographic point
    display = ax.transData.transform([(x, y) for x, y, _, _ in points])
    groups: list[list[int]] = []  # indices of points that share a label
    for index, (_, _, _, color) in enumerate(points):
        distance, nearest = min(
            (
                (math.dist(display[member], display[index]), group)
                for group in groups
                for member in group
                if points[member][3] == color
                and isinstance(points[member][2], str) == isinstance(points[index][2], str)
            ),
            default=(math.inf, None),
            key=lambda candidate: candidate[0],
        )
        if distance < 9 * pixel:
            nearest.append(index)
        else:
            groups.append([index])
    obstacles = [
        Bbox([[x - half, y - half], [x + half, y + half]])
        for line in ax.lines
        if line.get_marker() not in ("None", "", None)
        for half in [(line.get_markersize() / 2 + 1) * pixel]
        for x, y in ax.transData.transform(line.get_xydata())
    ]
    obstacles += [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() else []
    frame = ax.get_window_extent(renderer)
    for group in groups:
        x, y, _, color = points[group[0]]
        text = _label_text([points[i][2] for i in group])
        placed = []
        for dx, dy, ha, va in _LABEL_OFFSETS:
            label = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=7,
                color=color,
            )
            label.set_in_layout(False)  # placed after the layout: it must not move the axes
            box = label.get_window_extent(renderer)
            covered = sum(_overlap(box, other) for other in obstacles)
            if not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)):
                covered += box.width * box.height  # a label cut by the frame is as bad as hidden
            placed.append((covered, label, box))
            if covered == 0:
                break
        best = min(placed, key=lambda candidate: candidate[0])
        for _, label, _ in placed:
            if label is not best[1]:
                label.remove()
        obstacles.append(best[2])


def _label_text(values: list[float | str]) -> str:
    """ "β=0.5, 1" for betas; the names, one per line, for remedies."""
    names = [value for value in values if isinstance(value, str)]
    if names:
        return "\n".join(names)
    return "β=" + ", ".join(f"{beta:g}" for beta in sorted(float(value) for value in values))


def _overlap(a: Bbox, b: Bbox) -> float:
    """The area two boxes share, in square pixels."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)


def _experiment_colors(results: Sequence[ExperimentResult]) -> dict[str, str]:
    """One colour per experiment, the same in every figure of one run."""
    return {result.key: color for result, color in zip(results, _color_cycle(len(results)))}


def _color_cycle(count: int) -> list[str]:
    """``count`` distinct colours while tab10 (then tab20) has them, repeating after that."""
    palette = matplotlib.colormaps["tab10" if count <= 10 else "tab20"].colors
    return [to_hex(palette[index % len(palette)]) for index in range(count)]


def _legend_label(result: ExperimentResult) -> str:
    return _title(result) + (" (z ignored)" if result.diagnosis.latent_ignored else "")


def _title(result: ExperimentResult) -> str:
    return f"{result.key}: {result.title}"


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path
