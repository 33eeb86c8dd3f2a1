"""Training a model and its guide by stochastic variational inference: :func:`fit`.

Losses here are in nats per data point: the minibatch loss is scaled by N/B to estimate the
full-data loss and reported divided by N, so histories of data sets of any size compare.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.optim import PyroOptim
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, Normal, kl_divergence
from tqdm.auto import tqdm

from inference._programs import (
    Inputs,
    ProgramInfo,
    checked_inputs,
    evaluation_mode,
    inspect_pair,
    particle_traces,
    sample_sites,
    seeded,
    site_log_prob_per_point,
)
from inference._validate import check_positive_int, check_seed
from inference.checkpoint import (
    capture_state,
    check_checkpoint_path,
    load_checkpoint,
    parameter_keys,
    restore_state,
    save_checkpoint,
)
from inference.diagnostics import rate_and_distortion_of
from inference.optim import MultiTensorAdam
from lvm_models._base import seed_32

OBJECTIVES = ("elbo", "iwae")
_LOGGED = ("logged_steps", "beta", "rate", "distortion")  # what History records every log_every
_PROGRESS_EVERY = 25  # steps between progress-bar refreshes
_SMOOTHING = 0.05  # weight of the newest loss in the progress bar's moving average

Loss = Callable[[Callable, Callable, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class History:
    """The loss of every step and, every ``log_every`` steps, what the ELBO was made of.

    ``losses[i]`` (nats per point) is the loss of step ``steps[i]``. ``beta[j]``, ``rate[j]``
    and ``distortion[j]`` belong to step ``logged_steps[j]``: the KL weight in force, and the
    rate KL(q(z given x) || p(z)) and distortion -E_q log p(x given z) of that step's
    minibatch at the parameters after the step (nats per point, one draw of z).
    """

    steps: tuple[int, ...]
    losses: tuple[float, ...]
    logged_steps: tuple[int, ...] = ()
    beta: tuple[float, ...] = ()
    rate: tuple[float, ...] = ()
    distortion: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, list]:
        return {name: list(values) for name, values in asdict(self).items()}


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` reports; the trained parameters live in the model and guide.

    :param history: the per-step loss, nats per data point.
    :param final_loss: the mean loss over the last 10% of steps, nats per data point.
    :param seconds: wall-clock training time.
    :param objective: ``"elbo"`` or ``"iwae"``.
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
    objective: str = "elbo",
    steps: int = 1000,
    batch_size: int | None = None,
    lr: float = 1e-2,
    num_particles: int = 1,
    seed: int | None = None,
    progress: bool = True,
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
    jit: bool = False,
    log_every: int = 50,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
    enumerate: bool | None = None,
) -> FitResult:
    """Fit ``model`` and ``guide`` to ``data`` by maximising a variational bound with ``SVI``.

    ``objective="elbo"`` maximises the ELBO (Kingma and Welling, 2014) with ``Trace_ELBO``,
    ``sum_n E_q[log p(x_n, z) - log q(z given x_n)]``, each expectation estimated with
    ``num_particles`` samples. ``objective="iwae"`` maximises the importance-weighted bound
    (Burda et al., 2016) with K = ``num_particles``,
    ``sum_n E[log (1/K) sum_k p(x_n, z_k) / q(z_k given x_n)]``. That is the bound of Pyro's
    ``RenyiELBO(alpha=0)``, computed here as a differentiable loss because ``RenyiELBO``
    only offers ``loss_and_grads``, which cannot be scaled for minibatches; its gradient is
    pathwise, so every latent site must be reparameterisable.

    Remedies for posterior collapse, all off by default:

    - ``beta`` weights the log-densities of the latent sites, in model and guide, so the
      ELBO becomes ``E_q[log p(x given z)] - beta KL(q(z given x) || p(z))`` (beta-VAE,
      Higgins et al., 2017). Latent sites are found from the trace, never by name.
    - ``kl_warmup_steps`` = W > 0 raises that weight linearly: step t (from 0) uses
      ``beta * min(1, (t + 1) / W)`` (Bowman et al., 2016).
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

    :param data: an (N, D) float tensor.
    :param steps: the number of optimisation steps.
    :param batch_size: B, the rows per step; None (default) or N trains full-batch.
    :param lr: the learning rate of the default optimiser.
    :param num_particles: samples per point: of the ELBO's expectations, or K of the IWAE bound.
    :param progress: show a tqdm bar with a moving average of the loss.
    :param optimizer: any ``pyro.optim.PyroOptim``; default Adam with learning rate ``lr``
        (:class:`~inference.optim.MultiTensorAdam`, ``pyro.optim.Adam`` in one foreach step).
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
    :param jit: compile the ELBO with Pyro's ``JitTrace_ELBO`` (``objective="elbo"``, a fixed
        beta, no free bits): the same estimate with the Python of the tracing run once, for
        programs of static structure. Compiling takes a second or two.
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
        ``objective="elbo"`` without free bits or jit.
    :returns: a :class:`FitResult`. The loss of a step is the negative (beta-weighted) bound
        of its minibatch, times N / B, divided by N: nats per data point, evaluated before
        that step's update.
    """
    inputs = checked_inputs(data, model_args, model_kwargs, name="data")
    x = inputs.x
    num_data = x.shape[0]
    _check_options(
        num_data,
        objective=objective,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        num_particles=num_particles,
        seed=seed,
        beta=beta,
        kl_warmup_steps=kl_warmup_steps,
        free_bits=free_bits,
        optimizer=optimizer,
        callback_every=callback_every,
        checkpoint_every=checkpoint_every,
        jit=jit,
        log_every=log_every,
    )
    if checkpoint is not None:
        check_checkpoint_path(checkpoint)
    if seed is not None:
        _seed_everything(seed)
    with poutine.trace(param_only=True) as capture:
        info = inspect_pair(
            model,
            guide,
            inputs,
            data_plate=data_plate,
            vectorize=vectorize,
            allow_global=True,
            allow_enumerated=enumerate is not False,
        )
    if info.global_sites and batch_size not in (None, num_data):
        raise ValueError(
            f"the model has global latent site(s) {list(info.global_sites)}: the N / B scaling "
            "of a minibatch would scale them too; train them full-batch (batch_size=None)"
        )
    trained = parameter_keys(model, guide, _unconstrained_params(capture.trace))
    optimizer = optimizer or MultiTensorAdam({"lr": lr})
    enumerated = _enumerates(enumerate, info, objective, free_bits, jit)
    # SVI gets the programs marked for enumeration where it sums discrete latents out.
    programs = (model, guide)
    if enumerated:
        programs = tuple(config_enumerate(p, default="parallel") for p in programs)
    if jit:
        svi = _jit_svi(
            *programs, optimizer, num_particles, info, num_data / (batch_size or num_data)
        )
    else:
        loss = _objective_loss(objective, num_particles, free_bits, info, enumerated)
        svi = SVI(*programs, optimizer, loss=_scaled_to_full_data(loss, num_data))
    batch_generator = _batch_generator(num_data, batch_size, seed)
    options = _resume_options(
        inputs,
        objective=objective,
        batch_size=batch_size,
        lr=lr,
        num_particles=num_particles,
        beta=beta,
        kl_warmup_steps=kl_warmup_steps,
        free_bits=free_bits,
        jit=jit,
        enumerate=enumerated,
        vectorized=info.vectorized,
        optimizer=_optimizer_name(optimizer),
    )
    losses: list[float] = []
    logged: dict[str, list] = {name: [] for name in _LOGGED}
    if resume is not None:
        state = load_checkpoint(resume)
        if state.step > steps:
            raise ValueError(f"steps ({steps}) is below the checkpoint's step ({state.step})")
        restore_state(state, trained, optimizer, batch_generator, options)
        losses, logged = state.losses, state.logged

    smoothed = losses[-1] if losses else math.nan
    first_step = len(losses)
    start = time.perf_counter()
    bar = tqdm(range(len(losses), steps), disable=not progress, desc=f"fit ({objective})")
    log = _Logging(model, guide, info, log_every)
    for step in bar:
        batch = _minibatch(inputs, batch_size, batch_generator)
        latent_scale = _beta_at(step, beta, kl_warmup_steps)
        losses.append(_svi_step(svi, batch, latent_scale, step == first_step) / num_data)
        if not math.isfinite(losses[-1]):
            raise ValueError(
                f"training diverged: the loss is {losses[-1]} at step {step} (try a lower lr)"
            )
        smoothed = losses[-1] if step == 0 else smoothed + _SMOOTHING * (losses[-1] - smoothed)
        if step % _PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{smoothed:.4g}", refresh=False)
        record = log.record(step, latent_scale, batch)
        if record is not None:
            for name, value in zip(_LOGGED, record):
                logged[name].append(value)
        if callback is not None and (step + 1) % callback_every == 0:
            callback(step, model, guide)
        if checkpoint is not None and (
            step + 1 == steps or (checkpoint_every and (step + 1) % checkpoint_every == 0)
        ):
            state = capture_state(
                step + 1,
                trained,
                optimizer,
                batch_generator,
                losses,
                logged,
                options,
                checkpoint_info,
            )
            save_checkpoint(checkpoint, state)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, steps // 10) :]
    history = History(
        tuple(range(steps)), tuple(losses), **{name: tuple(v) for name, v in logged.items()}
    )
    return FitResult(history, sum(tail) / len(tail), seconds, objective)


class _Logging:
    """Rate and distortion of the minibatch every ``log_every`` steps, for the history.

    Drawn from a random stream of their own, so recording them leaves the training's random
    numbers as they were. Logging is never allowed to end a run that training alone would
    finish: if it fails (a program that can only be trained, not diagnosed), it warns once,
    naming the error, and stops.
    """

    def __init__(self, model: Callable, guide: Callable, info: ProgramInfo, every: int) -> None:
        self.model, self.guide, self.info, self.every = model, guide, info, every
        self.failed = False

    def record(self, step: int, latent_scale: float, batch: Inputs) -> tuple | None:
        if self.failed or (step + 1) % self.every:
            return None
        batch_info = replace(self.info, num_data=batch.num_data)
        try:
            with (
                torch.no_grad(),
                seeded(step),
                pyro.validation_enabled(False),
                evaluation_mode(self.model, self.guide),
            ):
                rate, distortion = rate_and_distortion_of(
                    self.model, self.guide, batch, batch_info, num_particles=1
                )
        except Exception as error:  # logging is optional; training goes on
            self.failed = True
            warnings.warn(
                f"fit stopped logging rate and distortion at step {step}: "
                f"{type(error).__name__}: {str(error).splitlines()[0]}",
                stacklevel=3,
            )
            return None
        return step, latent_scale, rate, distortion


def _enumerates(
    requested: bool | None, info: ProgramInfo, objective: str, free_bits: float, jit: bool
) -> bool:
    """Whether fit sums out discrete latents by enumeration (see ``enumerate`` in :func:`fit`)."""
    enumerable = info.enumerable_sites
    usable = objective == "elbo" and free_bits == 0 and not jit
    if requested is None:
        return bool(enumerable) and usable
    if requested and not usable:
        raise ValueError(
            "enumerate=True needs objective='elbo' without free bits or jit; got "
            f"objective={objective!r}, free_bits={free_bits}, jit={jit}"
        )
    if requested and not enumerable:
        raise ValueError("enumerate=True: the model has no discrete latent site to enumerate")
    return bool(requested)


def _svi_step(svi: SVI, batch: Inputs, latent_scale: float, validate: bool) -> float:
    """One SVI step, the latent sites' log-densities scaled by ``latent_scale``.

    Pyro's and torch's validation (argument and support checks, shape checks of the traces)
    run on the first step of a call only: the model and guide have been checked on all the
    data by then, and on small networks the checks cost a fifth of the step.
    """
    scaling = _ScaleLatent(latent_scale) if latent_scale != 1.0 else contextlib.nullcontext()
    with pyro.validation_enabled(validate), scaling:
        return svi.step(batch.x, *batch.args, **batch.kwargs)


def _unconstrained_params(trace: Trace) -> list[torch.Tensor]:
    """The tensors SVI steps: the unconstrained values of the param sites of a trace."""
    return list(
        {id(p): p for p in (s["value"].unconstrained() for s in trace.nodes.values())}.values()
    )


def _resume_options(inputs: Inputs, **training: object) -> dict[str, object]:
    """What must not change between a run and its resumption: the options that change the
    result, and the data (with the extra arguments) by shape and SHA-256 of their bytes."""
    return {**training, "data_shape": list(inputs.x.shape), "data_sha256": _fingerprint(inputs)}


def _fingerprint(inputs: Inputs) -> str:
    """SHA-256 of the bytes of x and of every tensor among the extra arguments."""
    digest = hashlib.sha256()
    values = [inputs.x, *inputs.args, *(inputs.kwargs[k] for k in sorted(inputs.kwargs))]
    for value in values:
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _optimizer_name(optimizer: PyroOptim) -> str:
    """The torch optimiser behind a ``PyroOptim`` (a run's state belongs to it)."""
    constructor = getattr(optimizer, "pt_optim_constructor", None)
    return getattr(constructor, "__name__", type(optimizer).__name__)


def _check_options(
    num_data: int,
    *,
    objective: str,
    steps: int,
    batch_size: int | None,
    lr: float,
    num_particles: int,
    seed: int | None,
    beta: float,
    kl_warmup_steps: int,
    free_bits: float,
    optimizer: PyroOptim | None,
    callback_every: int,
    checkpoint_every: int,
    jit: bool,
    log_every: int,
) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    for name, value in (
        ("steps", steps),
        ("num_particles", num_particles),
        ("callback_every", callback_every),
        ("log_every", log_every),
    ):
        check_positive_int(name, value)
    for name, value, lowest in (
        ("batch_size", batch_size, 1),
        ("checkpoint_every", checkpoint_every, 0),
    ):
        if value is not None and not _is_int_at_least(value, lowest):
            raise ValueError(f"{name} must be None or an integer >= {lowest}; got {value!r}")
    check_seed(seed)
    if batch_size is not None and batch_size > num_data:
        raise ValueError(f"batch_size must be at most N={num_data}; got {batch_size}")
    if not _is_int_at_least(kl_warmup_steps, 0):
        raise ValueError(f"kl_warmup_steps must be an integer >= 0; got {kl_warmup_steps!r}")
    for name, value, positive in (
        ("lr", lr, True),
        ("beta", beta, False),
        ("free_bits", free_bits, False),
    ):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not (real and math.isfinite(value)) or (value <= 0 if positive else value < 0):
            raise ValueError(
                f"{name} must be a finite number {'> 0' if positive else '>= 0'}; got {value!r}"
            )
    if jit and (objective != "elbo" or free_bits > 0 or kl_warmup_steps > 0):
        raise ValueError(
            "jit=True needs objective='elbo' with a fixed beta and no free bits; got "
            f"objective={objective!r}, kl_warmup_steps={kl_warmup_steps}, free_bits={free_bits}"
        )
    if free_bits > 0 and objective != "elbo":
        raise ValueError(f"free_bits needs objective='elbo'; got objective={objective!r}")
    if optimizer is not None and not isinstance(optimizer, PyroOptim):
        raise TypeError(f"optimizer must be a pyro.optim.PyroOptim; got {type(optimizer).__name__}")


def _is_int_at_least(value: object, lowest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lowest


def _seed_everything(seed: int) -> None:
    """``pyro.set_rng_seed`` for every seed in [0, 2**63 - 1]: seeds of 2**32 and above are
    hashed to the 32 bits torch's and NumPy's generators use (:func:`seed_32`)."""
    seed = seed_32(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _batch_generator(
    num_data: int, batch_size: int | None, seed: int | None
) -> torch.Generator | None:
    """The minibatch generator, seeded by ``seed`` (or by torch's RNG when None); None when
    training is full-batch."""
    if batch_size is None or batch_size == num_data:
        return None
    return torch.Generator().manual_seed(
        seed if seed is not None else int(torch.randint(2**62, ()))
    )


def _minibatch(inputs: Inputs, batch_size: int | None, generator: torch.Generator | None) -> Inputs:
    """``batch_size`` data points drawn without replacement (with their per-point
    arguments), or all of them in order (a guide with one parameter per row, such as
    MeanField, needs every row in place)."""
    if generator is None:
        return inputs
    return inputs.subset(torch.randperm(inputs.num_data, generator=generator)[:batch_size])


def _beta_at(step: int, beta: float, warmup_steps: int) -> float:
    """The KL weight at ``step`` (from 0): beta, ramped up linearly over ``warmup_steps``."""
    if warmup_steps == 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


class _ScaleLatent(Messenger):
    """Multiplies the log-density of every latent (unobserved) sample site by ``scale``.

    Pyro's ``poutine.scale`` scales every site; beta must leave the observed sites alone.
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.scale * msg["scale"]


def _scaled_to_full_data(loss: Loss, num_data: int) -> Loss:
    """A loss on a minibatch of B points, times N / B: an unbiased estimate of the full loss."""

    def scaled_loss(model: Callable, guide: Callable, batch: torch.Tensor, *args, **kwargs):
        return loss(model, guide, batch, *args, **kwargs) * (num_data / batch.shape[0])

    return scaled_loss


def _jit_svi(
    model: Callable,
    guide: Callable,
    optimizer: PyroOptim,
    num_particles: int,
    info: ProgramInfo,
    data_scale: float,
) -> SVI:
    """SVI with Pyro's ``JitTrace_ELBO``: the ELBO of ``Trace_ELBO``, its Python traced once.

    The minibatch scaling N / B goes into the programs (``poutine.scale``), where the
    compiled trace keeps it as a constant: batches are all of size B.
    """
    elbo = JitTrace_ELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1 and info.vectorized,
        max_plate_nesting=info.max_plate_nesting,
        ignore_jit_warnings=True,
    )
    scaled = (poutine.scale(program, scale=data_scale) for program in (model, guide))
    return SVI(*scaled, optimizer, loss=elbo)


def _objective_loss(
    objective: str, num_particles: int, free_bits: float, info: ProgramInfo, enumerated: bool
) -> Loss:
    if objective == "iwae":
        return _iwae_loss(num_particles, info)
    if free_bits > 0:
        return _free_bits_loss(free_bits, num_particles, info)
    elbo = (TraceEnum_ELBO if enumerated else Trace_ELBO)(
        num_particles=num_particles,
        # One particle needs no particle plate: the same estimate with one handler less.
        vectorize_particles=num_particles > 1 and info.vectorized,
        max_plate_nesting=info.max_plate_nesting,
    )
    return elbo.differentiable_loss


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


def _iwae_loss(num_particles: int, info: ProgramInfo) -> Loss:
    """-sum_n [logsumexp_k log w_kn - log K], log w = log p(x, z) - log q(z given x)."""

    def loss(model: Callable, guide: Callable, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
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


def _check_reparameterised(guide_trace: Trace) -> None:
    for name, site in sample_sites(guide_trace):
        if not site["fn"].has_rsample:
            raise ValueError(
                f"objective='iwae' needs reparameterised latent sites; guide site '{name}' "
                f"({type(site['fn']).__name__}) has no rsample"
            )


def _free_bits_loss(free_bits: float, num_particles: int, info: ProgramInfo) -> Loss:
    """-sum_n E_q log p(x_n given z) + B sum_j max(lambda, KL_j), KL_j averaged over the batch."""

    def loss(model: Callable, guide: Callable, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
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
            scales[name] * kl.clamp_min(free_bits).sum() for name, kl in kl_per_unit.items()
        )
        return -log_likelihood + x.shape[0] * floored

    return loss


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
