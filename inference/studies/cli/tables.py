"""The tables and key/value lines that ``lvm`` prints, in nats per data point."""

from __future__ import annotations


def format_summary(results: list) -> str:
    """One row per experiment, in nats per data point."""
    header = (
        "exp",
        "data",
        "decoder",
        "powerful",
        "ELBO",
        "IW_K",
        "K",
        "exact",
        "rate",
        "active",
        "latent ignored",
    )
    rows = [header]
    for result in results:
        rows.append(
            (
                result.key,
                result.data,
                result.decoder,
                "yes" if result.powerful else "no",
                f"{result.elbo:.3f}",
                f"{result.iw.mean:.3f}" + (" !" if result.iw.khat_unreliable else ""),
                str(result.largest_k),
                "-" if result.exact is None else f"{result.exact:.3f}",
                f"{result.diagnosis.rate:.3f}",
                str(result.diagnosis.active_units),
                "yes" if result.diagnosis.latent_ignored else "no",
            )
        )
    from inference.estimators.bounds import KHAT_THRESHOLD

    footer = "(nats per data point; IW_K and exact on the evaluation points)"
    if any(result.iw.khat_unreliable for result in results):
        footer += (
            f"\n! IW_K's k-hat > {KHAT_THRESHOLD} (PSIS's threshold) on some points: that "
            "estimate and its stderr cannot be trusted"
        )
    return _aligned(rows, footer)


GAPS_TITLE = "Where the ELBO's gap goes: approximation (the family) and amortisation (the encoder)"


def format_gaps(results: list) -> str:
    """Per experiment: log p(x) - ELBO split into the approximation gap (the best diagonal
    Gaussian per point against log p(x)) and the amortisation gap (the encoder against it)."""
    header = ("exp", "reference", "inference gap", "approximation", "amortisation", "(se)")
    rows = [header]
    for result in results:
        gaps = result.gaps
        rows.append(
            (
                result.key,
                gaps.reference,
                f"{gaps.inference_gap.mean:.3f}",
                f"{gaps.approximation_gap.mean:.3f}",
                f"{gaps.amortization_gap.mean:.3f}",
                f"{max(gaps.approximation_gap.stderr, gaps.amortization_gap.stderr):.3f}",
            )
        )
    return _aligned(rows, "(nats per data point, ELBO gaps on the evaluation points)")


def _aligned(rows: list[tuple[str, ...]], footer: str) -> str:
    """Rows as left-aligned columns, a rule under the header, and a footer line."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n" + footer


# The units of the figures `lvm exact` and the diagnosis print, by key; keys not here are
# counts, names or flags.
_NATS = (
    "rate",
    "distortion",
    "elbo",
    "mutual_info",
    "exact",
    "gap",
    "reference_value",
    "rate_threshold",
    "rate_stderr",
    "distortion_stderr",
    "mutual_info_stderr",
    "mutual_info_lower",
    "mutual_info_upper",
    "mutual_info_ceiling",
)
_UNITS = {name: "nats per data point" for name in _NATS} | {
    "latent_dims": "dimensions",
    "active_units": "dimensions with Var_x E_q[z_i] > 0.01",
    "active_units_uncertain": "dimensions within 2 stderr of that threshold",
    "unit_activity": "Var_x E_q[z_i] per dimension",
    "unit_activity_stderr": "Var_x E_q[z_i] per dimension",
}
_GAP_NOTE = (
    "gap: the reference log p(x) minus the ELBO = mean KL(q(z given x) || p(z given x)), "
    "the nats the guide costs the bound"
)


def _print_pairs(pairs: dict) -> None:
    """Key, value and unit per line; a line saying what ``gap`` is, when it is there."""
    width = max(map(len, pairs))
    for key, value in pairs.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        unit = "nats per data point" if key.endswith("_log_px") else _UNITS.get(key, "")
        print(f"{key:<{width}}  {shown}  {unit}".rstrip())
    if pairs.get("gap") is not None:
        print(_GAP_NOTE)
