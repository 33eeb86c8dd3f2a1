"""ELBO, importance-weighted estimates at several K, and the exact log p(x), side by side."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from inference._programs import checked_inputs
from inference._validate import check_per_point, check_positive_int, check_sample_sizes
from inference.estimators.ais import AIS_CHAINS, AIS_STEPS, ais_log_marginal
from inference.estimators.bounds import (
    KHAT_THRESHOLD,
    Estimate,
    ImportanceEstimate,
    elbo,
    iw_log_marginal,
)
from inference.estimators.exact import NoExactValueError, exact_log_marginal

REFERENCES = (None, "nuts", "ais")


@dataclass(frozen=True)
class ComparisonRow:
    """One estimator: its average over points (nats) and the Monte-Carlo standard error.

    :ivar num_samples: K, the weights averaged inside the log of one estimate (IW_K:
        log (1/K) sum_k w_k; AIS: its chains); for the ELBO, which averages log w outside
        the log, the draws per point; None for the exact row.
    :ivar draws: weights drawn per point in all: R x K for R replicates of IW_K, the ELBO's
        draws; None for the exact row.
    :ivar mean_ess: (sum w)^2 / sum w^2 over a point's draws, averaged over points (at most
        ``draws``); None where there are no importance weights.
    :ivar max_khat: the largest Pareto k-hat (PSIS) of a point's draws over points.
    :ivar unreliable_points: points whose k-hat exceeds ``KHAT_THRESHOLD`` (0.7).
    :ivar khat_unreliable: ``max_khat`` exceeds 0.7, PSIS's threshold: on those points
        neither the estimate nor its standard error can be trusted.
    """

    estimator: str
    num_samples: int | None
    mean: float
    stderr: float
    mean_ess: float | None = None
    max_khat: float | None = None
    unreliable_points: int | None = None
    draws: int | None = None
    khat_unreliable: bool = False


@dataclass(frozen=True)
class Comparison:
    """The rows of :func:`compare`; ``exact_note`` says why there is no exact row, if none."""

    rows: tuple[ComparisonRow, ...]
    num_data: int
    exact_note: str = ""

    def row(self, estimator: str, num_samples: int | None = None) -> ComparisonRow:
        """The row of an estimator (``"elbo"``, ``"iw"`` with its K, ``"nuts"``, ``"ais"`` or
        ``"exact"``)."""
        for row in self.rows:
            if row.estimator == estimator and (
                num_samples is None or row.num_samples == num_samples
            ):
                return row
        raise KeyError(f"no row {estimator!r} with num_samples={num_samples}")

    def to_dict(self) -> dict:
        return {
            "num_data": self.num_data,
            "exact_note": self.exact_note,
            "khat_threshold": KHAT_THRESHOLD,
            "rows": [asdict(row) for row in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    def __str__(self) -> str:
        header = ("estimator", "K", "draws", "mean log p(x)", "stderr", "ESS", "max k-hat")
        lines = ["{:<10}{:>6}{:>8}{:>16}{:>10}{:>10}{:>11}".format(*header)]
        for row in self.rows:
            k = None if row.estimator in ("elbo", "exact") else row.num_samples
            flag = " !" if row.khat_unreliable else "  "
            lines.append(
                f"{row.estimator:<10}{_text(k, 'd'):>6}{_text(row.draws, 'd'):>8}"
                f"{row.mean:>16.4f}{_text(row.stderr, '.4f'):>10}"
                f"{_text(row.mean_ess, '.1f'):>10}{_text(row.max_khat, '.2f'):>9}{flag}".rstrip()
            )
        note = f"; {self.exact_note}" if self.exact_note else ""
        lines.append(f"(nats per data point, N={self.num_data}){note}")
        lines.append(
            "K: weights averaged inside the log, log (1/K) sum_k w_k (the ELBO averages log w); "
            "draws: weights per point, K x the replicates averaged"
        )
        lines.append(
            "ESS: (sum w)^2 / sum w^2 of a point's draws, mean over points; "
            "max k-hat: their PSIS Pareto shape, the largest over points"
        )
        flagged = [row for row in self.rows if row.khat_unreliable]
        if flagged:
            points = max(row.unreliable_points or 0 for row in flagged)
            lines.append(
                f"! k-hat > {KHAT_THRESHOLD} (PSIS's threshold) on up to {points} of "
                f"{self.num_data} points: that row's estimate and its stderr cannot be trusted"
            )
        return "\n".join(lines)


def compare(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: Sequence[int] = (1, 10, 100, 1000),
    num_replicates: int | None = None,
    particles_per_row: int | None = None,
    exact: torch.Tensor | None = None,
    chunk_size: int | None = None,
    seed: int | None = None,
    reference: str | None = None,
    ais_steps: int = AIS_STEPS,
    ais_chains: int = AIS_CHAINS,
    dtype: torch.dtype | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
) -> Comparison:
    """ELBO, IW_K for each K, and the exact log p(x) where it exists, averaged over points.

    ELBO <= E[IW_K] <= E[IW_K'] <= log p(x) for K <= K' (Burda et al., 2016). Each IW row
    averages R independent K-sample estimates per point (R = ``num_replicates``, by default
    ``particles_per_row`` / K, so every row costs the same number of particles; that budget
    defaults to 10 * max(K)) and its standard error comes from their spread (the delta method
    when R = 1); the ELBO row averages log w over the same budget. IW at
    K = 1 and the ELBO estimate the same quantity: both are shown.

    :param num_samples: the K values, each >= 1.
    :param exact: a precomputed exact log p(x) (N,); by default :func:`exact_log_marginal`.
    :param reference: ``"ais"`` adds a row ``"ais"``: annealed importance sampling from the
        guide (:func:`inference.ais_log_marginal`, ``ais_steps`` steps, ``ais_chains``
        chains), the reference for latents of any dimension where no exact value exists;
        ``"nuts"`` adds a row ``"nuts"``, the reference log p(x) of
        :func:`inference.backends.numpyro.nuts_log_marginal` (built-in models with a
        continuous latent); None (default) adds none.
    :param dtype: torch.float32 or torch.float64 for the ELBO and IW rows (see :func:`elbo`).
    :param model_args, model_kwargs, data_plate, vectorize: as in :func:`inference.elbo`.
    :returns: a :class:`Comparison`, printable, with ``to_dict()`` and ``to_json()``.
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}; got {reference!r}")
    if exact is not None:
        check_per_point("exact", exact, checked_inputs(x).num_data)
    ks = check_sample_sizes(num_samples)
    budget = 10 * ks[-1] if particles_per_row is None else particles_per_row
    check_positive_int("particles_per_row", budget)
    arguments = dict(model_args=model_args, model_kwargs=model_kwargs, data_plate=data_plate)
    program = dict(arguments, vectorize=vectorize)
    rows = [
        _elbo_row(
            elbo(
                model,
                guide,
                x,
                num_particles=budget,
                chunk_size=chunk_size,
                seed=seed,
                dtype=dtype,
                **program,
            )
        )
    ]
    for k in ks:
        replicates = num_replicates or max(1, budget // k)
        estimate = iw_log_marginal(
            model,
            guide,
            x,
            num_samples=k,
            num_replicates=replicates,
            chunk_size=chunk_size,
            seed=None if seed is None else seed + k,
            dtype=dtype,
            **program,
        )
        rows.append(_importance_row("iw", estimate))
    if reference == "nuts":
        # Imported here: JAX and NumPyro load only for a comparison that asks for them.
        from inference.backends.numpyro import nuts_log_marginal

        rows.append(_importance_row("nuts", nuts_log_marginal(model, x, seed=seed or 0)))
    if reference == "ais":
        estimate = ais_log_marginal(
            model, guide, x, num_steps=ais_steps, num_chains=ais_chains, seed=seed, **program
        )
        rows.append(_importance_row("ais", estimate))
    note = ""
    try:
        exact = exact_log_marginal(model, x, **arguments) if exact is None else exact
        rows.append(ComparisonRow("exact", None, exact.double().mean().item(), 0.0))
    except NoExactValueError as error:
        note = f"no exact value: {error}"
    return Comparison(tuple(rows), x.shape[0], note)


def _elbo_row(estimate: Estimate) -> ComparisonRow:
    return ComparisonRow(
        "elbo", estimate.num_samples, estimate.mean, estimate.stderr, draws=estimate.num_samples
    )


def _importance_row(estimator: str, estimate: ImportanceEstimate) -> ComparisonRow:
    max_khat = _nan_max(estimate.khat)
    return ComparisonRow(
        estimator,
        estimate.num_samples,
        estimate.mean,
        estimate.stderr,
        estimate.ess.mean().item(),
        max_khat,
        int(estimate.unreliable.sum()),
        draws=estimate.num_samples * estimate.num_replicates,
        khat_unreliable=max_khat is not None and max_khat > KHAT_THRESHOLD,
    )


def _nan_max(values: torch.Tensor) -> float | None:
    finite = values[~values.isnan()]
    return finite.max().item() if finite.numel() else None


def _text(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)
