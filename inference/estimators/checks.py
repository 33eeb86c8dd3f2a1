"""``check_bounds``: the bound properties, run on any model/guide pair a user brings."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from inference._programs import Inputs, checked_inputs, sample_sites, trace_program
from inference._validate import (
    check_per_point,
    check_positive_int,
    check_sample_sizes,
    check_seed,
)
from inference.estimators.ais import AIS_CHAINS, AIS_STEPS, ais_log_marginal
from inference.estimators.bounds import Estimate, _delta_method_stderr, elbo, iw_log_marginal
from inference.estimators.exact import NoExactValueError, exact_log_marginal

_ZERO_VARIANCE = 1e-9  # per-point standard error below this: the weights are constant
_EXACT_TOLERANCE = 1e-6  # nats: the least round-off allowed where a check is exact
_ROUNDING_ULPS = 64  # and, relative to the figures compared, this many units of round-off
_MIN_REPLICATES = 10


@dataclass(frozen=True)
class BoundsReport:
    """What :func:`check_bounds` measured, all in nats, per point (N,) or per K."""

    elbo: Estimate
    iw: dict[int, Estimate]
    exact: torch.Tensor | None
    z: float
    checks: tuple[str, ...]
    ais: Estimate | None = None


def check_bounds(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: Sequence[int] = (1, 10, 100),
    particles_per_row: int = 2000,
    false_alarm_rate: float = 1e-3,
    exact: torch.Tensor | None = None,
    reference: str | None = None,
    ais_steps: int = AIS_STEPS,
    ais_chains: int = AIS_CHAINS,
    seed: int | None = 0,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
) -> BoundsReport:
    """Check ELBO <= E[IW_K] <= E[IW_K'] <= log p(x) (K <= K') per point, and tightness.

    For each point: the ELBO and each E[IW_K] are estimated with ``particles_per_row``
    particles (IW_K as the mean of particles_per_row / K independent K-sample estimates) and
    their own standard errors (for IW, the larger of the replicates' spread and the delta
    method). An inequality a <= b fails when a - b > z * se(a - b), with z
    from a Bonferroni correction over every comparison made, so that a correct estimator on a
    correct pair fails with probability at most ``false_alarm_rate``. Tightness is checked
    exactly: where the log weights of a point have zero variance (q is the exact posterior,
    e.g. a decoder that ignores z with q = prior), ELBO, every IW_K and log p(x) must agree
    to 1e-6 nats.

    ``exact`` defaults to :func:`exact_log_marginal` where that has a route; without it the
    checks against log p(x) are skipped (the report says which ran), unless
    ``reference="ais"``: then log p(x) is estimated by :func:`inference.ais_log_marginal`
    (``ais_steps`` steps, ``ais_chains`` chains) and each bound is checked against it with
    both standard errors, as "<= AIS". The chains start from the prior, not from the guide
    under test: AIS from a guide whose density is wrong would inherit its error. AIS is
    itself a stochastic lower bound: a failure there means a broken bound or an AIS run
    too short to converge.

    ``model_args``, ``model_kwargs``, ``data_plate``, ``vectorize``: as in
    :func:`inference.elbo`.

    :raises AssertionError: naming the violated inequality, the points and the figures.
    :returns: a :class:`BoundsReport` when every check passes.
    """
    inputs = checked_inputs(x, model_args, model_kwargs)
    arguments = dict(model_args=model_args, model_kwargs=model_kwargs, data_plate=data_plate)
    program = dict(arguments, vectorize=vectorize)
    ks = check_sample_sizes(num_samples)
    check_positive_int("particles_per_row", particles_per_row)
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1); got {false_alarm_rate!r}")
    if reference not in (None, "ais"):
        raise ValueError(f"reference must be None or 'ais'; got {reference!r}")
    if exact is not None:
        check_per_point("exact", exact, inputs.num_data)
    if check_seed(seed) is None:  # one draw from the caller's RNG seeds every estimate below
        seed = int(torch.randint(2**62, ()))
    if exact is None:
        try:
            exact = exact_log_marginal(model, x, **arguments)
        except NoExactValueError:
            exact = None
    bound = elbo(model, guide, x, num_particles=particles_per_row, seed=seed, **program)
    iw = {
        k: _iw_with_robust_stderr(
            model, guide, x, k, particles_per_row, (seed + k) % 2**63, program
        )
        for k in ks
    }
    rows = [("ELBO", bound)] + [(f"IW_{k}", iw[k]) for k in ks]
    ais = None
    if exact is None and reference == "ais":
        ais = ais_log_marginal(
            model, None, x, num_steps=ais_steps, num_chains=ais_chains, seed=seed, **program
        )
    comparisons = len(rows) - 1 + (len(rows) if exact is not None or ais is not None else 0)
    tail = false_alarm_rate / (2 * comparisons * x.shape[0])
    z = float(
        torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - tail, dtype=torch.float64))
    )
    allowance = _Allowance(torch.finfo(x.dtype).eps, _missed_mass_excess(tail, particles_per_row))
    checks = []
    for (low_name, low), (high_name, high) in zip(rows[:-1], rows[1:]):
        _check_ordered(low_name, low, high_name, high, z, allowance)
        checks.append(f"{low_name} <= {high_name}")
    if exact is not None:
        exact = exact.to(bound.per_point)  # its dtype and device
        exact_row = Estimate(exact, torch.zeros_like(exact), 0)
        for name, row in rows:
            _check_ordered(name, row, "log p(x)", exact_row, z, allowance)
            checks.append(f"{name} <= log p(x)")
        if not _has_discrete_latent(model, inputs):
            _check_tight(bound, rows, exact, allowance)
            checks.append("tight where the weights have zero variance")
    if ais is not None:
        for name, row in rows:
            _check_ordered(name, row, "AIS", ais, z, allowance)
            checks.append(f"{name} <= AIS")
    return BoundsReport(bound, iw, exact, z, tuple(checks), ais)


@dataclass(frozen=True)
class _Allowance:
    """What an inequality may be off by beyond z standard errors (see :func:`check_bounds`)."""

    eps: float
    missed_mass: float

    def rounding(self, *values: torch.Tensor) -> torch.Tensor:
        largest = torch.stack([v.abs() for v in values]).max(0).values
        return _EXACT_TOLERANCE + _ROUNDING_ULPS * self.eps * largest

    def constant(self, stderr: torch.Tensor) -> torch.Tensor:
        """The missed-mass excess where a row's draws were all equal (stderr 0), else 0."""
        return torch.where(stderr.nan_to_num(0.0) < _ZERO_VARIANCE, self.missed_mass, 0.0)


