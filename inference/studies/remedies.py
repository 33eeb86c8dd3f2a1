"""The remedies for posterior collapse, priced in nats: beta < 1, KL warm-up, cyclical KL
annealing, free bits, aggressive encoder training, a committed rate (delta-VAE), batch-normalised
means (BN-VAE) and the importance-weighted bound with DReG gradients.

On a decoder that is powerful for its data the ELBO's optimum ignores the latent. Each remedy
changes the objective to force the latent into use; :func:`price_remedies` trains the powerful
cases of :mod:`inference.studies.experiments` with each one and reports the rate it bought, what the
ELBO thinks of it and what log p(x) did, against the pair the plain ELBO trained.

log p(x) is priced by the exact value (:func:`~inference.exact_log_marginal`; the latents are
2-D, within reach of its certified quadrature), not by an IW_K bound: IW_K's gap to log p(x)
differs from one trained pair to the next, so a change in IW_K mixes the change in likelihood
with the change in the bound's tightness. IW_K stays beside the exact value, with its gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from guides import BatchNormGaussian, CommittedRateGaussian
from inference._programs import checked_inputs
from inference._validate import check_per_point
from inference.estimators.bounds import ImportanceEstimate, iw_log_marginal
from inference.estimators.diagnostics import diagnose
from inference.studies.experiments import (
    CORRELATED_DIAGONAL,
    CORRELATED_FULL_COVARIANCE,
    DIGITS_AUTOREGRESSIVE,
    Budget,
    ExperimentResult,
    collapse_setups,
    exact_or_reason,
    experiment_data,
    run_collapse,
    run_row,
    setup_of,
    train_pair,
)
from inference.studies.pool import Job, run_jobs
from inference.training.schedules import CyclicalAnnealing

FREE_BITS = 1.0  # nats per latent dimension
SMALL_BETA = 0.2
CYCLES, CYCLE_RATIO = 4, 0.5  # the reference's defaults (Fu et al., 2019)
COMMITTED_RATE = 0.5  # delta-VAE: nats per latent dimension
BATCH_NORM_GAMMA = 1.0  # BN-VAE: an expected KL of at least gamma^2 / 2 nats per dimension
IWAE_PARTICLES = 5
# The two powerful cases, and one that is not: there the latent is used without a remedy.
REMEDY_CASES = (CORRELATED_FULL_COVARIANCE, DIGITS_AUTOREGRESSIVE, CORRELATED_DIAGONAL)


@dataclass(frozen=True)
class LogPxChange:
    """The change in log p(x) from a baseline pair to a trained pair on the same points (nats).

    :ivar priced_by: ``"exact"``: both models' certified exact log p(x); ``"iw"``: IW_K of both
        pairs, where the oracle cannot certify one of the models (``note`` says why).
    :ivar per_point: (N,) the pair's log p(x) minus the baseline's, point by point.
    :ivar mean: their average, the change in mean log p(x) over the points.
    :ivar stderr: the paired standard error over points, sd(per_point) / sqrt(N): the points
        are a sample of the data. The exact values are right to about 1e-6 nats; priced by IW_K
        the spread includes its Monte-Carlo noise.
    :ivar log_px: the pair's mean log p(x), priced as ``priced_by`` says.
    :ivar exact: the pair's mean exact log p(x); None where the oracle has none.
    :ivar iw: the pair's :class:`~inference.ImportanceEstimate` IW_K.
    :ivar iw_gap: exact minus IW_K means, what the bound misses; None without an exact value.
    :ivar note: why the price fell back to IW_K; "" when priced by the exact value.
    """

    priced_by: str
    per_point: torch.Tensor
    mean: float
    stderr: float
    log_px: float
    exact: float | None
    iw: ImportanceEstimate
    iw_gap: float | None
    note: str


@dataclass(frozen=True)
class Measured:
    """A pair's log p(x) at points x: the exact values (N,) or None and why there are none
    (``note``), and its IW_K."""

    x: torch.Tensor
    exact: torch.Tensor | None
    note: str
    iw: ImportanceEstimate


def measure_log_px(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, seed: int | None
) -> Measured:
    """The exact log p(x) where the oracle certifies it, and IW_K, at the points x."""
    exact, note = exact_or_reason(model, x)
    iw = iw_log_marginal(model, guide, x, num_samples=num_samples, seed=seed)
    return Measured(x, exact, note, iw)


def log_px_change(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    baseline: tuple[Callable, Callable],
    num_samples: int = 1000,
    baseline_exact: torch.Tensor | None = None,
    seed: int | None = None,
) -> LogPxChange:
    """mean_n [log p(x_n) - log p_0(x_n)] over the points x (N, D), p the model's marginal and
    p_0 the baseline model's, with the paired standard error sd_n / sqrt(N) of the differences.

    Priced by :func:`~inference.exact_log_marginal` of both models where it certifies both;
    otherwise by IW_K of both pairs (K = ``num_samples``, the same seed), labelled ``"iw"``. The
    pair's IW_K (:func:`~inference.iw_log_marginal`) is reported beside the exact value either
    way, with its gap to it.

    :param baseline: the (model, guide) pair the change is measured from.
    :param baseline_exact: the baseline model's exact log p(x) at x (N,), if already computed.
    :returns: a :class:`LogPxChange` in nats.
    """
    if not (isinstance(baseline, tuple) and len(baseline) == 2):
        raise TypeError(f"baseline must be a (model, guide) tuple; got {type(baseline).__name__}")
    num_data = checked_inputs(x).num_data
    if num_data < 2:
        raise ValueError(
            f"x must hold at least 2 points for a paired standard error; got {num_data}"
        )
    if baseline_exact is not None:
        check_per_point("baseline_exact", baseline_exact, num_data)
    measured = measure_log_px(model, guide, x, num_samples, seed)
    return change_from(measured, baseline=baseline, baseline_exact=baseline_exact, seed=seed)


def change_from(
    measured: Measured,
    *,
    baseline: tuple[Callable, Callable],
    baseline_exact: torch.Tensor | None,
    seed: int | None,
) -> LogPxChange:
    """:func:`log_px_change` of a pair already measured (:func:`measure_log_px`)."""
    x, exact, note, iw = measured.x, measured.exact, measured.note, measured.iw
    if exact is not None and baseline_exact is None:
        baseline_exact, baseline_note = exact_or_reason(baseline[0], x)
        note = f"baseline: {baseline_note}" if baseline_exact is None else ""
    if exact is not None and baseline_exact is not None:
        priced_by, values, baseline_values = "exact", exact, baseline_exact
    else:
        baseline_iw = iw_log_marginal(*baseline, x, num_samples=iw.num_samples, seed=seed)
        priced_by, values, baseline_values = "iw", iw.per_point, baseline_iw.per_point
    difference = values.double() - baseline_values.double()  # (N,)
    exact_mean = None if exact is None else exact.double().mean().item()
    return LogPxChange(
        priced_by=priced_by,
        per_point=difference,
        mean=difference.mean().item(),
        stderr=(difference.std() / math.sqrt(len(difference))).item(),
        log_px=values.double().mean().item(),
        exact=exact_mean,
        iw=iw,
        iw_gap=None if exact_mean is None else exact_mean - iw.mean,
        note=note,
    )


@dataclass(frozen=True)
class RemedyResult:
    """A remedy on one powerful case, against the plain ELBO's pair of the same case (nats per
    point on the case's evaluation points).

    :ivar rate_gained: rate minus the plain pair's.
    :ivar elbo_change: ELBO minus the plain pair's: what the bound that training maximises
        thinks of the remedy.
    :ivar priced_by: ``"exact"`` (certified exact log p(x)) or ``"iw"`` (IW_K, the fallback
        where the oracle certifies no value; ``note`` says why).
    :ivar log_px: mean log p(x), priced as ``priced_by`` says.
    :ivar exact: mean exact log p(x); None where the oracle has none.
    :ivar iw, iw_stderr, iw_num_samples: IW_K beside it, its Monte-Carlo standard error, K.
    :ivar iw_gap: exact minus IW_K, the bound's slack (None without an exact value).
    :ivar log_px_change: log p(x) minus the plain pair's, priced the same way for both
        (negative: lost), with ``log_px_change_stderr`` the paired standard error over points.
    """

    case: str
    remedy: str
    rate: float
    rate_gained: float
    active_units: int
    elbo: float
    elbo_change: float
    priced_by: str
    log_px: float
    exact: float | None
    iw: float
    iw_stderr: float
    iw_num_samples: int
    iw_gap: float | None
    log_px_change: float
    log_px_change_stderr: float
    note: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Remedy:
    """A remedy as lvm collapse and lvm frontier train it: the options it gives
    :func:`~inference.fit` (``fit_options(steps)``, steps the run's), or the encoder family
    it trains in place of :class:`~guides.AmortizedGaussian`
    (``guide_family(data_dim, latent_dim, hidden=...)``), or both; ``after_training(guide,
    x)``, where given, readies the trained guide for evaluation on the training data x."""

    name: str
    fit_options: Callable[[int], dict[str, object]] = lambda steps: {}
    guide_family: Callable[..., torch.nn.Module] | None = None
    after_training: Callable[[torch.nn.Module, torch.Tensor], None] | None = None

    def ready(self, guide: torch.nn.Module, x: torch.Tensor) -> None:
        """``after_training(guide, x)`` where the remedy has one."""
        if self.after_training is not None:
            self.after_training(guide, x)


def _committed_rate(data_dim: int, latent_dim: int, hidden: tuple[int, ...]) -> torch.nn.Module:
    return CommittedRateGaussian(data_dim, latent_dim, delta=COMMITTED_RATE, hidden=hidden)


def _batch_normalised(data_dim: int, latent_dim: int, hidden: tuple[int, ...]) -> torch.nn.Module:
    return BatchNormGaussian(data_dim, latent_dim, gamma=BATCH_NORM_GAMMA, hidden=hidden)


def _calibrated(guide: torch.nn.Module, x: torch.Tensor) -> None:
    """BN's running statistics set to the training data's, so that the evaluation-mode guide
    holds the rate floor the training-mode one did (they lag behind as moving averages)."""
    guide.calibrate(x)


REMEDIES = (
    Remedy(f"beta = {SMALL_BETA}", lambda steps: {"beta": SMALL_BETA}),
    Remedy("KL warm-up", lambda steps: {"kl_warmup_steps": steps // 2}),
    Remedy(
        "cyclical KL",
        lambda steps: {"kl_schedule": CyclicalAnnealing(cycles=CYCLES, ratio=CYCLE_RATIO)},
    ),
    Remedy(f"free bits {FREE_BITS:g} nat", lambda steps: {"free_bits": FREE_BITS}),
    Remedy("aggressive", lambda steps: {"aggressive": True}),
    Remedy(f"delta-VAE {COMMITTED_RATE:g} nat", guide_family=_committed_rate),
    Remedy(
        f"BN-VAE gamma {BATCH_NORM_GAMMA:g}",
        guide_family=_batch_normalised,
        after_training=_calibrated,
    ),
    Remedy(
        f"IWAE-DReG K={IWAE_PARTICLES}",
        lambda steps: {"objective": "iwae", "num_particles": IWAE_PARTICLES, "gradient": "dreg"},
    ),
)


def remedy_named(name: str) -> Remedy:
    """The remedy of :data:`REMEDIES` called ``name``; a ValueError naming them otherwise."""
    for remedy in REMEDIES:
        if remedy.name == name:
            return remedy
    raise ValueError(f"unknown remedy {name!r}; known: {', '.join(r.name for r in REMEDIES)}")


def remedy_jobs(budget: Budget, seed: int) -> list[Job]:
    """Every remedy on every case of :data:`REMEDY_CASES`, as jobs of :func:`measure_remedy`."""
    return [
        Job(f"{setup.key}, {remedy.name}", measure_remedy, (setup.key, remedy.name, budget, seed))
        for setup in REMEDY_CASES
        for remedy in REMEDIES
    ]


def price_remedies(
    plain: list[ExperimentResult],
    budget: Budget,
    seed: int = 0,
    progress: bool = True,
    announce: Callable[[str], object] | None = None,
    measured: list[MeasuredRemedy] | None = None,
) -> list[RemedyResult]:
    """Every remedy on every case of :data:`REMEDY_CASES`, priced against its row in
    ``plain`` (which must hold its trained pair, as
    :func:`~inference.studies.experiments.run_collapse` leaves it).

    :param progress: a progress bar per remedy, labelled with the case and the remedy.
    :param announce: called with a line before each remedy is trained (``"remedy 2 of 24:
        1b, KL warm-up"``), e.g. ``print``; None: silent.
    :param measured: the remedies already trained and measured (:func:`remedy_jobs`, run
        elsewhere, e.g. in worker processes), in that order; None trains them here.
    """
    by_key = {result.key: result for result in plain}
    for setup in REMEDY_CASES:
        if setup.key not in by_key or by_key[setup.key].model is None:
            raise ValueError(
                f"plain must hold case {setup.key}'s trained pair (as run_collapse returns it); "
                f"got cases {sorted(key for key, row in by_key.items() if row.model is not None)}"
            )
    jobs = remedy_jobs(budget, seed)
    if measured is None:
        measured = []
        for index, job in enumerate(jobs):
            if announce is not None:
                announce(f"remedy {index + 1} of {len(jobs)}: {job.label}")
            bar = job.label if progress else False
            measured.append(measure_remedy(*job.arguments, progress=bar))
    return [_priced(one, by_key[one.case], seed) for one in measured]


def collapse_study(
    budget: Budget,
    seed: int = 0,
    progress: bool = True,
    announce: Callable[[str], object] | None = None,
    workers: int = 1,
    threads: int = 1,
) -> tuple[list[ExperimentResult], list[RemedyResult]]:
    """The rows of :func:`~inference.studies.experiments.run_collapse` and the remedies of
    :func:`price_remedies`: here, in order, with ``workers`` 1; otherwise every row and remedy
    as a job of :func:`~inference.studies.pool.run_jobs` in ``workers`` processes of
    ``threads`` threads each, with no progress bars. Every run seeds itself, so the numbers
    are the same either way."""
    if workers <= 1:
        rows = run_collapse(budget, seed, progress, announce)
        return rows, price_remedies(rows, budget, seed, progress, announce)
    row_jobs = [Job(setup.label, run_row, (setup.key, budget, seed)) for setup in collapse_setups()]
    done = run_jobs([*row_jobs, *remedy_jobs(budget, seed)], workers, threads, announce)
    rows, measured = done[: len(row_jobs)], done[len(row_jobs) :]
    return rows, price_remedies(rows, budget, seed, measured=measured)


@dataclass(frozen=True)
class MeasuredRemedy:
    """A remedy's trained pair measured on its case's evaluation points, before pricing."""

    case: str
    remedy: str
    rate: float
    active_units: int
    elbo: float
    measured: Measured
    seconds: float


def measure_remedy(
    case: str, name: str, budget: Budget, seed: int, progress: bool | str = False
) -> MeasuredRemedy:
    """Train case ``case`` with remedy ``name`` and measure rate, ELBO, active units, exact
    log p(x) and IW_K (K the case's largest, ``budget.num_samples[-1]``)."""
    start = time.perf_counter()
    setup, remedy = setup_of(case), remedy_named(name)
    x, x_eval = experiment_data(setup, budget, seed)
    model, guide = train_pair(
        setup,
        x,
        budget,
        seed,
        progress,
        guide_family=remedy.guide_family,
        **remedy.fit_options(budget.steps),
    )
    remedy.ready(guide, x)
    diagnosis = diagnose(model, guide, x_eval, with_exact=False, seed=seed)
    measured = measure_log_px(model, guide, x_eval, max(budget.num_samples), seed)
    return MeasuredRemedy(
        case,
        name,
        diagnosis.rate,
        diagnosis.active_units,
        diagnosis.elbo,
        measured,
        time.perf_counter() - start,
    )


def _priced(one: MeasuredRemedy, plain: ExperimentResult, seed: int) -> RemedyResult:
    change = change_from(
        one.measured,
        baseline=(plain.model, plain.guide),
        baseline_exact=plain.exact_per_point,
        seed=seed,
    )
    return RemedyResult(
        case=one.case,
        remedy=one.remedy,
        rate=one.rate,
        rate_gained=one.rate - plain.diagnosis.rate,
        active_units=one.active_units,
        elbo=one.elbo,
        elbo_change=one.elbo - plain.diagnosis.elbo,
        priced_by=change.priced_by,
        log_px=change.log_px,
        exact=change.exact,
        iw=change.iw.mean,
        iw_stderr=change.iw.stderr,
        iw_num_samples=change.iw.num_samples,
        iw_gap=change.iw_gap,
        log_px_change=change.mean,
        log_px_change_stderr=change.stderr,
        note=change.note,
        seconds=one.seconds,
    )


def format_remedies(results: list[RemedyResult]) -> str:
    """One row per case and remedy, in nats per data point; a row priced by IW_K (no certified
    exact value) is marked with a star."""
    num_samples = {row.iw_num_samples for row in results}
    iw_label = f"IW_{num_samples.pop()}" if len(num_samples) == 1 else "IW_K"
    lines = [
        f"{'case':<5}{'remedy':<19}{'rate':>7}{'gained':>8}{'active':>7}{'ELBO':>9}"
        f"{'change':>8}{'log p(x)':>10}{'change':>8}{'± stderr':>9}{iw_label:>10}{'IW gap':>8}"
    ]
    for row in results:
        star = "*" if row.priced_by == "iw" else " "
        gap = "-" if row.iw_gap is None else f"{row.iw_gap:.3f}"
        lines.append(
            f"{row.case:<5}{row.remedy:<19}{row.rate:>7.3f}{row.rate_gained:>+8.3f}"
            f"{row.active_units:>7}{row.elbo:>9.3f}{row.elbo_change:>+8.3f}"
            f"{row.log_px:>9.3f}{star}{row.log_px_change:>+8.3f}{row.log_px_change_stderr:>9.4f}"
            f"{row.iw:>10.3f}{gap:>8}"
        )
    fallback = any(row.priced_by == "iw" for row in results)
    lines.append(
        "(nats per data point; log p(x) exact"
        + (" (* by IW_K: no certified exact value)" if fallback else "")
        + ", changes against the plain ELBO's pair of the same case, stderr paired over points)"
    )
    return "\n".join(lines)
