"""The BDMC sandwich of log p(x) against the number of annealing steps (``lvm sandwich``).

A study built on :func:`inference.bdmc`, as ``frontier.py`` is on ``fit``: for each number of
steps T, forward and reverse AIS on data simulated from the model give a lower and an upper
estimate of log p(x) whose gap closes as T grows (Grosse et al., 2015; Wu et al., 2017).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from inference._validate import check_positive_int
from inference.estimators.ais import bdmc
from inference.estimators.exact import NoExactValueError, exact_log_marginal


@dataclass(frozen=True)
class SandwichRow:
    """One number of annealing steps: mean lower and upper estimates (nats per point) with
    their standard errors, the mean width, and the seconds both runs took."""

    num_steps: int
    lower: float
    lower_stderr: float
    upper: float
    upper_stderr: float
    width: float
    seconds: float


@dataclass(frozen=True)
class SandwichCurve:
    """The rows of :func:`sandwich_curve`; ``exact`` is the mean exact log p(x) of the
    simulated data where the model has one, else None."""

    rows: tuple[SandwichRow, ...]
    num_data: int
    num_chains: int
    exact: float | None

    def to_dict(self) -> dict:
        return {
            "num_data": self.num_data,
            "num_chains": self.num_chains,
            "exact": self.exact,
            "rows": [asdict(row) for row in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        lines = [
            f"{'steps':>7}{'lower':>12}{'(se)':>9}{'upper':>12}{'(se)':>9}{'width':>10}"
            f"{'seconds':>10}"
        ]
        for row in self.rows:
            lines.append(
                f"{row.num_steps:>7}{row.lower:>12.4f}{row.lower_stderr:>9.4f}{row.upper:>12.4f}"
                f"{row.upper_stderr:>9.4f}{row.width:>10.4f}{row.seconds:>10.1f}"
            )
        exact = "" if self.exact is None else f"; exact log p(x) = {self.exact:.4f}"
        lines.append(
            f"(nats per point, N={self.num_data} points simulated from the model, "
            f"{self.num_chains} chains each way{exact})"
        )
        return "\n".join(lines)


def sandwich_curve(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    *,
    steps: Sequence[int] = (10, 100, 1000),
    num_chains: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> SandwichCurve:
    """BDMC at each number of annealing steps on the same simulated data (x gives the shape).

    Every run uses ``seed``, so each simulates the same data set and the rows differ only in
    T. ``exact`` is the exact log p(x) of that data (:func:`exact_log_marginal`) where it
    has a route.

    :returns: a :class:`SandwichCurve`, one row per T in increasing order, in nats.
    """
    steps = sorted({check_positive_int("steps", s) for s in steps})
    rows, simulated = [], None
    for num_steps in steps:
        start = time.perf_counter()
        result = bdmc(
            model,
            guide,
            x,
            num_steps=num_steps,
            num_chains=num_chains,
            seed=seed,
            progress=progress,
        )
        simulated = result.x
        rows.append(
            SandwichRow(
                num_steps,
                result.lower.mean,
                result.lower.stderr,
                result.upper.mean,
                result.upper.stderr,
                result.width.mean().item(),
                time.perf_counter() - start,
            )
        )
    try:
        exact = exact_log_marginal(model, simulated).double().mean().item()
    except NoExactValueError:
        exact = None
    return SandwichCurve(tuple(rows), x.shape[0], num_chains, exact)
