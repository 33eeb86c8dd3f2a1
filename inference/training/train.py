"""Training a model and its guide by stochastic variational inference: :func:`fit`.

fit is a short loop over small pieces, each in one place:

- what is maximised: an objective value (:mod:`inference.training.objectives`: ELBO, IWAE,
  free bits, eager or compiled), named by fit's ``objective`` and its options, or passed as
  a value;
- the KL weight of each step: a schedule value (:mod:`inference.training.schedules`);
- the options, checked once: :class:`TrainingOptions`;
- saving and resuming: a :class:`~inference.training.checkpoint.Checkpointer`;
- the minibatches, the history and the progress bar: ``_Minibatches``, ``_Recorder`` and
  ``_Progress`` below.

Losses here are in nats per data point: the minibatch loss is scaled by N/B to estimate the
full-data loss and reported divided by N, so histories of data sets of any size compare.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI
from pyro.optim import PyroOptim
from pyro.poutine.trace_struct import Trace
from tqdm.auto import tqdm

from inference._programs import (
    Inputs,
    ProgramInfo,
    checked_inputs,
    evaluation_mode,
    inspect_pair,
    seeded,
)
from inference._validate import check_finite_number, check_positive_int, check_seed, is_int_at_least
from inference.estimators.diagnostics import rate_and_distortion_of
from inference.training.aggressive import AggressiveSteps, AggressiveTraining, aggressive_of
from inference.training.checkpoint import (
    Checkpointer,
    LiveRun,
    TrainingState,
    data_fingerprint,
    load_checkpoint,
    optimizer_name,
    parameter_keys,
)
from inference.training.objectives import (
    ELBO,
    IWAE,
    IWAE_GRADIENTS,
    CompilationError,
    CompilationWarning,
    FreeBits,
    Objective,
)
from inference.training.optim import MultiTensorAdam
from inference.training.schedules import ConstantBeta, KLSchedule, LinearWarmup
from inference.training.schedules import _ScaleLatent as _ScaleLatent  # tests patch it here
from lvm_models._base import seed_32

OBJECTIVES = ("elbo", "iwae")
_LOGGED = ("logged_steps", "beta", "rate", "distortion")  # what History records every log_every
_PROGRESS_EVERY = 25  # steps between progress-bar refreshes
_SMOOTHING = 0.05  # weight of the newest loss in the progress bar's moving average
_EAGER = ELBO()  # steps as every eager objective does: the KL weight by a handler


@dataclass(frozen=True)
class History:
    """The loss of every step and, every ``log_every`` steps, what the ELBO was made of.

    ``losses[i]`` (nats per point) is the loss of step ``steps[i]``. ``beta[j]``, ``rate[j]``
    and ``distortion[j]`` belong to step ``logged_steps[j]``: the KL weight in force, and the
    rate KL(q(z given x) || p(z)) and distortion -E_q log p(x given z) of that step's
    minibatch at the parameters after the step (nats per point, one draw of z).

    With aggressive training (:mod:`inference.training.aggressive`), ``encoder_steps[i]`` is
    the number of encoder-only steps before step i (while the phase lasted), and
    ``mutual_info[j]`` the estimate of I_q(x; z) after step ``mutual_info_steps[j]``.
    """

    steps: tuple[int, ...]
    losses: tuple[float, ...]
    logged_steps: tuple[int, ...] = ()
    beta: tuple[float, ...] = ()
    rate: tuple[float, ...] = ()
    distortion: tuple[float, ...] = ()
    encoder_steps: tuple[int, ...] = ()
    mutual_info_steps: tuple[int, ...] = ()
    mutual_info: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, list]:
        return {name: list(values) for name, values in asdict(self).items()}


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` reports; the trained parameters live in the model and guide.

    :param history: the per-step loss, nats per data point.
    :param final_loss: the mean loss over the last 10% of steps, nats per data point.
    :param seconds: wall-clock training time.
    :param objective: ``"elbo"`` or ``"iwae"``: the name of the objective.
    """

    history: History
    final_loss: float
    seconds: float
    objective: str


