"""Aggressive training of the inference network (He et al., 2019, "Lagging inference networks
and posterior collapse in variational autoencoders"; reference code jxhe/vae-lagging-encoder).

Early in training the encoder lags behind the true posterior, which moves as the decoder
learns; the decoder then learns to ignore a latent that carries nothing yet. He et al.
train the encoder alone until it catches up before each decoder step, and stop doing so once
the mutual information I_q(x; z) stops rising:

- while aggressive, each step of fit first takes encoder-only steps, on its minibatch and
  then on fresh ones, until the summed loss of a block of ``check_every`` of them is higher
  than the previous block's (or ``max_inner_steps`` are taken); then a decoder-only step on
  the step's minibatch;
- after the first step and every ``mi_every`` steps from there (one epoch by default), as the
  reference does, I_q(x; z) is estimated on a fixed seeded subset of the training data (the
  reference uses held-out data, which fit does not have); the first estimate below the one
  before (0 before the first) ends the aggressive phase for good, and fit takes ordinary
  steps of both from then on.

The objective is unchanged: only the order of the updates is. The encoder is the guide's
parameters that the model does not use; the decoder is the rest of what fit trains (a
parameter the guide shares with the model counts as decoder). A model with no parameters of
its own has no decoder to alternate with: fit refuses it. One optimiser steps both, each
parameter with its own state; a learning-rate schedule of
:class:`~inference.training.optim.MultiTensorAdam` follows the decoder's step count, which
is fit's step, so inner steps do not advance it.

Example::

    fit(model, guide, x, steps=3000, batch_size=64, aggressive=True)
    fit(model, guide, x, aggressive=AggressiveTraining(max_inner_steps=50))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from pyro.optim import PyroOptim

from inference._programs import Inputs, ProgramInfo, evaluation_mode, seeded
from inference._validate import check_positive_int
from inference.estimators.diagnostics import mutual_information_of
from inference.training.optim import MultiTensorAdam
from lvm_models._base import seed_32

LOGGED = ("encoder_steps", "mutual_info_steps", "mutual_info")  # what History gains


@dataclass(frozen=True)
class AggressiveTraining:
    """The settings of aggressive inference-network training (see the module's text).

    :ivar max_inner_steps: the most encoder-only steps before one decoder step (the
        reference's loop takes at most 99 of them).
    :ivar check_every: the size of the blocks of encoder-only steps whose summed losses are
        compared; the inner steps stop at the first block that did not improve (15, as the
        reference).
    :ivar mi_every: steps of fit between estimates of I_q(x; z), the first after step 0; None
        (default) is one epoch, ceil(N / B) steps (one, full-batch), the reference's choice.
    :ivar mi_points: the size of the fixed subset of the data I_q(x; z) is estimated on (the
        aggregate posterior is its mixture, so the estimate can read at most log of it).
    """

    max_inner_steps: int = 100
    check_every: int = 15
    mi_every: int | None = None
    mi_points: int = 500

    def __post_init__(self) -> None:
        for name in ("max_inner_steps", "check_every", "mi_points"):
            check_positive_int(name, getattr(self, name))
        if self.mi_every is not None:
            check_positive_int("mi_every", self.mi_every)

    def options(self) -> dict[str, object]:
        """What a checkpoint records of it (a resumed run must train the same way)."""
        return {"aggressive": repr(self)}


def aggressive_of(value: object) -> AggressiveTraining | None:
    """fit's ``aggressive`` as settings: True is the defaults, False or None is off.

    :raises TypeError: for anything else.
    """
    if value is True:
        return AggressiveTraining()
    if value is False or value is None:
        return None
    if isinstance(value, AggressiveTraining):
        return value
    raise TypeError(
        f"aggressive must be a bool or an AggressiveTraining; got {type(value).__name__}"
    )


class StepFn(Protocol):
    """One step of an SVI on a minibatch with a KL weight (validation on or off): its loss."""

    def __call__(self, svi: SVI, batch: Inputs, kl_weight: float, validate: bool) -> float: ...


class AggressiveSteps:
    """fit's steps with aggressive training: :meth:`step` is one step of fit.

    Its record lives in ``logged`` (the history fit checkpoints): ``encoder_steps`` (the
    inner steps taken before each aggressive step), ``mutual_info`` and the steps it was
    estimated after. A resumed run reads from them whether the phase had ended.
    """

    def __init__(
        self,
        settings: AggressiveTraining,
        svi: SVI,
        step_fn: StepFn,
        draw: Callable[[], Inputs],
        model: Callable,
        guide: Callable,
        inputs: Inputs,
        info: ProgramInfo,
        parameters: Iterable[torch.Tensor],
        batch_size: int | None,
        logged: dict[str, list],
        seed: int | None,
    ) -> None:
        self.settings, self.step_fn, self.draw = settings, step_fn, draw
        self.model, self.guide, self.logged = model, guide, logged
        self.seed = seed_32(seed) if seed is not None else 0
        self.probe = _probe(inputs, settings.mi_points, self.seed)
        self.probe_info = replace(info, num_data=self.probe.num_data)
        self.mi_every = settings.mi_every or math.ceil(
            inputs.num_data / (batch_size or inputs.num_data)
        )
        encoder = _parameters_of(guide, inputs, self.seed) - _parameters_of(
            model, inputs, self.seed
        )
        decoder = [p for p in parameters if p not in encoder]
        if not decoder:
            raise ValueError(
                "aggressive training alternates encoder-only and decoder-only steps: the model "
                "has no parameters of its own to train"
            )
        self.encoder_svi = _stepping(svi, encoder, clock=decoder)
        self.decoder_svi = _stepping(svi, decoder, clock=decoder)
        # After the phase too the schedule follows fit's steps, not the encoder's many.
        self.joint_svi = _stepping(svi, None, clock=decoder)
        for name in LOGGED:
            logged.setdefault(name, [])
        if self.aggressive:
            self._mutual_information()  # fail before training if it cannot be estimated

    @property
    def aggressive(self) -> bool:
        """Whether the phase goes on: read from the estimates so far (a resumed run's too)."""
        return _still_aggressive(self.logged["mutual_info"])

    def step(self, step: int, batch: Inputs, kl_weight: float, validate: bool) -> float:
        """Step ``step`` of fit on ``batch``: encoder-only steps then a decoder-only one while
        aggressive, an ordinary step after; its loss (of the decoder's step)."""
        if not self.aggressive:
            return self.step_fn(self.joint_svi, batch, kl_weight, validate)
        self.logged["encoder_steps"].append(self._encoder_steps(batch, kl_weight, validate))
        loss = self.step_fn(self.decoder_svi, batch, kl_weight, False)
        if step % self.mi_every == 0:
            self._check(step)
        return loss

    def _encoder_steps(self, batch: Inputs, kl_weight: float, validate: bool) -> int:
        """Encoder-only steps, the first on ``batch``, then on fresh minibatches, until they
        stop improving (:func:`steps_until_no_improvement`); the number taken."""

        def encoder_step(taken: int) -> float:
            current = batch if taken == 0 else self.draw()
            return self.step_fn(self.encoder_svi, current, kl_weight, validate and taken == 0)

        return steps_until_no_improvement(
            encoder_step, self.settings.max_inner_steps, self.settings.check_every
        )

    def _check(self, step: int) -> None:
        """Record I_q(x; z) after ``step``; the aggressive phase ends where it fell."""
        estimate = self._mutual_information()
        self.logged["mutual_info_steps"].append(step)
        self.logged["mutual_info"].append(estimate)

    def _mutual_information(self) -> float:
        """I_q(x; z) on the probe points, with the same draws every time (the estimates
        compared are then paired), in evaluation mode, leaving the training's RNG alone."""
        with (
            torch.no_grad(),
            seeded(self.seed),
            pyro.validation_enabled(False),
            evaluation_mode(self.model, self.guide),
        ):
            return mutual_information_of(self.guide, self.probe, self.probe_info)


def steps_until_no_improvement(step: Callable[[int], float], most: int, every: int) -> int:
    """Call ``step(taken)`` (a loss) until a block of ``every`` calls sums to more than the
    block before, or ``most`` calls are made; the number made. The reference's test, on
    summed rather than per-word losses (its blocks are of equal size here)."""
    previous, block, taken = math.inf, 0.0, 0
    while taken < most:
        block += step(taken)
        taken += 1
        if taken % every == 0:
            if block > previous:
                break
            previous, block = block, 0.0
    return taken


def _still_aggressive(mutual_info: list[float]) -> bool:
    """Whether the phase goes on: I_q never fell between consecutive estimates (from 0)."""
    return all(later >= earlier for earlier, later in zip([0.0, *mutual_info], mutual_info))


def _probe(inputs: Inputs, size: int, seed: int) -> Inputs:
    """A fixed seeded subset of ``size`` of the points (all of them where there are fewer)."""
    if size >= inputs.num_data:
        return inputs
    order = torch.randperm(inputs.num_data, generator=torch.Generator().manual_seed(seed))
    return inputs.subset(order[:size].to(inputs.x.device))


def _parameters_of(program: Callable, inputs: Inputs, seed: int) -> set[torch.Tensor]:
    """The tensors SVI steps for a program (model or guide): its param sites' unconstrained
    values, from one run that leaves the RNG and the modules' buffers alone."""
    with (
        torch.no_grad(),
        seeded(seed),
        evaluation_mode(program),
        poutine.trace(param_only=True) as capture,
    ):
        inputs.run(program)
    return {site["value"].unconstrained() for site in capture.trace.nodes.values()}


def _stepping(
    svi: SVI, parameters: Iterable[torch.Tensor] | None, clock: list[torch.Tensor]
) -> SVI:
    """``svi`` (the same programs and loss, compiled or not) stepping only ``parameters``
    (None: all it hands the optimiser), its schedule clocked by ``clock``."""
    restricted = copy.copy(svi)
    restricted.optim = _Only(svi.optim, parameters, clock)
    return restricted


class _Only(PyroOptim):
    """A view of ``optimizer`` that steps only ``parameters`` of those SVI hands it (None:
    all); a :class:`MultiTensorAdam` learning-rate schedule reads its step from ``clock``."""

    def __init__(
        self,
        optimizer: PyroOptim,
        parameters: Iterable[torch.Tensor] | None,
        clock: list[torch.Tensor],
    ) -> None:
        # Not PyroOptim.__init__: this holds no optimiser state of its own.
        self.optimizer, self.clock = optimizer, clock
        self.parameters = None if parameters is None else set(parameters)

    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        chosen = [p for p in params if self.parameters is None or p in self.parameters]
        if isinstance(self.optimizer, MultiTensorAdam) and self.clock:
            kwargs = {**kwargs, "clock": self.clock}
        self.optimizer(chosen, *args, **kwargs)
