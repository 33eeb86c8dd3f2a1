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

The ELBO and free bits also run compiled (``jit=True``): the loss and its gradient traced once
with ``torch.jit.trace`` (Pyro's ``JitTrace_ELBO``, and ``pyro.ops.jit.trace`` for free bits),
the KL weight of the step an input of the trace, so warm-up and any other schedule work
compiled. A compiled step draws the random numbers of the eager one, in the same order: the
same seed gives the same draws and losses equal to float rounding.

Example::

    fit(model, guide, x, objective=IWAE(num_particles=5), steps=2000, batch_size=256)
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pyro.ops.jit
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.optim import PyroOptim
from pyro.poutine.trace_struct import Trace
from torch.distributions import Independent, Normal, kl_divergence

from inference._programs import (
    Inputs,
    ProgramInfo,
    particle_plate,
    particle_traces,
    sample_sites,
    site_log_prob_per_point,
    trace_program,
)
from inference._sites import modules_of
from inference._validate import check_finite_number, check_positive_int
from inference.training.schedules import _ScaleLatent
from lvm_models._base import forked_rng

Loss = Callable[..., torch.Tensor]  # loss(model, guide, x, *args, **kwargs): a scalar

# The compiled loss is checked against the eager one at a KL weight other than the traced
# one (1), so a weight baked into the trace shows; to these relative tolerances, far above
# the rounding of a sum in the dtype and far below what a different computation gives (a
# float64 trace can hold float32 constants: shape arithmetic and a distribution's constant
# terms can run in the default dtype, about 3e-9 relative on a float64 loss).
_CHECK_KL_WEIGHT = 0.5
_CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-7}

IWAE_GRADIENTS = ("plain", "dreg")  # the estimators of IWAE's gradient (IWAE.gradient)


class CompilationError(ValueError):
    """``jit=True`` was asked of an objective or programs that cannot run compiled; the
    message says why."""


class CompilationWarning(UserWarning):
    """``jit=None`` (compile where it works) runs eagerly; the message says why."""


class Objective:
    """What :func:`~inference.fit` asks of an objective. Subclasses are frozen dataclasses with
    a ``num_particles`` field, and implement :meth:`loss` (or :meth:`svi`, for a step that is
    not plain ``SVI`` on a differentiable loss).

    :cvar name: ``"elbo"`` or ``"iwae"``: the bound, as ``FitResult.objective`` reports it.
    :cvar enumerate: whether discrete latent sites with enumerate support are summed out
        exactly (True), drawn by the guide (False), or summed out where the programs have
        them (None, settled by :meth:`for_program`). Where it is not False the guide may
        leave such sites out.
    :cvar jit: whether the step runs compiled (True), eagerly (False), or compiled where the
        programs allow (None, settled by fit). Objectives that compile make it a field.
    """

    name: ClassVar[str]
    num_particles: int
    enumerate: ClassVar[bool | None] = False
    jit: ClassVar[bool | None] = False

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
        """What fit steps (with :meth:`step`): one step on a minibatch returns its loss times
        ``data_scale`` (N / B). Here, ``SVI`` on :meth:`loss`."""
        return SVI(model, guide, optimizer, loss=_scaled(self.loss(info), data_scale))

    def step(self, svi: SVI, batch: Inputs, kl_weight: float) -> float:
        """One step of ``svi`` on ``batch``, the log-densities of the latent sites, in model and
        guide, multiplied by ``kl_weight``: the loss of the step times N / B."""
        weighting = _ScaleLatent(kl_weight) if kl_weight != 1.0 else contextlib.nullcontext()
        with weighting:
            return svi.step(batch.x, *batch.args, **batch.kwargs)

    def options(self) -> dict[str, object]:
        """What a checkpoint records of the objective, which a resumed run must match: by
        default the value itself (its repr). The objectives here keep the keys of checkpoint
        format 2, so that checkpoints written before objectives were values still resume; an
        option added to one of them adds its key only where it departs from the behaviour
        before it."""
        return {"objective": repr(self)}