def fit(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    *,
    objective: str | Objective = "elbo",
    steps: int = 1000,
    batch_size: int | None = None,
    lr: float = 1e-2,
    num_particles: int = 1,
    seed: int | None = None,
    progress: bool | str = True,
    beta: float = 1.0,
    kl_warmup_steps: int = 0,
    free_bits: float = 0.0,
    optimizer: PyroOptim | None = None,
    callback: Callable[[int, Callable, Callable], object] | None = None,
    callback_every: int = 100,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: str | Path | None = None,
    checkpoint_info: dict[str, object] | None = None,
    jit: bool | None = None,
    log_every: int = 50,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
    enumerate: bool | None = None,
    kl_schedule: KLSchedule | None = None,
    gradient: str = "plain",
    aggressive: bool | AggressiveTraining = False,
) -> FitResult:
    """Fit ``model`` and ``guide`` to ``data`` by maximising a variational bound with ``SVI``.

    ``objective="elbo"`` maximises the ELBO (Kingma and Welling, 2014) with ``Trace_ELBO``,
    ``sum_n E_q[log p(x_n, z) - log q(z given x_n)]``, each expectation estimated with
    ``num_particles`` samples. ``objective="iwae"`` maximises the importance-weighted bound
    (Burda et al., 2016) with K = ``num_particles``,
    ``sum_n E[log (1/K) sum_k p(x_n, z_k) / q(z_k given x_n)]``. That is the bound of Pyro's
    ``RenyiELBO(alpha=0)``, computed here as a differentiable loss because ``RenyiELBO``
    only offers ``loss_and_grads``, which cannot be scaled for minibatches; its gradient is
    pathwise, so every latent site must be reparameterisable. ``objective`` may also be an
    objective value of :mod:`inference.training.objectives` (``ELBO``, ``IWAE``, ``FreeBits``,
    ``JitELBO`` or a new one), which then holds its own particles and options.

    ``jit`` compiles the step, loss and gradient, with ``torch.jit.trace`` (Pyro's
    ``JitTrace_ELBO``; ``pyro.ops.jit.trace`` for free bits), for the ELBO without
    enumeration and for free bits: the KL weight of each step is an input of the trace, so
    every remedy and schedule below works compiled. Before the first step the compiled loss
    and gradient are checked against the eager ones on a second minibatch, with the same
    random numbers; the compiled steps then draw what the eager steps would draw, so the
    same seed gives the same losses to float rounding (about 1e-7 relative in float32).

    Remedies for posterior collapse, all off by default:

    - ``beta`` weights the log-densities of the latent sites, in model and guide, so the
      ELBO becomes ``E_q[log p(x given z)] - beta KL(q(z given x) || p(z))`` (beta-VAE,
      Higgins et al., 2017). Latent sites are found from the trace, never by name.
    - ``kl_warmup_steps`` = W > 0 raises that weight linearly: step t (from 0) uses
      ``beta * min(1, (t + 1) / W)`` (Bowman et al., 2016).
    - ``kl_schedule``, a schedule value of :mod:`inference.training.schedules`, gives the weight of
      each step instead of ``beta`` and ``kl_warmup_steps``: ``CyclicalAnnealing(beta, cycles,
      ratio)`` repeats the warm-up in M cycles (Fu et al., 2019).
    - ``gradient="dreg"`` with ``objective="iwae"`` trains the guide with the doubly
      reparameterised gradient (Tucker et al., 2019), whose signal-to-noise ratio does not
      fall as K grows (:class:`~inference.training.objectives.IWAE`).
    - ``aggressive`` (True, or an :class:`~inference.training.aggressive.AggressiveTraining`)
      trains the encoder alone before each step until it stops improving, as long as the
      mutual information I_q(x; z) rises (He et al., 2019); it changes the order of the
      updates, not the objective.
    - ``free_bits`` = lambda > 0 replaces the KL term by ``N sum_j max(lambda, KL_j)``, KL_j
      the analytic KL of latent dimension j averaged over the minibatch (Kingma et al.,
      2016); it needs factorised Gaussian latent sites in model and guide (``Normal`` or
      ``Normal(...).to_event(...)``) and ``objective="elbo"``.

    Each step draws ``batch_size`` rows without replacement (from a generator seeded by
    ``seed``) and scales the loss by N / batch_size, an unbiased estimate of the full-data
    loss (for the ELBO and IWAE, which are sums over points; not for free bits, whose floor
    applies to a batch mean). Parameters stay in the model's
    and guide's modules or in the param store where a user's ``pyro.module`` put them; the
    param store is never cleared.

    Example::

        model, guide = LinearGaussian(6, 2), AmortizedGaussian(6, 2)
        result = fit(model, guide, x, steps=2000, batch_size=256, seed=0)
        result.final_loss    # -ELBO in nats per point; on average >= -model.log_marginal(x).mean()
        fit(model, guide, x, objective=IWAE(num_particles=5), steps=2000)

    :param data: an (N, D) float tensor.
    :param objective: ``"elbo"``, ``"iwae"``, or an
        :class:`~inference.training.objectives.Objective`
        (then ``num_particles``, ``free_bits``, ``jit`` and ``enumerate`` stay at their
        defaults: the value holds them).
    :param steps: the number of optimisation steps.
    :param batch_size: B, the rows per step; None (default) or N trains full-batch.
    :param lr: the learning rate of the default optimiser.
    :param num_particles: samples per point: of the ELBO's expectations, or K of the IWAE bound.
    :param progress: show a tqdm bar with a moving average of the loss; a string shows it
        labelled with what is trained (``"4b, MADE decoder"``; default ``"fit"``). A resumed
        run's bar starts at the checkpoint's step and says so.
    :param optimizer: any ``pyro.optim.PyroOptim``; default Adam with learning rate ``lr``
        (:class:`~inference.training.optim.MultiTensorAdam`, ``pyro.optim.Adam`` in one foreach
        step).
    :param callback: called as ``callback(step, model, guide)`` after every
        ``callback_every``-th step (step counted from 0), e.g. to record diagnostics.
    :param seed: sets Pyro's RNG (``pyro.set_rng_seed``) and the minibatch generator; the
        same seed and the same initial parameters give the same history and parameters.
    :param checkpoint: a file to write the run's state to (parameters, optimiser state, step,
        torch's RNG state, the minibatch generator, the losses so far), atomically, every
        ``checkpoint_every`` steps (0: only at the end) and after the last step.
    :param resume: a checkpoint to continue from: the same model, guide, data and options
        continue to ``steps`` (the total) and end with the parameters of the uninterrupted run.
    :param checkpoint_info: metadata stored in the checkpoint (the command line keeps its
        arguments there).
    :param log_every: steps between the history's records of beta, rate and distortion.
    :param jit: True: compile the step (``objective="elbo"`` without enumeration, with or
        without free bits), or raise a
        :class:`~inference.training.objectives.CompilationError` saying why it cannot; None:
        compile where that works, otherwise run eagerly with a one-line
        :class:`~inference.training.objectives.CompilationWarning` saying why (resuming, the
        checkpoint's choice); False: eager. A checkpoint records what ran. Compiling costs
        a few eager steps once; the compiled step saves the programs' Python every step.
    :param model_args, model_kwargs: extra arguments of model and guide after the data:
        ``model(x, *model_args, **model_kwargs)``, e.g. labels; a tensor among them whose
        leading dimension is N is minibatched with the data.
    :param data_plate: the data plate's name where the trace cannot tell (see
        :func:`inference.elbo`).
    :param vectorize: evaluate several particles in one extra plate (Pyro's
        ``vectorize_particles``); None (default) does so where the programs give the same
        numbers that way, otherwise particles run one at a time.
    :param enumerate: sum out the discrete latent sites that have enumerate support, exactly,
        with Pyro's ``TraceEnum_ELBO`` (sites in the guide and the model are marked with
        ``config_enumerate``); None (default) does so whenever there are such sites and
        ``objective="elbo"`` without free bits or ``jit=True``.
    :param kl_schedule: a :class:`~inference.training.schedules.KLSchedule` (then ``beta`` and
        ``kl_warmup_steps`` stay at their defaults).
    :param gradient: the estimator of the IWAE bound's gradient, ``"plain"`` (default) or
        ``"dreg"`` (needs ``objective="iwae"``); see
        :class:`~inference.training.objectives.IWAE`.
    :param aggressive: aggressive inference-network training
        (:mod:`inference.training.aggressive`): True for its defaults, or its settings.
    :returns: a :class:`FitResult`. The loss of a step is the negative (beta-weighted) bound
        of its minibatch, times N / B, divided by N: nats per data point, evaluated before
        that step's update.
    """
    inputs = checked_inputs(data, model_args, model_kwargs, name="data")
    options = TrainingOptions.checked(
        inputs.num_data,
        objective=objective,
        num_particles=num_particles,
        free_bits=free_bits,
        jit=jit,
        enumerate=enumerate,
        gradient=gradient,
        aggressive=aggressive,
        beta=beta,
        kl_warmup_steps=kl_warmup_steps,
        kl_schedule=kl_schedule,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        optimizer=optimizer,
        callback_every=callback_every,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
    )
    checkpoints = Checkpointer(
        checkpoint, every=options.checkpoint_every, steps=options.steps, info=checkpoint_info
    )
    if options.seed is not None:
        _seed_everything(options.seed)
    info, trained = _inspect(model, guide, inputs, options, data_plate, vectorize)
    objective = _jit_of_checkpoint(options.objective.for_program(info), resume)
    optimizer = options.optimizer or MultiTensorAdam({"lr": options.lr})
    batches = _Minibatches(inputs, options.batch_size, options.seed)
    objective, svi = _compiled_or_eager(objective, model, guide, optimizer, info, batches, trained)
    resumable = options.resume_options(objective, info, optimizer, inputs)
    run = LiveRun(trained, optimizer, batches.generator, resumable, inputs.x.device)
    record = _Recorder(model, guide, info, options.log_every, checkpoints.resume(resume, run))
    steps = _steps_of(options, svi, objective, batches, model, guide, inputs, info, trained, record)
    first_step, start = len(record.losses), time.perf_counter()
    bar = _Progress(record.losses, options.steps, progress, objective.name)
    for step in bar:
        batch = batches.draw()
        kl_weight = options.kl_schedule(step, options.steps)
        loss = steps(step, batch, kl_weight, step == first_step) / inputs.num_data
        record.add(step, loss, kl_weight, batch)
        bar.show(step, loss)
        if callback is not None and (step + 1) % options.callback_every == 0:
            callback(step, model, guide)
        checkpoints.after_step(step + 1, run, record.losses, record.logged)
    seconds = time.perf_counter() - start
    return FitResult(record.history(), record.final_loss(), seconds, objective.name)


