"""The weight of the KL term over a run: the beta that each step of :func:`~inference.fit` uses.

fit multiplies the log-densities of the latent sites, in model and guide, by the weight
beta_t of step t, so the bound it maximises at that step is
``E_q[log p(x given z)] - beta_t KL(q(z given x) || p(z))`` (beta-VAE, Higgins et al., 2017).

A schedule is a small frozen dataclass, called as ``schedule(step, steps)``: the weight of
step ``step`` (counted from 0) of a run of ``steps``. ``fit(beta=..., kl_warmup_steps=...)``
names one of these; ``fit(kl_schedule=...)`` passes one directly. A new schedule is a new
subclass of :class:`KLSchedule`, as :class:`CyclicalAnnealing` (Fu et al., 2019) is: it splits
the ``steps`` into M cycles and raises the weight linearly over the first fraction R of each.

The weight enters the step through :class:`_ScaleLatent`, with a number (the eager step) or a
tensor that is an input of the compiled step, so every schedule works compiled too.

Example::

    fit(model, guide, x, steps=5000, kl_schedule=LinearWarmup(beta=1.0, warmup_steps=1000))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from inference._validate import check_finite_number, check_positive_int


class KLSchedule:
    """What :func:`~inference.fit` asks of a KL-weight schedule; subclasses are frozen
    dataclasses that implement ``__call__``."""

    def __call__(self, step: int, steps: int) -> float:
        """The KL weight of step ``step`` (from 0) of a run of ``steps`` steps."""
        raise NotImplementedError(f"{type(self).__name__} does not define its weights")

    def options(self) -> dict[str, object]:
        """What a checkpoint records of the schedule, which a resumed run must match: by
        default the value itself (its repr). The schedules here keep the keys of checkpoint
        format 2 (fit's ``beta`` and ``kl_warmup_steps``), so older checkpoints still resume."""
        return {"kl_schedule": repr(self)}


@dataclass(frozen=True)
class ConstantBeta(KLSchedule):
    """beta_t = ``beta`` at every step: the ELBO at 1 (the default), a beta-VAE otherwise."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        check_finite_number("beta", self.beta)

    def __call__(self, step: int, steps: int) -> float:
        return self.beta

    def options(self) -> dict[str, object]:
        return {"beta": self.beta, "kl_warmup_steps": 0}


@dataclass(frozen=True)
class LinearWarmup(KLSchedule):
    """beta_t = ``beta * min(1, (t + 1) / warmup_steps)``: the weight rises linearly to ``beta``
    over the first ``warmup_steps`` steps, then stays (KL annealing, Bowman et al., 2016)."""

    beta: float
    warmup_steps: int

    def __post_init__(self) -> None:
        check_finite_number("beta", self.beta)
        check_positive_int("warmup_steps", self.warmup_steps)

    def __call__(self, step: int, steps: int) -> float:
        return self.beta * min(1.0, (step + 1) / self.warmup_steps)

    def options(self) -> dict[str, object]:
        return {"beta": self.beta, "kl_warmup_steps": self.warmup_steps}


@dataclass(frozen=True)
class CyclicalAnnealing(KLSchedule):
    """Cyclical KL annealing (Fu et al., 2019, "Cyclical annealing schedule: a simple approach
    to mitigating KL vanishing"): the ``steps`` T split into M = ``cycles`` cycles of period
    T / M; within each the weight rises linearly from 0 over the first fraction R = ``ratio``
    of the period, then stays at ``beta`` to the cycle's end:

        beta_t = beta * min(1, (t - s_c) / (R T / M)),  s_c = floor(c T / M),

    c the cycle of step t (the last with s_c <= t). For a whole period, t - s_c = t mod (T / M).
    The values are those of the reference code's ``frange_cycle_linear(T, 0, beta, M, R)``
    (haofuml/cyclical_annealing), cycle starts rounded down as there, in exact integer
    arithmetic. A resumed run keeps the total ``steps``, so its cycles are the uninterrupted
    run's.

    Example::

        fit(model, guide, x, steps=4000, kl_schedule=CyclicalAnnealing(cycles=4, ratio=0.5))
    """

    beta: float = 1.0
    cycles: int = 4
    ratio: float = 0.5

    def __post_init__(self) -> None:
        check_finite_number("beta", self.beta)
        check_positive_int("cycles", self.cycles)
        check_finite_number("ratio", self.ratio, positive=True)
        if self.ratio > 1:
            raise ValueError(f"ratio must be in (0, 1]; got {self.ratio!r}")

    def __call__(self, step: int, steps: int) -> float:
        # The cycle c of step t is the last whose start floor(c T / M) <= t, i.e. c T < (t + 1) M.
        cycle = min(self.cycles - 1, ((step + 1) * self.cycles - 1) // steps)
        into_cycle = step - cycle * steps // self.cycles
        return self.beta * min(1.0, into_cycle * self.cycles / (self.ratio * steps))


class _ScaleLatent(Messenger):
    """Multiplies the log-density of every latent (unobserved) sample site by ``scale``: a
    number, or a 0-dim tensor that a compiled step takes as an input.

    Pyro's ``poutine.scale`` scales every site; beta must leave the observed sites alone.
    """

    def __init__(self, scale: float | torch.Tensor) -> None:
        super().__init__()
        self.scale = scale

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.scale * msg["scale"]