class _Compilable(Objective):
    """What the objectives that run compiled share: with ``jit`` true, :meth:`svi` steps on
    programs that take the KL weight as their first argument, ``program(kl_weight, x, *args,
    **kwargs)`` (:func:`_with_kl_weight`), and on the subclass's :meth:`_compiled_loss` of
    them; :meth:`step` passes the weight as a 0-dim tensor, an input of the trace."""

    jit: bool | None

    def svi(
        self,
        model: Callable,
        guide: Callable,
        optimizer: PyroOptim,
        info: ProgramInfo,
        data_scale: float,
    ) -> SVI:
        if not self.jit:
            return super().svi(model, guide, optimizer, info, data_scale)
        model, guide = _with_kl_weight(model), _with_kl_weight(guide)
        loss = self._compiled_loss(model, guide, info)
        return SVI(model, guide, optimizer, loss=_scaled(loss, data_scale))

    def step(self, svi: SVI, batch: Inputs, kl_weight: float) -> float:
        if not self.jit:
            return super().step(svi, batch, kl_weight)
        weight = torch.as_tensor(kl_weight, dtype=batch.x.dtype)
        with _interpreted():
            return svi.step(weight, batch.x, *batch.args, **batch.kwargs)

    def checked_svi(
        self,
        model: Callable,
        guide: Callable,
        optimizer: PyroOptim,
        info: ProgramInfo,
        data_scale: float,
        probes: tuple[Inputs, Inputs],
        parameters: Sequence[torch.Tensor],
    ) -> SVI:
        """The compiled :meth:`svi`, compiled on ``probes[0]`` and checked on ``probes[1]``
        (minibatches of the training's shape): with the same random numbers, its loss and the
        gradient of ``parameters`` must be the eager ones, to float rounding.

        The trace records one run of the programs: control flow that depends on the data,
        parameters created after the first run, or state that is not a tensor argument
        would be frozen in it, and the check sees that where ``probes[1]`` exercises it.
        Random numbers, module buffers (BatchNorm's running statistics) and the parameters
        are as they were before the call.

        :raises CompilationError: naming what cannot be compiled, or how the compiled loss
            differs from the eager one.
        """
        if self.enumerate:
            raise CompilationError(
                "enumerated discrete latent sites are summed out eagerly (TraceEnum_ELBO)"
            )
        tensor_kwargs = [k for k, v in probes[0].kwargs.items() if isinstance(v, torch.Tensor)]
        if tensor_kwargs:
            raise CompilationError(
                f"the tensor keyword argument(s) {tensor_kwargs} would be frozen into the "
                "trace; pass them in model_args"
            )
        compiled = replace(self, jit=True).svi(model, guide, optimizer, info, data_scale)
        eager_loss = _scaled(replace(self, jit=False).loss(info), data_scale)
        traced, checked = probes
        dtype = checked.x.dtype
        with _state_kept(model, guide):
            # Outside the try: an error of the eager step is the programs', not the trace's.
            with _ScaleLatent(_CHECK_KL_WEIGHT):
                expected = _loss_and_grads(eager_loss, model, guide, checked, (), parameters)
            try:
                with _interpreted():
                    one = torch.ones((), dtype=dtype)
                    compiled.loss(
                        compiled.model, compiled.guide, one, traced.x, *traced.args, **traced.kwargs
                    )
                    weight = torch.as_tensor(_CHECK_KL_WEIGHT, dtype=dtype)
                    actual = _loss_and_grads(
                        compiled.loss,
                        compiled.model,
                        compiled.guide,
                        checked,
                        (weight,),
                        parameters,
                    )
            except Exception as error:  # whatever stops the trace means: run eagerly
                first_line = str(error).splitlines()[0] if str(error) else ""
                raise CompilationError(
                    f"tracing the step fails ({type(error).__name__}: {first_line})"
                ) from error
        difference = _first_difference(expected, actual, dtype)
        if difference:
            raise CompilationError(
                f"the compiled step differs from the eager one ({difference}): a trace records "
                "one run, and these programs do what it cannot (control flow on the data, a "
                "parameter created after the first run, state that is not an argument, float64 "
                "arithmetic on shapes)"
            )
        return compiled

    def _compiled_loss(self, model: Callable, guide: Callable, info: ProgramInfo) -> Loss:
        """The loss of :meth:`loss`, compiled, of programs that take the KL weight first:
        ``loss(model, guide, kl_weight, x, *args, **kwargs)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class ELBO(_Compilable):
    """The evidence lower bound (Kingma and Welling, 2014),
    ``sum_n E_q[log p(x_n, z) - log q(z given x_n)]``, with Pyro's ``Trace_ELBO``: each
    expectation estimated with ``num_particles`` samples. Discrete latent sites with
    enumerate support are summed out exactly with ``TraceEnum_ELBO`` where ``enumerate``
    says (None: whenever the model has such sites and the step is not compiled); model and
    guide are then marked with ``config_enumerate``. ``jit=True`` compiles the step with
    Pyro's ``JitTrace_ELBO`` (without enumeration): the same estimate and the same random
    numbers, with the Python of the programs run once.
    """

    num_particles: int = 1
    enumerate: bool | None = None
    jit: bool | None = None
    name: ClassVar[str] = "elbo"

    def __post_init__(self) -> None:
        super().__post_init__()
        for option in ("enumerate", "jit"):
            if getattr(self, option) not in (None, True, False):
                raise ValueError(
                    f"{option} must be None, True or False; got {getattr(self, option)!r}"
                )
        if self.jit and self.enumerate:
            raise ValueError("enumerate=True runs eagerly (TraceEnum_ELBO); got jit=True")

    def for_program(self, info: ProgramInfo) -> ELBO:
        if self.enumerate is None:
            return replace(self, enumerate=bool(info.enumerable_sites) and self.jit is not True)
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
        return _format_2_options(self, jit=bool(self.jit), enumerate=bool(self.enumerate))

    def _compiled_loss(self, model: Callable, guide: Callable, info: ProgramInfo) -> Loss:
        elbo = JitTrace_ELBO(
            num_particles=self.num_particles,
            vectorize_particles=self.num_particles > 1 and info.vectorized,
            max_plate_nesting=info.max_plate_nesting,
            ignore_jit_warnings=True,
        )

        def loss(model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
            value, surrogate = elbo.loss_and_surrogate_loss(model, guide, *args, **kwargs)
            # Not JitTrace_ELBO.differentiable_loss: its value + (surrogate - detached
            # surrogate) differentiates the value too, which doubles a pathwise gradient.
            return value.detach() + (surrogate - surrogate.detach())

        return loss


@dataclass(frozen=True)
class JitELBO(ELBO):
    """``ELBO(num_particles, enumerate=False, jit=True)``, the compiled ELBO, by the name it
    had when only the ELBO compiled."""

    enumerate: bool | None = False
    jit: bool | None = True


@dataclass(frozen=True)
class IWAE(Objective):
    """The importance-weighted bound (Burda et al., 2016) with K = ``num_particles``,
    ``sum_n E[log (1/K) sum_k p(x_n, z_k) / q(z_k given x_n)]``.

    That is the bound of Pyro's ``RenyiELBO(alpha=0)``, computed here as a differentiable
    loss because ``RenyiELBO`` only offers ``loss_and_grads``, which cannot be scaled for
    minibatches. Its gradient is pathwise, so every latent site must be reparameterisable.

    ``gradient`` picks the estimator of the bound's gradient, with log w_k = log p(x, z_k) -
    log q(z_k given x), z_k = g(eps_k, phi), and w~_k = w_k / sum_j w_j:

    - ``"plain"``: the gradient of the bound as computed, sum_k w~_k d log w_k. Its
      signal-to-noise ratio for the guide's parameters falls like 1 / sqrt(K) (Rainforth et
      al., 2018, "Tighter variational bounds are not necessarily better").
    - ``"dreg"``: the doubly reparameterised gradient (Tucker et al., 2019, eq. 5-7): the
      model's parameters theta get the plain sum_k w~_k grad_theta log p(x, z_k); the guide's
      parameters phi get sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi), the path through z
      only. The same expectation, and a signal-to-noise ratio for phi that grows with K.

    Written by hand (Pyro has no DReG): each draw is replayed with its z held fixed, in the
    guide and in the model, so ``log p(x, fixed z)`` carries the direct gradient of theta and
    ``log w - log p(x, fixed z) + log q(fixed z)`` the path gradient alone, whatever the
    parameters' home (modules, the param store, shared); the replays cost about one more
    evaluation of model and guide per step. They draw no latent values; a guide whose own
    network draws noise (dropout) would draw it again in its replay, and the two terms would
    no longer cancel: DReG needs a guide that is a deterministic function of x and the noise
    of its sample sites. The module buffers the replays would move a second time (BatchNorm's
    running statistics) are put back. ``fit`` refuses DReG under a KL weight other than 1, for
    which the estimator above is biased.
    """

    num_particles: int = 1
    gradient: str = "plain"
    name: ClassVar[str] = "iwae"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gradient not in IWAE_GRADIENTS:
            raise ValueError(f"gradient must be one of {IWAE_GRADIENTS}; got {self.gradient!r}")

    def loss(self, info: ProgramInfo) -> Loss:
        """-sum_n [logsumexp_k log w_kn - log K], log w = log p(x, z) - log q(z given x), with
        the gradient of :attr:`gradient`."""
        num_particles, doubly_reparameterised = self.num_particles, self.gradient == "dreg"

        def loss(
            model: Callable, guide: Callable, x: torch.Tensor, *args: Any, **kwargs: Any
        ) -> torch.Tensor:
            inputs, log_weights, direct = Inputs(x, args, kwargs), [], []
            batch_info = replace(info, num_data=x.shape[0])
            for model_trace, guide_trace, count in particle_traces(
                model, guide, inputs, num_particles, batch_info
            ):
                _check_reparameterised(guide_trace)
                parts = _scaled_log_density(model_trace, info) - _scaled_log_density(
                    guide_trace, info
                )
                log_weights.append(parts.expand(count, x.shape[0]))
                if doubly_reparameterised:
                    fixed = _at_fixed_draws(model, guide, inputs, guide_trace, count, batch_info)
                    direct.append(tuple(part.expand(count, x.shape[0]) for part in fixed))
            log_weights = torch.cat(log_weights)  # (K, B)
            bound = (torch.logsumexp(log_weights, 0) - math.log(num_particles)).sum()
            if not doubly_reparameterised:
                return -bound
            model_direct, guide_direct = (torch.cat(parts) for parts in zip(*direct))  # (K, B)
            path = log_weights - model_direct + guide_direct  # gradient through z only
            weights = torch.softmax(log_weights.detach(), 0)  # w~, (K, B)
            surrogate = (weights * model_direct).sum() + (weights**2 * path).sum()
            return -(bound.detach() + surrogate - surrogate.detach())

        return loss

    def options(self) -> dict[str, object]:
        extra = {"gradient": self.gradient} if self.gradient != "plain" else {}
        return _format_2_options(self) | extra


@dataclass(frozen=True)
class FreeBits(_Compilable):
    """The ELBO with free bits (Kingma et al., 2016): the KL term becomes
    ``B sum_j max(floor, KL_j)``, KL_j the analytic KL of latent unit j averaged over the
    minibatch of B (and the particles), so that no unit is pushed below ``floor`` nats.

    The units are the latent dimensions (the event dims) and the indices of any plate other
    than the data plate. It needs factorised Gaussian latent sites in model and guide
    (``Normal`` or ``Normal(...).to_event(...)``). The floor applies to a batch mean, so the
    loss times N / B is not an unbiased estimate of the full-data loss.

    ``jit=True`` compiles the loss and its gradient with ``pyro.ops.jit.trace`` (what Pyro's
    ``JitTrace_ELBO`` does for the ELBO): the same loss and random numbers, with the Python
    of the programs and of this loss run once.
    """

    floor: float
    num_particles: int = 1
    jit: bool | None = None
    name: ClassVar[str] = "elbo"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite_number("floor", self.floor, positive=True)

    def loss(self, info: ProgramInfo) -> Loss:
        """-sum_n E_q log p(x_n given z) + B sum_j max(floor, KL_j)."""
        floor, num_particles = self.floor, self.num_particles

        def loss(
            model: Callable, guide: Callable, x: torch.Tensor, *args: Any, **kwargs: Any
        ) -> torch.Tensor:
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
        return _format_2_options(self, free_bits=self.floor, jit=bool(self.jit))

    def _compiled_loss(self, model: Callable, guide: Callable, info: ProgramInfo) -> Loss:
        floored = self.loss(info)

        def weighted_loss(
            kl_weight: torch.Tensor, x: torch.Tensor, *args: Any, **kwargs: Any
        ) -> torch.Tensor:
            programs = (functools.partial(p, kl_weight) for p in (model, guide))
            return floored(*programs, x, *args, **kwargs)

        compiled = pyro.ops.jit.trace(weighted_loss, ignore_warnings=True)
        return lambda model, guide, *args, **kwargs: compiled(*args, **kwargs)


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


def _interpreted() -> contextlib.AbstractContextManager:
    """Run compiled graphs as recorded, differentiated by torch's autograd: the profiling
    executor's optimised graphs (autodiff subgraphs) step the digits VAE with 8 particles
    10-30% slower than that, and 1 particle no faster."""
    return torch.jit.optimized_execution(False)


def _with_kl_weight(program: Callable) -> Callable:
    """``program`` called as ``(kl_weight, x, *args, **kwargs)``, its latent sites' log-densities
    multiplied by ``kl_weight``: a tensor argument, which a trace takes as an input."""

    def weighted(kl_weight: torch.Tensor, x: torch.Tensor, *args: Any, **kwargs: Any) -> object:
        with _ScaleLatent(kl_weight):
            return program(x, *args, **kwargs)

    return weighted


@contextlib.contextmanager
def _state_kept(model: Callable, guide: Callable) -> Iterator[None]:
    """Run the block with torch's RNG and the programs' module buffers put back after it."""
    with forked_rng(), _buffers_kept(model, guide):
        yield


@contextlib.contextmanager
def _buffers_kept(model: Callable, guide: Callable) -> Iterator[None]:
    """Run the block with the programs' module buffers (BatchNorm's running statistics) put
    back after it. Only the buffers the block changed are written: a buffer the forward pass
    reads (a MADE's masks) must keep its version for the backward pass."""
    buffers = [b for module in modules_of(model, guide) for b in module.buffers()]
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                if not torch.equal(buffer, value):
                    buffer.copy_(value)


def _loss_and_grads(
    loss: Loss,
    model: Callable,
    guide: Callable,
    inputs: Inputs,
    leading: tuple,
    parameters: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """``loss(model, guide, *leading, x, *args, **kwargs)`` from torch's seed 0, and its
    gradient with respect to each of ``parameters`` (zeros where it has none): [loss, *grads]."""
    torch.manual_seed(0)
    value = loss(model, guide, *leading, inputs.x, *inputs.args, **inputs.kwargs)
    parameters = list(parameters)
    gradients = [None] * len(parameters)
    if parameters and value.requires_grad:
        gradients = torch.autograd.grad(value, parameters, allow_unused=True)
    return [value.detach()] + [
        torch.zeros_like(p) if g is None else g for p, g in zip(parameters, gradients)
    ]


def _first_difference(
    expected: list[torch.Tensor], actual: list[torch.Tensor], dtype: torch.dtype
) -> str | None:
    """Where the compiled [loss, *gradients] departs from the eager one beyond float rounding
    (relative to the largest entry of each), or None."""
    tolerance = _CHECK_TOLERANCE.get(dtype, _CHECK_TOLERANCE[torch.float32])
    for index, (wanted, got) in enumerate(zip(expected, actual)):
        allowed = tolerance * max(1.0, wanted.abs().max().item())
        if not bool(((wanted - got).abs() <= allowed).all()):
            what = "loss" if index == 0 else f"gradient of parameter {index - 1}"
            return f"{what}: largest difference {(wanted - got).abs().max().item():.3g}"
    return None


def _scaled(loss: Loss, data_scale: float) -> Loss:
    """``loss`` times ``data_scale``: N / B makes a minibatch's loss estimate the full one."""

    def scaled_loss(
        model: Callable, guide: Callable, batch: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
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


def _at_fixed_draws(
    model: Callable,
    guide: Callable,
    inputs: Inputs,
    guide_trace: Trace,
    count: int,
    info: ProgramInfo,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x, z) and log q(z given x) (scaled, (K or 1, B)) at the draws of ``guide_trace``
    held fixed: model and guide replayed on its values detached, in the particle plate of
    ``count`` particles where they are vectorised. Their gradients are the parameters' direct
    ones, none through z (the replays draw no latent values, and leave the modules' buffers as
    the first run left them)."""
    fixed = guide_trace.copy()
    for name, site in sample_sites(guide_trace):
        fixed.nodes[name] = {**site, "value": site["value"].detach()}
    plate = particle_plate(count, info) if info.vectorized else contextlib.nullcontext()
    with plate, _buffers_kept(model, guide):
        guide_at = trace_program(poutine.replay(guide, trace=fixed), inputs)
        model_at = trace_program(poutine.replay(model, trace=fixed), inputs)
    return _scaled_log_density(model_at, info), _scaled_log_density(guide_at, info)


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