@dataclass(frozen=True)
class TrainingOptions:
    """:func:`fit`'s options, checked once (:meth:`checked`), with the objective and the KL
    weight's schedule as values; see :func:`fit` for each."""

    objective: Objective
    kl_schedule: KLSchedule
    aggressive: AggressiveTraining | None
    steps: int
    batch_size: int | None
    lr: float
    seed: int | None
    optimizer: PyroOptim | None
    callback_every: int
    checkpoint_every: int | None
    log_every: int

    @classmethod
    def checked(
        cls,
        num_data: int,
        *,
        objective: str | Objective,
        num_particles: int,
        free_bits: float,
        jit: bool | None,
        enumerate: bool | None,
        gradient: str,
        aggressive: object,
        beta: float,
        kl_warmup_steps: int,
        kl_schedule: KLSchedule | None,
        steps: int,
        batch_size: int | None,
        lr: float,
        seed: int | None,
        optimizer: PyroOptim | None,
        callback_every: int,
        checkpoint_every: int | None,
        log_every: int,
    ) -> TrainingOptions:
        """The options of a fit on ``num_data`` points.

        :raises ValueError, TypeError: naming the first option that is not what it must be.
        """
        chosen = _objective_of(objective, num_particles, free_bits, jit, enumerate, gradient)
        for name, value in (
            ("steps", steps),
            ("callback_every", callback_every),
            ("log_every", log_every),
        ):
            check_positive_int(name, value)
        for name, value, lowest in (
            ("batch_size", batch_size, 1),
            ("checkpoint_every", checkpoint_every, 0),
        ):
            if value is not None and not is_int_at_least(value, lowest):
                raise ValueError(f"{name} must be None or an integer >= {lowest}; got {value!r}")
        check_seed(seed)
        if batch_size is not None and batch_size > num_data:
            raise ValueError(f"batch_size must be at most N={num_data}; got {batch_size}")
        schedule = _kl_schedule_of(kl_schedule, beta, kl_warmup_steps)
        _check_dreg_weight(chosen, schedule)
        check_finite_number("lr", lr, positive=True)
        if optimizer is not None and not isinstance(optimizer, PyroOptim):
            raise TypeError(
                f"optimizer must be a pyro.optim.PyroOptim; got {type(optimizer).__name__}"
            )
        return cls(
            chosen,
            schedule,
            aggressive_of(aggressive),
            steps,
            batch_size,
            lr,
            seed,
            optimizer,
            callback_every,
            checkpoint_every,
            log_every,
        )

    def resume_options(
        self, objective: Objective, info: ProgramInfo, optimizer: PyroOptim, inputs: Inputs
    ) -> dict[str, object]:
        """What must not change between a run and its resumption: the options that change the
        result (``objective`` as
        :meth:`~inference.training.objectives.Objective.for_program` settled
        it), and the data (:func:`~inference.training.checkpoint.data_fingerprint`)."""
        return {
            **objective.options(),
            **self.kl_schedule.options(),
            **(self.aggressive.options() if self.aggressive else {}),
            "batch_size": self.batch_size,
            "lr": self.lr,
            "vectorized": info.vectorized,
            "optimizer": optimizer_name(optimizer),
            **data_fingerprint(inputs),
        }


