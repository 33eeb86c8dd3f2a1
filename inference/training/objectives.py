"""The objectives :func:`~inference.fit` maximises, as values.

An objective is a small frozen dataclass: what it estimates (its docstring states the bound),
how many particles, and how to build what ``SVI`` steps on from the programs' layout (a
:class:`~inference._programs.ProgramInfo`). ``fit(objective="elbo" | "iwae", free_bits=...,
jit=..., enumerate=...)`` names one of these; ``fit(objective=IWAE(num_particles=5))`` passes
one directly, and a new objective is a new subclass of :class:`Objective`, not a new branch
of ``fit``.

Losses are negative bounds summed over the points of a minibatch of B; ``SVI`` steps on them
times N / B, an unbiased estimate of the full-data loss (the ``data_scale`` of
:meth:`Objective.svi`).

Example::

    fit(model, guide, x, objective=IWAE(num_particles=5), steps=2000, batch_size=256)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import pyro.poutine as poutine
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.optim import PyroOptim
from pyro.poutine.trace_struct import Trace
from torch.distributions import Independent, Normal, kl_divergence

from inference._programs import (
    Inputs,
    ProgramInfo,
    particle_traces,
    sample_sites,
    site_log_prob_per_point,
)
from inference._validate import check_finite_number, check_positive_int

Loss = Callable[..., torch.Tensor]  # loss(model, guide, x, *args, **kwargs): a scalar


class Objective:
    """What :func:`~inference.fit` asks of an objective. Subclasses are frozen dataclasses with
    a ``num_particles`` field, and implement :meth:`loss` (or :meth:`svi`, for a step that is
    not plain ``SVI`` on a differentiable loss).

    :cvar name: ``"elbo"`` or ``"iwae"``: the bound, as ``FitResult.objective`` reports it.
    :cvar enumerate: whether discrete latent sites with enumerate support are summed out
        exactly (True), drawn by the guide (False), or summed out where the programs have
        them (None, settled by :meth:`for_program`). Where it is not False the guide may
        leave such sites out.
    :cvar needs_constant_kl_weight: the step is compiled once, so the KL weight (beta) of
        its first step holds for all of them.
    """

    name: ClassVar[str]
    num_particles: int
    enumerate: ClassVar[bool | None] = False
    needs_constant_kl_weight: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_positive_int("num_particles", self.num_particles)

    def for_program(self, info: ProgramInfo) -> Objective:
        """This objective for the programs ``info`` describes, every automatic choice made."""
        return self

    def loss(self, info: ProgramInfo) -> Loss:
        """The negative bound of a minibatch, summed over its points, differentiable."""
        raise NotImplementedError(f"{type(self).__name__} does not define its loss")

    def svi(
        self,
        model: Callable,
        guide: Callable,
        optimizer: PyroOptim,
        info: ProgramInfo,
        data_scale: float,
    ) -> SVI:
        """What fit steps: ``svi.step(x, *args, **kwargs)`` takes one step on a minibatch and
        returns its loss times ``data_scale`` (N / B). Here, ``SVI`` on :meth:`loss`."""
        return SVI(model, guide, optimizer, loss=_scaled(self.loss(info), data_scale))

    def options(self) -> dict[str, object]:
        """What a checkpoint records of the objective, which a resumed run must match: by
        default the value itself (its repr). The objectives here keep the keys of checkpoint
        format 2, so that checkpoints written before objectives were values still resume; an
        option added to one of them adds its key only where it departs from the behaviour
        before it."""
        return {"objective": repr(self)}


@dataclass(frozen=True)
class ELBO(Objective):
    """The evidence lower bound (Kingma and Welling, 2014),
    ``sum_n E_q[log p(x_n, z) - log q(z given x_n)]``, with Pyro's ``Trace_ELBO``: each
    expectation estimated with ``num_particles`` samples. Discrete latent sites with
    enumerate support are summed out exactly with ``TraceEnum_ELBO`` where ``enumerate``
    says (None: whenever the model has such sites); model and guide are then marked with
    ``config_enumerate``.
    """

    num_particles: int = 1
    enumerate: bool | None = None
    name: ClassVar[str] = "elbo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.enumerate not in (None, True, False):
            raise ValueError(f"enumerate must be None, True or False; got {self.enumerate!r}")

    def for_program(self, info: ProgramInfo) -> ELBO:
        if self.enumerate is None:
            return replace(self, enumerate=bool(info.enumerable_sites))
        if self.enumerate and not info.enumerable_sites:
            raise ValueError("enumerate=True: the model has no discrete latent site to enumerate")
        return self

    def loss(self, info: ProgramInfo) -> Loss:
        elbo = (TraceEnum_ELBO if self.enumerate else Trace_ELBO)(
            num_particles=self.num_particles,
            # One particle needs no particle plate: the same estimate with one handler less.
            vectorize_particles=self.num_particles > 1 and info.vectorized,
            max_plate_nesting=info.max_plate_nesting,
        )
        return elbo.differentiable_loss

    def svi(
        self,
        model: Callable,
        guide: Callable,
        optimizer: PyroOptim,
        info: ProgramInfo,
        data_scale: float,
    ) -> SVI:
        if self.enumerate:
            model, guide = (config_enumerate(p, default="parallel") for p in (model, guide))
        return super().svi(model, guide, optimizer, info, data_scale)

    def options(self) -> dict[str, object]:
        return _format_2_options(self, enumerate=bool(self.enumerate))


@dataclass(frozen=True)
class JitELBO(Objective):
    """The ELBO of :class:`ELBO` (without enumeration) with Pyro's ``JitTrace_ELBO``: the same
    estimate with the Python of the tracing run once, for programs of static structure.
    Compiling takes a second or two, and keeps the first step's constants: the minibatch
    scaling N / B goes into the programs (``poutine.scale``), so batches must all be of size
    B, and the KL weight must be constant.
    """

    num_particles: int = 1
    name: ClassVar[str] = "elbo"
    needs_constant_kl_weight: ClassVar[bool] = True

    def svi(
        self,
        model: Callable,
        guide: Callable,
        optimizer: PyroOptim,
        info: ProgramInfo,
        data_scale: float,
    ) -> SVI:
        elbo = JitTrace_ELBO(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1 and info.vectorized,
            max_plate_nesting=info.max_plate_nesting,
            ignore_jit_warnings=True,
        )
        scaled = (poutine.scale(program, scale=data_scale) for program in (model, guide))
        return SVI(*scaled, optimizer, loss=elbo)

    def options(self) -> dict[str, object]:
        return _format_2_options(self, jit=True)


@dataclass(frozen=True)
class IWAE(Objective):
    """The importance-weighted bound (Burda et al., 2016) with K = ``num_particles``,
    ``sum_n E[log (1/K) sum_k p(x_n, z_k) / q(z_k given x_n)]``.

    That is the bound of Pyro's ``RenyiELBO(alpha=0)``, computed here as a differentiable
    loss because ``RenyiELBO`` only offers ``loss_and_grads``, which cannot be scaled for
    minibatches. Its gradient is pathwise, so every latent site must be reparameterisable.
    """

    num_particles: int = 1
    name: ClassVar[str] = "iwae"

    def loss(self, info: ProgramInfo) -> Loss:
        """-sum_n [logsumexp_k log w_kn - log K], log w = log p(x, z) - log q(z given x)."""
        num_particles = self.num_particles

        def loss(model: Callable, guide: Callable, x: torch.Tensor, *args, **kwargs):
            inputs, parts = Inputs(x, args, kwargs), []
            for model_trace, guide_trace, count in particle_traces(
                model, guide, inputs, num_particles, replace(info, num_data=x.shape[0])
            ):
                _check_reparameterised(guide_trace)
                log_weights = _scaled_log_density(model_trace, info) - _scaled_log_density(
                    guide_trace, info
                )
                parts.append(log_weights.expand(count, x.shape[0]))
            log_weights = torch.cat(parts)  # (K, B)
            return -(torch.logsumexp(log_weights, 0) - math.log(num_particles)).sum()

        return loss

    def options(self) -> dict[str, object]:
        return _format_2_options(self)


@dataclass(frozen=True)
class FreeBits(Objective):
    """The ELBO with free bits (Kingma et al., 2016): the KL term becomes
    ``B sum_j max(floor, KL_j)``, KL_j the analytic KL of latent unit j averaged over the
    minibatch of B (and the particles), so that no unit is pushed below ``floor`` nats.

    The units are the latent dimensions (the event dims) and the indices of any plate other
    than the data plate. It needs factorised Gaussian latent sites in model and guide
    (``Normal`` or ``Normal(...).to_event(...)``). The floor applies to a batch mean, so the
    loss times N / B is not an unbiased estimate of the full-data loss.
    """

    floor: float
    num_particles: int = 1
    name: ClassVar[str] = "elbo"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite_number("floor", self.floor, positive=True)

    def loss(self, info: ProgramInfo) -> Loss:
        """-sum_n E_q log p(x_n given z) + B sum_j max(floor, KL_j)."""
        floor, num_particles = self.floor, self.num_particles

        def loss(model: Callable, guide: Callable, x: torch.Tensor, *args, **kwargs):
            log_likelihood, kl_per_unit, scales = torch.zeros(()), {}, {}
            batch_info = replace(info, num_data=x.shape[0])
            for model_trace, guide_trace, count in particle_traces(
                model, guide, Inputs(x, args, kwargs), num_particles, batch_info
            ):
                share = count / num_particles
                observed = _scaled_log_density(model_trace, info, observed=True)  # (count, B)
                log_likelihood = log_likelihood + share * observed.mean(0).sum()
                for name, guide_site in sample_sites(guide_trace):
                    kl = _mean_kl_per_unit(name, guide_site, model_trace.nodes[name], info)
                    kl_per_unit[name] = kl_per_unit.get(name, 0.0) + share * kl
                    scales[name] = guide_site["scale"]
            # The floor applies to each unit's KL, averaged over particles and the batch.
            floored = sum(
                scales[name] * kl.clamp_min(floor).sum() for name, kl in kl_per_unit.items()
            )
            return -log_likelihood + x.shape[0] * floored

        return loss

    def options(self) -> dict[str, object]:
        return _format_2_options(self, free_bits=self.floor)


def _format_2_options(
    objective: Objective, free_bits: float = 0.0, jit: bool = False, enumerate: bool = False
) -> dict[str, object]:
    """The options a checkpoint of format 2 records of the objective (``fit``'s keywords)."""
    return {
        "objective": objective.name,
        "num_particles": objective.num_particles,
        "free_bits": free_bits,
        "jit": jit,
        "enumerate": enumerate,
    }


def _scaled(loss: Loss, data_scale: float) -> Loss:
    """``loss`` times ``data_scale``: N / B makes a minibatch's loss estimate the full one."""

    def scaled_loss(model: Callable, guide: Callable, batch: torch.Tensor, *args, **kwargs):
        return loss(model, guide, batch, *args, **kwargs) * data_scale

    return scaled_loss


def _scaled_log_density(
    trace: Trace, info: ProgramInfo, observed: bool | None = None
) -> torch.Tensor:
    """Sum of the sites' scaled log-densities per particle and point, shape (K or 1, B or 1).

    ``observed`` picks the observed (True) or latent (False) sites; None takes all.
    """
    total = torch.zeros(())
    for _, site in sample_sites(trace):
        if observed is None or site["is_observed"] == observed:
            total = total + site["scale"] * site_log_prob_per_point(site, info)
    return total


def _check_reparameterised(guide_trace: Trace) -> None:
    for name, site in sample_sites(guide_trace):
        if not site["fn"].has_rsample:
            raise ValueError(
                f"objective='iwae' needs reparameterised latent sites; guide site '{name}' "
                f"({type(site['fn']).__name__}) has no rsample"
            )


def _mean_kl_per_unit(
    name: str, guide_site: dict, model_site: dict, info: ProgramInfo
) -> torch.Tensor:
    """KL(q || p) of each latent unit, averaged over particles and data points.

    The units are the latent dimensions (the event dims of the Normal) and the indices of any
    plate other than the data plate.
    """
    q = _factorised_normal(name, guide_site["fn"], "guide")
    p = _factorised_normal(name, model_site["fn"], "model")
    kl = kl_divergence(q, p)  # (K, ..., B, ..., *event)
    rank = info.max_plate_nesting + 1
    return kl.mean(dim=(0, rank + info.data_dim))


def _factorised_normal(name: str, distribution: object, role: str) -> Normal:
    while isinstance(distribution, Independent):
        distribution = distribution.base_dist
    if not isinstance(distribution, Normal):
        raise ValueError(
            f"free_bits needs factorised Gaussian latent sites (Normal or Normal.to_event); "
            f"the {role}'s site '{name}' has {type(distribution).__name__}"
        )
    return distribution
