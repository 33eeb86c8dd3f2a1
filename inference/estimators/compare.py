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
from inference.estimators.bounds import ImportanceEstimate, elbo, iw_log_marginal
from inference.estimators.exact import NoExactValueError, exact_log_marginal

REFERENCES = (None, "nuts", "ais")


@dataclass(frozen=True)
class ComparisonRow:
    """One estimator: its average over points (nats) and the Monte-Carlo standard error."""

    estimator: str
    num_samples: int | None
    mean: float
    stderr: float
    mean_ess: float | None = None
    max_khat: float | None = None
    unreliable_points: int | None = None


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
            "rows": [asdict(row) for row in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    def __str__(self) -> str:
        header = ("estimator", "K", "mean log p(x)", "stderr", "ESS", "max k-hat")
        lines = ["{:<10}{:>8}{:>16}{:>10}{:>10}{:>11}".format(*header)]
        for row in self.rows:
            lines.append(
                f"{row.estimator:<10}{_text(row.num_samples, 'd'):>8}{row.mean:>16.4f}"
                f"{_text(row.stderr, '.4f'):>10}{_text(row.mean_ess, '.1f'):>10}"
                f"{_text(row.max_khat, '.2f'):>11}"
            )
        note = f"; {self.exact_note}" if self.exact_note else ""
        lines.append(f"(nats per data point, N={self.num_data}){note}")
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


def _elbo_row(estimate) -> ComparisonRow:
    return ComparisonRow("elbo", estimate.num_samples, estimate.mean, estimate.stderr)


def _importance_row(estimator: str, estimate: ImportanceEstimate) -> ComparisonRow:
    return ComparisonRow(
        estimator,
        estimate.num_samples,
        estimate.mean,
        estimate.stderr,
        estimate.ess.mean().item(),
        _nan_max(estimate.khat),
        int(estimate.unreliable.sum()),
    )


def _nan_max(values: torch.Tensor) -> float | None:
    finite = values[~values.isnan()]
    return finite.max().item() if finite.numel() else None


def _text(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)