def _objective_of(
    objective: str | Objective,
    num_particles: int,
    free_bits: float,
    jit: bool | None,
    enumerate: bool | None,
    gradient: str,
) -> Objective:
    """The objective that fit's keywords name, or the value passed (which then takes none)."""
    if isinstance(objective, Objective):
        given = {"num_particles": num_particles != 1, "free_bits": free_bits != 0}
        given |= {"jit": jit is not None, "enumerate": enumerate is not None}
        given |= {"gradient": gradient != "plain"}
        if any(given.values()):
            raise ValueError(
                f"objective={objective!r} holds its own options; set "
                f"{[name for name, set_here in given.items() if set_here]} on it, not on fit"
            )
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(
            f"objective must be one of {OBJECTIVES} or an inference.training.objectives.Objective; "
            f"got {objective!r}"
        )
    check_finite_number("free_bits", free_bits)
    if jit not in (None, True, False):
        raise ValueError(f"jit must be None, True or False; got {jit!r}")
    if jit and objective != "elbo":
        raise CompilationError(
            f"jit=True compiles objective='elbo' (with or without free bits); got "
            f"objective={objective!r}"
        )
    if gradient not in IWAE_GRADIENTS:
        raise ValueError(f"gradient must be one of {IWAE_GRADIENTS}; got {gradient!r}")
    if gradient != "plain" and objective != "iwae":
        raise ValueError(
            f"gradient={gradient!r} estimates the gradient of the importance-weighted bound: "
            f"it needs objective='iwae'; got objective={objective!r}"
        )
    if free_bits > 0 and objective != "elbo":
        raise ValueError(f"free_bits needs objective='elbo'; got objective={objective!r}")
    if enumerate and (objective != "elbo" or free_bits > 0 or jit):
        raise ValueError(
            "enumerate=True needs objective='elbo' without free bits or jit=True; got "
            f"objective={objective!r}, free_bits={free_bits}, jit={jit}"
        )
    if objective == "iwae":
        return IWAE(num_particles, gradient)
    if free_bits > 0:
        return FreeBits(free_bits, num_particles, jit=jit)
    return ELBO(num_particles, enumerate, jit=jit)


