"""The remedies for posterior collapse, priced in nats: beta < 1, KL warm-up and free bits.

On a decoder that is powerful for its data the ELBO's optimum ignores the latent. Each remedy
changes the objective to force the latent into use; :func:`price_remedies` trains the powerful
cases of :mod:`inference.experiments` with each one and reports the rate it bought and what
log p(x) did, against the pair the plain ELBO trained, with standard errors.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from inference.bounds import iw_log_marginal
from inference.diagnostics import diagnose
from inference.experiments import (
    CORRELATED_FULL_COVARIANCE,
    DIGITS_AUTOREGRESSIVE,
    Budget,
    ExperimentResult,
    experiment_data,
    train_pair,
)

FREE_BITS = 1.0  # nats per latent dimension
SMALL_BETA = 0.2


@dataclass(frozen=True)
class RemedyResult:
    """A remedy on one powerful case, against the plain ELBO's pair of the same case.

    :ivar rate_gained: rate (nats per point) minus the plain pair's.
    :ivar elbo_change: ELBO minus the plain pair's: what the bound that training maximises
        thinks of the remedy.
    :ivar log_px_change: IW_K estimate of log p(x) minus the plain pair's (negative: lost),
        with ``log_px_change_stderr`` from both estimates' standard errors.
    """

    case: str
    remedy: str
    rate: float
    rate_gained: float
    active_units: int
    elbo: float
    elbo_change: float
    iw: float
    iw_stderr: float
    log_px_change: float
    log_px_change_stderr: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def remedy_options(budget: Budget) -> dict[str, dict[str, float]]:
    """The remedies tried: a small beta, a linear KL warm-up over half the steps (Bowman et
    al., 2016), and free bits (Kingma et al., 2016)."""
    return {
        f"beta = {SMALL_BETA}": {"beta": SMALL_BETA},
        "KL warm-up": {"kl_warmup_steps": budget.steps // 2},
        f"free bits {FREE_BITS:g} nat": {"free_bits": FREE_BITS},
    }


def price_remedies(
    plain: list[ExperimentResult], budget: Budget, seed: int = 0, progress: bool = True
) -> list[RemedyResult]:
    """Every remedy on every powerful case, priced against its row in ``plain``."""
    by_key = {result.key: result for result in plain}
    return [
        _price(setup, name, options, by_key[setup.key], budget, seed, progress)
        for setup in (CORRELATED_FULL_COVARIANCE, DIGITS_AUTOREGRESSIVE)
        for name, options in remedy_options(budget).items()
    ]


def _price(setup, name, options, plain, budget, seed, progress) -> RemedyResult:
    start = time.perf_counter()
    x, x_eval = experiment_data(setup, budget, seed)
    model, guide = train_pair(setup, x, budget, seed, progress, **options)
    diagnosis = diagnose(model, guide, x_eval, with_exact=False, seed=seed)
    iw = iw_log_marginal(model, guide, x_eval, num_samples=plain.largest_k, seed=seed)
    return RemedyResult(
        case=setup.key,
        remedy=name,
        rate=diagnosis.rate,
        rate_gained=diagnosis.rate - plain.diagnosis.rate,
        active_units=diagnosis.active_units,
        elbo=diagnosis.elbo,
        elbo_change=diagnosis.elbo - plain.diagnosis.elbo,
        iw=iw.mean,
        iw_stderr=iw.stderr,
        log_px_change=iw.mean - plain.iw.mean,
        log_px_change_stderr=math.hypot(iw.stderr, plain.iw.stderr),
        seconds=time.perf_counter() - start,
    )


def format_remedies(results: list[RemedyResult]) -> str:
    """One row per case and remedy, in nats per data point."""
    lines = [
        f"{'case':<5}{'remedy':<17}{'rate':>7}{'gained':>9}{'active':>8}{'ELBO':>9}"
        f"{'change':>9}{'IW log p(x)':>13}{'change':>9}{'± stderr':>10}"
    ]
    for row in results:
        lines.append(
            f"{row.case:<5}{row.remedy:<17}{row.rate:>7.3f}{row.rate_gained:>+9.3f}"
            f"{row.active_units:>8}{row.elbo:>9.3f}{row.elbo_change:>+9.3f}"
            f"{row.iw:>13.3f}{row.log_px_change:>+9.3f}"
            f"{row.log_px_change_stderr:>10.4f}"
        )
    lines.append("(nats per data point; changes against the plain ELBO's pair of the same case)")
    return "\n".join(lines)
