"""Figures of the collapse experiments, beta sweeps and BDMC sandwiches, as PNG files
(matplotlib, no display)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from inference.studies.experiments import REFERENCE_LABELS, ExperimentResult  # noqa: E402
from inference.studies.frontier import RateDistortion  # noqa: E402
from inference.studies.sandwich import SandwichCurve  # noqa: E402

_COLUMNS = 3


def plot_training_curves(results: Sequence[ExperimentResult], path: Path) -> Path:
    """ELBO and IW_K during training, with the final exact log p(x) and the ML references."""
    figure, axes = _panels(len(results))
    for ax, result in zip(axes, results):
        steps, history = result.history["step"], result.history
        ax.plot(steps, history["elbo"], label="ELBO", color="tab:blue")
        ax.plot(steps, history["iw"], label="IW estimate", color="tab:orange")
        settled = len(steps) // 5
        levels = list(history["elbo"][settled:]) + list(history["iw"][settled:])
        if result.exact is not None:
            ax.axhline(result.exact, color="black", linestyle="--", label="exact log p(x), final")
            levels.append(result.exact)
        for (name, value), style in zip(result.references.items(), (":", "-.", (0, (1, 3)))):
            ax.axhline(value, color="gray", linestyle=style, label=REFERENCE_LABELS[name])
            levels.append(value)
        _zoom(ax, levels)
        ax.set_title(_title(result), fontsize=9)
        ax.set_xlabel("SVI step")
        ax.set_ylabel("nats per data point")
        ax.legend(fontsize=7, loc="lower right")
    return _save(figure, path, "Bounds during training (evaluation points)")


def plot_rates(results: Sequence[ExperimentResult], path: Path) -> Path:
    """The rate KL(q(z|x) || p(z)) during training, one line per experiment."""
    figure, ax = plt.subplots(figsize=(7.5, 4.5))
    for result in results:
        rates = [max(rate, 1e-4) for rate in result.history["rate"]]
        style = "-" if not result.diagnosis.latent_ignored else "--"
        ax.plot(result.history["step"], rates, style, label=_title(result))
    threshold = results[0].diagnosis.rate_threshold if results else 0.05
    ax.axhline(
        threshold, color="black", linewidth=0.8, label=f"latent ignored below {threshold} nats"
    )
    ax.set_yscale("log")
    ax.set_xlabel("SVI step")
    ax.set_ylabel("rate KL(q(z|x) || p(z)), nats per point")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(figure, path, "How much the encoder uses the latent")


def plot_iw_against_k(results: Sequence[ExperimentResult], path: Path) -> Path:
    """IW_K (mean and 2 standard errors) against K, with the ELBO and the exact log p(x)."""
    figure, axes = _panels(len(results))
    for ax, result in zip(axes, results):
        rows = result.iw_rows
        ks = [row.num_samples for row in rows]
        ax.errorbar(
            ks,
            [row.mean for row in rows],
            yerr=[2 * _finite(row.stderr) for row in rows],
            marker="o",
            capsize=3,
            label="IW_K (2 s.e.)",
        )
        ax.axhline(result.elbo, color="tab:blue", linestyle=":", label="ELBO")
        if result.exact is not None:
            ax.axhline(result.exact, color="black", linestyle="--", label="exact log p(x)")
        ax.set_xscale("log")
        ax.set_title(_title(result), fontsize=9)
        ax.set_xlabel("K (importance samples)")
        ax.set_ylabel("nats per data point")
        ax.legend(fontsize=7, loc="lower right")
    return _save(figure, path, "Importance-weighted estimate against K")


def _panels(count: int):
    rows = max(1, math.ceil(count / _COLUMNS))
    figure, axes = plt.subplots(rows, _COLUMNS, figsize=(4.2 * _COLUMNS, 3.3 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.axis("off")
    return figure, flat[:count]


def _zoom(ax, levels: list[float]) -> None:
    """Show the end of training: the early, far-off losses would flatten every curve."""
    finite = [level for level in levels if math.isfinite(level)]
    low, high = min(finite), max(finite)
    margin = max(0.05 * (high - low), 0.02)
    ax.set_ylim(low - margin, high + margin)


def _title(result: ExperimentResult) -> str:
    return f"{result.key}: {result.title}"


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _save(figure, path: Path, title: str) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_rate_distortion(tables: dict[str, RateDistortion], path: Path) -> Path:
    """The rate-distortion plane (Alemi et al., 2018, Fig. 1): D against R per beta, with the
    line R + D = -best ELBO on which every point has the best ELBO of its sweep."""
    figure, ax = plt.subplots(figsize=(6.5, 5))
    for (name, table), color in zip(
        tables.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ):
        rates = [row.rate for row in table.rows]
        distortions = [row.distortion for row in table.rows]
        ax.plot(rates, distortions, "o-", color=color, label=name)
        for row in table.rows:
            ax.annotate(
                f"β={row.beta:g}",
                (row.rate, row.distortion),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        span = [0.0, max(rates) * 1.05]
        ax.plot(
            span,
            [-table.best_elbo - r for r in span],
            ":",
            color=color,
            label=f"R + D = {-table.best_elbo:.2f} (best ELBO)",
        )
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)), nats per point")
    ax.set_ylabel("distortion D = -E_q log p(x|z), nats per point")
    ax.legend(fontsize=7)
    return _save(figure, path, "Rate-distortion plane of a beta sweep")


def plot_log_px_against_rate(tables: dict[str, RateDistortion], path: Path) -> Path:
    """log p(x) (IW estimate, 2 s.e.; exact where known) and the ELBO against the rate."""
    figure, ax = plt.subplots(figsize=(6.5, 5))
    for (name, table), color in zip(
        tables.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ):
        rates = [row.rate for row in table.rows]
        ax.errorbar(
            rates,
            [row.iw for row in table.rows],
            yerr=[2 * _finite(row.iw_stderr) for row in table.rows],
            fmt="o-",
            color=color,
            capsize=3,
            label=f"{name}: IW_K log p(x)",
        )
        ax.plot(rates, [row.elbo for row in table.rows], "s:", color=color, label=f"{name}: ELBO")
        exact = [(row.rate, row.exact) for row in table.rows if row.exact is not None]
        if exact:
            ax.plot(*zip(*exact), "x", color=color, markersize=9, label=f"{name}: exact log p(x)")
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)), nats per point")
    ax.set_ylabel("nats per data point")
    ax.legend(fontsize=7)
    return _save(figure, path, "What forcing the latent costs in log p(x)")


def plot_sandwich(curve: SandwichCurve, path: Path, label: str) -> Path:
    """Forward (lower) and reverse (upper) AIS against the annealing steps, 2 s.e. bars, and
    the exact log p(x) where known."""
    figure, ax = plt.subplots(figsize=(6.5, 4.5))
    steps = [row.num_steps for row in curve.rows]
    for name, values, errors, marker in (
        ("upper: reverse AIS from exact posterior draws", "upper", "upper_stderr", "v-"),
        ("lower: forward AIS", "lower", "lower_stderr", "^-"),
    ):
        ax.errorbar(
            steps,
            [getattr(row, values) for row in curve.rows],
            yerr=[2 * _finite(getattr(row, errors)) for row in curve.rows],
            fmt=marker,
            capsize=3,
            label=name,
        )
    if curve.exact is not None:
        ax.axhline(curve.exact, color="black", linestyle=":", label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("annealing steps T")
    ax.set_ylabel("log p(x), nats per point (simulated data)")
    ax.legend(fontsize=8)
    last = curve.rows[-1]
    return _save(
        figure, path, f"BDMC sandwich, {label}: width {last.width:.3f} nats at T={last.num_steps}"
    )