def _check_dreg_weight(objective: Objective, schedule: KLSchedule) -> None:
    """Refuse DReG under a KL weight other than 1: with the latent sites' log-densities
    weighted by beta, the score term it removes is beta times its value at 1, and the path
    coefficient w~^2 would have to be (1 - beta) w~ + beta w~^2 (the estimate is biased)."""
    if isinstance(objective, IWAE) and objective.gradient == "dreg" and schedule != ConstantBeta():
        raise ValueError(
            "gradient='dreg' is the doubly reparameterised gradient of the IWAE bound at a KL "
            f"weight of 1; got {schedule!r} (drop beta, kl_warmup_steps and kl_schedule)"
        )


def _kl_schedule_of(
    kl_schedule: KLSchedule | None, beta: float, kl_warmup_steps: int
) -> KLSchedule:
    """The schedule that fit's ``beta`` and ``kl_warmup_steps`` name, or the value passed
    (which then takes neither)."""
    if kl_schedule is not None:
        if not isinstance(kl_schedule, KLSchedule):
            raise TypeError(
                "kl_schedule must be None or an inference.training.schedules.KLSchedule; "
                f"got {type(kl_schedule).__name__}"
            )
        if beta != 1.0 or kl_warmup_steps != 0:
            raise ValueError(
                f"kl_schedule={kl_schedule!r} sets the KL weight: leave beta and "
                f"kl_warmup_steps at their defaults; got beta={beta!r}, "
                f"kl_warmup_steps={kl_warmup_steps!r}"
            )
        return kl_schedule
    if not is_int_at_least(kl_warmup_steps, 0):
        raise ValueError(f"kl_warmup_steps must be an integer >= 0; got {kl_warmup_steps!r}")
    return LinearWarmup(beta, kl_warmup_steps) if kl_warmup_steps else ConstantBeta(beta)