def _missed_mass_excess(alpha: float, draws: int) -> float:
    """-log(1 - p) for the largest q-mass p that ``draws`` draws miss with probability alpha."""
    missed = -math.expm1(math.log(alpha) / draws)  # 1 - alpha^(1/S)
    return -math.log1p(-missed)


def _has_discrete_latent(model: Callable, inputs: Inputs) -> bool:
    trace = trace_program(model, inputs)
    return any(
        site["fn"].support.is_discrete for _, site in sample_sites(trace) if not site["is_observed"]
    )


def _iw_with_robust_stderr(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int,
    particles: int,
    seed: int,
    program: dict,
) -> Estimate:
    """E[IW_K] per point from R >= 10 replicates, with the larger of two standard errors.

    The spread of a few replicates understates the error of heavy-tailed weights; the
    delta method on all K R weights, sqrt((K R / ESS - 1) / (K R)), is a second opinion.
    """
    replicates = max(_MIN_REPLICATES, particles // k)
    estimate = iw_log_marginal(
        model, guide, x, num_samples=k, num_replicates=replicates, seed=seed, **program
    )
    delta_method = _delta_method_stderr(estimate.ess, k * replicates)
    return Estimate(estimate.per_point, torch.maximum(estimate.per_point_stderr, delta_method), k)


def _check_ordered(
    low_name: str, low: Estimate, high_name: str, high: Estimate, z: float, allowance: _Allowance
) -> None:
    """Fail where low - high exceeds z standard errors of the difference and the allowance."""
    stderr = (
        low.per_point_stderr.nan_to_num(0.0) ** 2 + high.per_point_stderr.nan_to_num(0.0) ** 2
    ).sqrt()
    slack = z * stderr + allowance.rounding(low.per_point, high.per_point)
    slack = slack + allowance.constant(low.per_point_stderr)
    excess = low.per_point - high.per_point - slack
    bad = (excess > 0).nonzero().flatten()
    if bad.numel():
        shown = ", ".join(
            f"point {int(n)}: {low_name}={low.per_point[n].item():.6f} > {high_name}="
            f"{high.per_point[n].item():.6f} (se of difference {stderr[n].item():.2e}, "
            f"allowed {slack[n].item():.2e})"
            for n in bad[:5]
        )
        raise AssertionError(
            f"violated {low_name} <= {high_name} at {bad.numel()} of {low.per_point.numel()} "
            f"points (z = {z:.2f}): {shown}"
        )


def _check_tight(
    bound: Estimate, rows: list[tuple[str, Estimate]], exact: torch.Tensor, allowance: _Allowance
) -> None:
    """Where every log weight of a point is the same, each estimate must equal log p(x)."""
    constant = bound.per_point_stderr < _ZERO_VARIANCE
    for name, row in rows:
        gap = (row.per_point - exact).abs()
        bad = (constant & (gap > allowance.rounding(row.per_point, exact))).nonzero().flatten()
        if bad.numel():
            n = int(bad[0])
            raise AssertionError(
                f"violated tightness ({name} = log p(x) where the log weights have zero "
                f"variance) at {bad.numel()} points, e.g. point {n}: {name}="
                f"{row.per_point[n].item():.6f}, log p(x)={exact[n].item():.6f}"
            )