def _seed_everything(seed: int) -> None:
    """``pyro.set_rng_seed`` for every seed in [0, 2**63 - 1]: seeds of 2**32 and above are
    hashed to the 32 bits torch's and NumPy's generators use (:func:`seed_32`)."""
    seed = seed_32(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _inspect(
    model: Callable,
    guide: Callable,
    inputs: Inputs,
    options: TrainingOptions,
    data_plate: str | None,
    vectorize: bool | None,
) -> tuple[ProgramInfo, dict[str, torch.Tensor]]:
    """The programs' layout (:func:`~inference._programs.inspect_pair`), and the parameters
    SVI will step, keyed as checkpoints key them (:func:`parameter_keys`)."""
    with poutine.trace(param_only=True) as capture:
        info = inspect_pair(
            model,
            guide,
            inputs,
            data_plate=data_plate,
            vectorize=vectorize,
            allow_global=True,
            allow_enumerated=options.objective.enumerate is not False,
        )
    if info.global_sites and options.batch_size not in (None, inputs.num_data):
        raise ValueError(
            f"the model has global latent site(s) {list(info.global_sites)}: the N / B scaling "
            "of a minibatch would scale them too; train them full-batch (batch_size=None)"
        )
    return info, parameter_keys(model, guide, _unconstrained_params(capture.trace))


def _unconstrained_params(trace: Trace) -> list[torch.Tensor]:
    """The tensors SVI steps: the unconstrained values of the param sites of a trace."""
    return list(
        {id(p): p for p in (s["value"].unconstrained() for s in trace.nodes.values())}.values()
    )


class _Minibatches:
    """The data of each step: ``batch_size`` points drawn without replacement (with their
    per-point arguments) from a generator seeded by ``seed`` (by torch's RNG when None); or,
    full-batch, all of them in order (a guide with one parameter per row, such as MeanField,
    needs every row in place). ``data_scale`` is N / B. The generator is a CPU one whatever
    the data's device (the same seed draws the same minibatches everywhere); each step's
    indices go to the data's device in one copy."""

    def __init__(self, inputs: Inputs, batch_size: int | None, seed: int | None) -> None:
        self.inputs, self.batch_size = inputs, batch_size
        self.data_scale = inputs.num_data / (batch_size or inputs.num_data)
        self.generator = None
        if batch_size is not None and batch_size != inputs.num_data:
            self.generator = torch.Generator().manual_seed(
                seed if seed is not None else int(torch.randint(2**62, ()))
            )

    def draw(self) -> Inputs:
        if self.generator is None:
            return self.inputs
        order = torch.randperm(self.inputs.num_data, generator=self.generator)
        return self.inputs.subset(order[: self.batch_size].to(self.inputs.x.device))

    def probes(self) -> tuple[Inputs, Inputs]:
        """Two minibatches of the training's shape, the first and the last rows (the data
        twice, full-batch), drawn without touching the generator: to compile a step on."""
        if self.generator is None:
            return self.inputs, self.inputs
        num_data, size, device = self.inputs.num_data, self.batch_size, self.inputs.x.device
        return tuple(
            self.inputs.subset(torch.arange(start, start + size, device=device))
            for start in (0, num_data - size)
        )


def _jit_of_checkpoint(objective: Objective, resume: str | Path | None) -> Objective:
    """With ``jit=None``, a resumed run takes the path its checkpoint records (``jit`` among
    its options), so it continues as it began."""
    if objective.jit is not None or resume is None:
        return objective
    recorded = load_checkpoint(resume).options.get("jit")
    return replace(objective, jit=recorded) if isinstance(recorded, bool) else objective


def _compiled_or_eager(
    objective: Objective,
    model: Callable,
    guide: Callable,
    optimizer: PyroOptim,
    info: ProgramInfo,
    batches: _Minibatches,
    trained: dict[str, torch.Tensor],
) -> tuple[Objective, SVI]:
    """The objective with ``jit`` settled to what runs, and the SVI fit steps.

    ``jit`` True or None compiles and checks the step
    (:meth:`~inference.training.objectives.ELBO.checked_svi`); where that fails, True
    raises its :class:`CompilationError` and None runs eagerly, with a warning saying why.
    """
    if objective.jit is False:
        return objective, objective.svi(model, guide, optimizer, info, batches.data_scale)
    try:
        svi = objective.checked_svi(
            model,
            guide,
            optimizer,
            info,
            batches.data_scale,
            batches.probes(),
            list(trained.values()),
        )
        return replace(objective, jit=True), svi
    except CompilationError as error:
        if objective.jit:
            raise CompilationError(f"jit=True cannot compile this step: {error}") from error
        warnings.warn(f"fit runs eagerly: {error}", CompilationWarning, stacklevel=3)
        eager = replace(objective, jit=False)
        return eager, eager.svi(model, guide, optimizer, info, batches.data_scale)


def _steps_of(
    options: TrainingOptions,
    svi: SVI,
    objective: Objective,
    batches: _Minibatches,
    model: Callable,
    guide: Callable,
    inputs: Inputs,
    info: ProgramInfo,
    trained: dict[str, torch.Tensor],
    record: _Recorder,
) -> Callable[[int, Inputs, float, bool], float]:
    """What one step of fit is, ``steps(step, batch, kl_weight, validate)``: a step of ``svi``,
    or of aggressive training where ``options`` ask for it."""

    def svi_step(chosen: SVI, batch: Inputs, kl_weight: float, validate: bool) -> float:
        return _svi_step(chosen, batch, kl_weight, validate, objective)

    if options.aggressive is None:
        return lambda step, batch, kl_weight, validate: svi_step(svi, batch, kl_weight, validate)
    return AggressiveSteps(
        options.aggressive,
        svi,
        svi_step,
        batches.draw,
        model,
        guide,
        inputs,
        info,
        trained.values(),
        options.batch_size,
        record.logged,
        options.seed,
    ).step


def _svi_step(
    svi: SVI, batch: Inputs, latent_scale: float, validate: bool, objective: Objective = _EAGER
) -> float:
    """One step of ``objective`` (:meth:`~inference.training.objectives.Objective.step`), the
    latent sites' log-densities scaled by ``latent_scale``.

    Pyro's and torch's validation (argument and support checks, shape checks of the traces)
    run on the first step of a call only: the model and guide have been checked on all the
    data by then, and on small networks the checks cost a fifth of the step.
    """
    with pyro.validation_enabled(validate):
        return objective.step(svi, batch, latent_scale)


class _Recorder:
    """The history as training makes it: the loss of every step (a resumed run starts from
    its checkpoint's), and every ``every`` steps the KL weight in force and the rate and
    distortion of the step's minibatch.

    Rate and distortion are drawn from a random stream of their own, so recording them leaves
    the training's random numbers as they were. Logging is never allowed to end a run that
    training alone would finish: if it fails (a program that can only be trained, not
    diagnosed), it warns once, naming the error, and stops.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        info: ProgramInfo,
        every: int,
        resumed: TrainingState | None,
    ) -> None:
        self.model, self.guide, self.info, self.every = model, guide, info, every
        self.losses: list[float] = resumed.losses if resumed else []
        self.logged: dict[str, list] = resumed.logged if resumed else {name: [] for name in _LOGGED}
        self.logging = True

    def add(self, step: int, loss: float, kl_weight: float, batch: Inputs) -> None:
        """Record the loss of step ``step`` and, when due, its rate and distortion.

        :raises ValueError: when the loss is not finite: training diverged.
        """
        if not math.isfinite(loss):
            raise ValueError(
                f"training diverged: the loss is {loss} at step {step} (try a lower lr)"
            )
        self.losses.append(loss)
        if not self.logging or (step + 1) % self.every:
            return
        rate_and_distortion = self._rate_and_distortion(step, batch)
        if rate_and_distortion is not None:
            for name, value in zip(_LOGGED, (step, kl_weight, *rate_and_distortion)):
                self.logged[name].append(value)

    def _rate_and_distortion(self, step: int, batch: Inputs) -> tuple[float, float] | None:
        batch_info = replace(self.info, num_data=batch.num_data)
        try:
            with (
                torch.no_grad(),
                seeded(step),
                pyro.validation_enabled(False),
                evaluation_mode(self.model, self.guide),
            ):
                return rate_and_distortion_of(
                    self.model, self.guide, batch, batch_info, num_particles=1
                )
        except Exception as error:  # logging is optional; training goes on
            self.logging = False
            warnings.warn(
                f"fit stopped logging rate and distortion at step {step}: "
                f"{type(error).__name__}: {str(error).splitlines()[0]}",
                stacklevel=4,
            )
            return None

    def history(self) -> History:
        logged = {name: tuple(values) for name, values in self.logged.items()}
        return History(tuple(range(len(self.losses))), tuple(self.losses), **logged)

    def final_loss(self) -> float:
        """The mean loss over the last 10% of steps."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail)


class _Progress:
    """A tqdm bar over all the steps, from the first one left (a resumed run's bar starts at
    its checkpoint's step), labelled with what is trained and the objective, showing a moving
    average of the loss."""

    def __init__(self, losses: list[float], steps: int, shown: bool | str, name: str) -> None:
        label = shown if isinstance(shown, str) else "fit"
        description = f"{label} ({name})"
        if losses:
            description += f", resumed from step {len(losses)}"
        self.bar = tqdm(
            range(len(losses), steps),
            total=steps,
            initial=len(losses),
            disable=not shown,
            desc=description,
        )
        self.smoothed = losses[-1] if losses else math.nan

    def __iter__(self) -> Iterator[int]:
        return iter(self.bar)

    def show(self, step: int, loss: float) -> None:
        self.smoothed = loss if step == 0 else self.smoothed + _SMOOTHING * (loss - self.smoothed)
        if step % _PROGRESS_EVERY == 0:
            self.bar.set_postfix(loss=f"{self.smoothed:.4g}", refresh=False)
