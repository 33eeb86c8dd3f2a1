"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for log p(x).

AIS (Neal, 2001) moves C chains per data point from the guide's q(z given x) (or the prior)
to the posterior p(z given x) through the geometric path, in unconstrained coordinates u
(z = T(u), T = ``biject_to(support)`` of each continuous latent site),

    f_b(u) = q(z(u) given x)^(1 - b) p(x, z(u))^b |det dz/du|,   0 = b_0 < ... < b_T = 1,

with one HMC transition leaving f_{b_t} invariant at every intermediate b_t (``_hmc.py``).
The log weight of a chain, log w = sum_t (b_t - b_{t-1}) [log p(x, z_{t-1}) - log q(z_{t-1})]
(the Jacobian cancels in each increment), has E[w] = p(x). BDMC (Grosse, Ghahramani and
Adams, 2015) runs the same path backwards from exact posterior draws, whose weights have
E[w_rev] = 1 / p(x): the two runs sandwich log p(x) on data simulated from the model.

Every chain of every data point moves at once: positions are (C, N, d) tensors and the model
and guide run once per leapfrog step under one extra plate of C particles, so memory is
O(C N d) whatever the number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from tqdm.auto import tqdm

from guides import PriorGuide
from inference._programs import (
    Inputs,
    ProgramInfo,
    checked_inputs,
    evaluation_mode,
    inspect_pair,
    is_auxiliary,
    particle_plate,
    sample_sites,
    seeded,
    trace_program,
)
from inference._validate import check_data, check_positive_int
from inference.estimators._hmc import HMCInfo, HMCState, hmc_init, hmc_step
from inference.estimators._latent import (
    LatentSpace,
    enumerated_log_density,
    guide_log_density,
    model_log_densities,
)
from inference.estimators.bounds import ImportanceEstimate, _delta_method_stderr, weight_diagnostics

# The annealing steps and chains of AIS where compare, diagnose and check_bounds use it as
# their reference for log p(x) (reference="ais").
AIS_STEPS = 1000
AIS_CHAINS = 16
NUM_LEAPFROG = 10  # leapfrog steps per HMC transition, by default
TARGET_ACCEPT = 0.65  # the acceptance rate the pilot run adapts step sizes to, by default
_SCHEDULE_SHARPNESS = 4.0  # delta of the sigmoidal schedule (Grosse et al., 2015)
_INITIAL_STEP_SIZE = 0.1
_ADAPTATION_GAIN = 1.0  # log step size moves by gain * (acceptance - target) per transition
_START_TRANSITIONS = 10  # adaptation transitions at b = 0 before the pilot walks the path
_STEP_SIZE_JITTER = 0.2  # each transition draws its step size from step * U(1 -+ jitter)
_NOT_CERTIFIED = (
    "upper is not a certified bound: on real data the reverse chains start from approximate "
    "posterior draws (the forward chains, then more HMC at b = 1), not exact ones"
)


@dataclass(frozen=True)
class AISEstimate(ImportanceEstimate):
    """An AIS estimate of log p(x) per point, in nats, with the sampler's diagnostics.

    ``per_point`` is log (1/C) sum_c w_c over the C chains, ``per_point_stderr`` the delta
    method's sqrt((C / ESS - 1) / C), ``ess`` and ``khat`` those of the C weights
    (:func:`inference.estimators.bounds.weight_diagnostics`); ``num_samples`` is C.

    :ivar acceptance: (N,) mean Metropolis acceptance rate of the estimate's transitions
        (NaN when it made none: one annealing step, or no continuous latent).
    :ivar step_size: (N,) the leapfrog step size at b = 1, before jitter.
    :ivar num_steps: T, the annealing steps.
    :ivar num_evaluations: evaluations of the model (and guide) with their gradient, per chain
        and point, including the pilot run that set the step sizes.
    """

    acceptance: torch.Tensor | None = None
    step_size: torch.Tensor | None = None
    num_steps: int = 0
    num_evaluations: int = 0


@dataclass(frozen=True)
class BDMCResult:
    """Forward and reverse AIS on the same data: a sandwich of log p(x), in nats.

    :ivar x: the data the sandwich is about (simulated from the model by default), (N, D).
    :ivar latents: the simulated latent site values (exact posterior draws given ``x``);
        empty for real data.
    :ivar lower: forward AIS; a stochastic lower bound (E[lower] <= log p(x)).
    :ivar upper: minus the log of reverse AIS's mean weight; a stochastic upper bound when
        ``certified``.
    :ivar certified: True when the reverse chains started from exact posterior draws.
    :ivar note: what ``upper`` is worth when not certified (empty when certified).
    :ivar width: (N,) ``upper.per_point - lower.per_point``.
    """

    x: torch.Tensor
    latents: dict[str, torch.Tensor]
    lower: AISEstimate
    upper: AISEstimate
    certified: bool
    note: str = ""
    width: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", self.upper.per_point - self.lower.per_point)


def ais_log_marginal(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    *,
    num_steps: int,
    num_chains: int,
    seed: int | None = None,
    num_leapfrog: int = NUM_LEAPFROG,
    target_accept: float = TARGET_ACCEPT,
    num_warmup_steps: int | None = None,
    progress: bool = False,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
) -> AISEstimate:
    """Annealed importance sampling estimate of log p(x) per point: log (1/C) sum_c w_c.

    Neal (2001). For each data point, C chains start from z_0 ~ q(z given x) (the prior
    when ``guide`` is None) and pass through f_{b_1}, ..., f_{b_{T-1}} by HMC transitions
    (leapfrog, identity mass matrix, Metropolis correction; ``_hmc.py``) on the geometric
    path f_b(u) = q(z(u))^(1-b) p(x, z(u))^b |det dz/du| in unconstrained coordinates. The
    log weight of a chain is

        log w = sum_{t=1}^T (b_t - b_{t-1}) [log p(x, z_{t-1}) - log q(z_{t-1} given x)],

    and E[w] = p(x): the estimate of p(x) is unbiased, so by Jensen its log is a stochastic
    lower bound on log p(x). The b_t follow the sigmoidal schedule of Grosse, Ghahramani and
    Adams (2015), b_t = (s(d (2t/T - 1)) - s(-d)) / (s(d) - s(-d)), s the logistic function,
    d = 4. Gradients of log f_b come from autograd, every chain and point at once.

    Step sizes: a pilot run (``num_warmup_steps`` steps along the same kind of schedule, its
    chains then discarded) adapts one step size per data point towards ``target_accept``,
    recording it at each b. The main run uses that record, interpolated in b, as a *fixed*
    schedule: the step size of each transition depends on the point and on b only, never on
    the main run's chains. So the main run is an exact AIS with transitions chosen in
    advance, and its weights have E[w] = p(x). (Adapting during the main run would make
    each transition depend on the chains' past, and the estimate biased.) Each transition
    scales its step size by a random factor in [0.8, 1.2], drawn independently of the chains
    (a mixture of HMC kernels, each leaving f_b invariant), to avoid the periodic
    trajectories of a fixed step.

    Discrete latent sites with enumerable support are summed out of q and of p(x, z) by
    Pyro's parallel enumeration, so the chains move in the continuous latents only; with
    none continuous, every weight is the exact enumerated p(x).

    :param model: a Pyro model following the plate convention (``model(x)``).
    :param guide: a Pyro guide sampling every latent site of the model, or None for the prior.
    :param x: data (N, D).
    :param int num_steps: T, the annealing steps (>= 1; 1 is importance sampling from q).
    :param int num_chains: C, chains per data point (>= 2 for a standard error).
    :param int seed: seeds torch's RNG for this call only; None uses the caller's RNG.
    :param int num_leapfrog: leapfrog steps per HMC transition.
    :param float target_accept: the acceptance rate the pilot run aims at, in (0, 1).
    :param int num_warmup_steps: annealing steps of the pilot run (default
        25 + T // 10; it may be longer than a short main run).
    :param bool progress: show a progress bar over the annealing steps.
    :returns: an :class:`AISEstimate` in nats, ``per_point`` of shape (N,).
    :raises ValueError: naming a bad argument, a latent site the guide lacks, or a discrete
        latent site without enumerable support.

    Example::

        estimate = ais_log_marginal(model, guide, x, num_steps=1000, num_chains=16, seed=0)
        estimate.per_point, estimate.per_point_stderr, estimate.acceptance
    """
    settings = _check_options(
        x, num_steps, num_chains, num_leapfrog, target_accept, num_warmup_steps
    )
    with torch.no_grad(), seeded(seed), evaluation_mode(model, guide):
        program = dict(data_plate=data_plate, vectorize=vectorize)
        inputs = checked_inputs(x, model_args, model_kwargs)
        return _forward_ais(_AnnealingPath(model, guide, inputs, program), settings, progress)


def ais_log_evidence(
    model: Callable,
    guide: Callable | None,
    inputs: Inputs,
    *,
    num_steps: int,
    num_chains: int,
    seed: int | None,
    program: dict,
    progress: bool = False,
) -> AISEstimate:
    """AIS of the whole data set as one unit, every latent (global and local) in one chain
    state: ``per_point`` has one entry, log p(x_1..N). Used by :func:`inference.log_evidence`
    (``method="ais"``); continuous latents only."""
    settings = _check_options(inputs.x, num_steps, num_chains, NUM_LEAPFROG, TARGET_ACCEPT, None)
    with torch.no_grad(), seeded(seed), evaluation_mode(model, guide):
        path = _AnnealingPath(model, guide, inputs, program, whole=True)
        return _forward_ais(path, settings, progress)


def _forward_ais(path: _AnnealingPath, settings: _Settings, progress: bool) -> AISEstimate:
    """The pilot run, then the forward AIS run of ``path``."""
    if path.space is None:
        return _enumerated_estimate(path, settings, reverse=False)
    total = settings.num_warmup + settings.num_steps
    with tqdm(total=total, disable=not progress, desc="AIS steps") as bar:
        step_sizes = _pilot_step_sizes(path, settings, bar)
        start = hmc_init(path.sample_start(settings.num_chains), path.evaluate)
        betas = _sigmoid_schedule(settings.num_steps)
        run = _anneal(path, start, betas, step_sizes, settings, bar)
    return _estimate(run, step_sizes, settings, path.evaluations, reverse=False)


def bdmc(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    *,
    num_steps: int,
    num_chains: int,
    seed: int | None = None,
    simulate: bool = True,
    num_leapfrog: int = NUM_LEAPFROG,
    target_accept: float = TARGET_ACCEPT,
    num_warmup_steps: int | None = None,
    num_posterior_transitions: int = 10,
    progress: bool = False,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
) -> BDMCResult:
    """Bidirectional Monte Carlo: forward and reverse AIS sandwich log p(x) per point.

    Grosse, Ghahramani and Adams (2015); Wu, Burda, Salakhutdinov and Grosse (2017), "On the
    quantitative analysis of decoder-based generative models". With ``simulate=True`` the
    data are drawn from the model (x gives only the shape; its values are unused), keeping
    the latents that generated them: those are exact posterior draws for the simulated data.

    - Forward AIS (:func:`ais_log_marginal`, from q to the posterior) gives ``lower``: its
      weights have E[w] = p(x), so E[lower] <= log p(x).
    - Reverse AIS runs the same path from b = 1 to b = 0, with the same frozen step-size
      schedule, every chain of a point starting at that point's simulated latent. Its log
      weight is log w_rev = sum_t (b_{t-1} - b_t) [log p(x, z_t) - log q(z_t given x)]
      and E[w_rev] = 1 / p(x), so ``upper`` = -log (1/C) sum_c w_rev,c has
      E[upper] >= log p(x).

    In expectation ``width`` = upper - lower bounds the error of either estimate on such
    data; it shrinks to 0 as ``num_steps`` grows. ``upper.per_point_stderr`` (delta method
    over the reverse chains) is optimistic: the C chains of a point share one exact start,
    whose own randomness it does not count, and with few steps the reverse weights are
    heavy-tailed when q is much wider than the posterior.

    With ``simulate=False`` the sandwich is about the real data x: the reverse chains start
    from approximate posterior draws (the forward chains' final states after
    ``num_posterior_transitions`` more HMC transitions at b = 1). Then ``upper`` is *not* a
    certified bound (``certified=False``, see ``note``): it is an upper bound only as far as
    those draws are exact.

    :param model: a Pyro model with one observed site (for ``simulate=True``).
    :param guide: a Pyro guide of the model, or None for the prior.
    :param x: data (N, D); with ``simulate=True`` only its shape, dtype and device count.
    :param int num_steps: T, annealing steps of each direction.
    :param int num_chains: C, chains per data point and direction.
    :param int seed: seeds torch's RNG for this call only; None uses the caller's RNG.
    :param bool simulate: sandwich simulated data (certified) or x itself (not certified).
    :param num_leapfrog, target_accept, num_warmup_steps, progress: as in
        :func:`ais_log_marginal`.
    :param int num_posterior_transitions: with ``simulate=False``, HMC transitions at b = 1
        between the forward and the reverse run.
    :returns: a :class:`BDMCResult`; ``lower`` and ``upper`` are :class:`AISEstimate` s.
    :raises ValueError: as :func:`ais_log_marginal`, and when ``simulate=True`` and the
        model has more than one observed site or simulates a value of another size than x.
    """
    settings = _check_options(
        x, num_steps, num_chains, num_leapfrog, target_accept, num_warmup_steps
    )
    if not simulate:
        check_positive_int("num_posterior_transitions", num_posterior_transitions)
    note = "" if simulate else _NOT_CERTIFIED
    with torch.no_grad(), seeded(seed), evaluation_mode(model, guide):
        latents: dict[str, torch.Tensor] = {}
        inputs = checked_inputs(x, model_args, model_kwargs)
        if simulate:
            inputs, latents = _simulate(model, inputs)
            x = inputs.x
        path = _AnnealingPath(
            model, guide, inputs, dict(data_plate=data_plate, vectorize=vectorize)
        )
        if path.space is None:
            lower = _enumerated_estimate(path, settings, reverse=False)
            upper = _enumerated_estimate(path, settings, reverse=True)
            return BDMCResult(x, latents, lower, upper, simulate, note)
        extra = 0 if simulate else num_posterior_transitions
        total = settings.num_warmup + 2 * num_steps + extra
        with tqdm(total=total, disable=not progress, desc="BDMC steps") as bar:
            lower, upper = _forward_and_reverse(path, latents, settings, extra, bar)
    return BDMCResult(x, latents, lower, upper, simulate, note)


def _forward_and_reverse(
    path: _AnnealingPath,
    latents: dict[str, torch.Tensor],
    settings: _Settings,
    posterior_transitions: int,
    bar: tqdm,
) -> tuple[AISEstimate, AISEstimate]:
    """The forward run from q, then the reverse run from the simulated latents (when given)
    or from the forward chains moved ``posterior_transitions`` more times at b = 1."""
    step_sizes = _pilot_step_sizes(path, settings, bar)
    betas = _sigmoid_schedule(settings.num_steps)
    start = hmc_init(path.sample_start(settings.num_chains), path.evaluate)
    forward = _anneal(path, start, betas, step_sizes, settings, bar)
    lower = _estimate(forward, step_sizes, settings, path.evaluations, reverse=False)
    evaluations_before = path.evaluations
    if latents:
        values = {name: latents[name].unsqueeze(0) for name in path.space.sites}
        position = path.space.unconstrain(values)  # (1, N, d)
        reverse_start = hmc_init(position.expand(settings.num_chains, -1, -1), path.evaluate)
    else:
        reverse_start = forward.state
        for _ in range(posterior_transitions):
            reverse_start, _ = _transition(path, reverse_start, 1.0, step_sizes, settings)
            bar.update()
    reverse = _anneal(path, reverse_start, betas.flip(0), step_sizes, settings, bar)
    evaluations = path.evaluations - evaluations_before
    return lower, _estimate(reverse, step_sizes, settings, evaluations, reverse=True)


class _Settings(NamedTuple):
    """The validated options of one call."""

    num_steps: int
    num_chains: int
    num_warmup: int
    num_leapfrog: int
    target_accept: float


def _check_options(
    x: object,
    num_steps: object,
    num_chains: object,
    num_leapfrog: object,
    target_accept: object,
    num_warmup_steps: object,
) -> _Settings:
    """Validate the arguments the estimators share."""
    check_data(x)
    check_positive_int("num_steps", num_steps)
    check_positive_int("num_chains", num_chains)
    check_positive_int("num_leapfrog", num_leapfrog)
    if isinstance(target_accept, bool) or not isinstance(target_accept, (int, float)):
        raise TypeError(f"target_accept must be a float in (0, 1); got {target_accept!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    if num_warmup_steps is None:
        num_warmup_steps = 25 + num_steps // 10
    check_positive_int("num_warmup_steps", num_warmup_steps)
    return _Settings(num_steps, num_chains, num_warmup_steps, num_leapfrog, target_accept)


def _sigmoid_schedule(num_steps: int) -> torch.Tensor:
    """b_0 = 0 < ... < b_T = 1, sigmoidal (Grosse et al., 2015): (T + 1,) float64."""
    if num_steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    ramp = torch.linspace(-_SCHEDULE_SHARPNESS, _SCHEDULE_SHARPNESS, num_steps + 1)
    squashed = torch.sigmoid(ramp.double())
    return (squashed - squashed[0]) / (squashed[-1] - squashed[0])


class _AnnealingPath:
    """The path from q(z given x) to p(z given x) of one model, guide and data set.

    Positions are the continuous latents of each point as one unconstrained vector u
    (:class:`LatentSpace`); discrete latents with enumerable support are summed out of both
    ends. ``evaluations`` counts calls of :meth:`evaluate`.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable | None,
        inputs: Inputs,
        program: dict,
        whole: bool = False,
    ) -> None:
        self.model, self.inputs = model, inputs
        self.from_prior = guide is None
        self.guide = PriorGuide(model) if guide is None else guide
        self.info = inspect_pair(model, self.guide, inputs, allow_global=whole, **program)
        _check_no_auxiliary_sites(trace_program(self.guide, inputs))
        trace = trace_program(model, inputs)
        discrete = _enumerable_sites(trace, self.info)
        if whole and discrete:
            raise ValueError(
                f"AIS of the whole data set needs continuous latents; {discrete} are discrete"
            )
        continuous = [name for name in self.info.latent_sites if name not in discrete]
        self.enumerated = bool(discrete)
        self.space = LatentSpace.of(trace, self.info, continuous, whole) if continuous else None
        self.evaluations = 0

    @property
    def units(self) -> int:
        """Per-point runs have N units, a run on the whole data set one."""
        return self.info.num_data if self.space is None else self.space.units

    def sample_start(self, num_chains: int) -> torch.Tensor:
        """u of C draws from q per point: (C, N, d)."""
        if self.info.vectorized:
            with particle_plate(num_chains, self.info):
                guide_trace = trace_program(self.guide, self.inputs)
            return self._unconstrained(guide_trace)
        draws = [
            self._unconstrained(trace_program(self.guide, self.inputs)) for _ in range(num_chains)
        ]
        return torch.cat(draws)

    def _unconstrained(self, guide_trace: Trace) -> torch.Tensor:
        values = {name: guide_trace.nodes[name]["value"] for name in self.space.sites}
        if not self.info.vectorized:  # a plain run: give its values the particle dim
            values = {name: value.unsqueeze(0) for name, value in values.items()}
        return self.space.unconstrain(values)

    def evaluate(self, position: torch.Tensor) -> HMCState:
        """Both ends of the path and their gradients at u (C, N, d), by autograd."""
        self.evaluations += 1
        # A leapfrog step may go where a distribution's parameter leaves its support (a scale
        # underflowing to 0); unvalidated, that gives a non-finite density and the HMC kernel
        # rejects the trajectory as divergent.
        with torch.enable_grad(), pyro.validation_enabled(False):
            position = position.detach().requires_grad_(True)
            values, log_jacobian = self.space.constrain(position)
            log_q, log_joint = self._log_densities(values)
            grad_q = _gradient(log_q + log_jacobian, position, retain_graph=True)
            grad_joint = _gradient(log_joint + log_jacobian, position, retain_graph=False)
        return HMCState(
            position.detach(),
            log_q.detach(),
            log_joint.detach(),
            log_jacobian.detach(),
            grad_q,
            grad_joint,
        )

    def log_marginal(self) -> torch.Tensor:
        """log p(x) by enumeration, for a model whose latents are all discrete: (N,)."""
        return enumerated_log_density(self.model, self.inputs, self.info, {}, 1)[0]

    def _log_densities(self, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """log q(z given x) and log p(x, z), (C, N) each, discrete latents summed out."""
        if self.enumerated:
            num_chains = next(iter(values.values())).shape[0]
            return (
                enumerated_log_density(self.guide, self.inputs, self.info, values, num_chains),
                enumerated_log_density(self.model, self.inputs, self.info, values, num_chains),
            )
        log_prior, log_likelihood = model_log_densities(self.model, self.inputs, self.space, values)
        if self.from_prior:  # q = p(z): one run of the model gives both ends
            return log_prior, log_prior + log_likelihood
        log_q = guide_log_density(self.guide, self.inputs, self.space, values)
        return log_q, log_prior + log_likelihood


def _check_no_auxiliary_sites(guide_trace: Trace) -> None:
    """AIS starts from q(z given x) itself, which a guide with auxiliary sites only gives as
    an integral over them."""
    auxiliary = [name for name, site in sample_sites(guide_trace) if is_auxiliary(site)]
    if auxiliary:
        raise ValueError(
            f"the guide has auxiliary site(s) {auxiliary}: AIS needs the density q(z given x) "
            "of the latent sites alone"
        )


def _enumerable_sites(trace: Trace, info: ProgramInfo) -> list[str]:
    """The discrete latent sites, which AIS sums out by enumeration.

    :raises ValueError: naming a discrete site whose support cannot be enumerated.
    """
    discrete = []
    for name in info.latent_sites:
        fn = trace.nodes[name]["fn"]
        if not fn.support.is_discrete:
            continue
        if not fn.has_enumerate_support:
            raise ValueError(
                f"latent site '{name}' is discrete without enumerable support "
                f"({type(fn).__name__}): AIS can neither move it by HMC nor sum it out"
            )
        discrete.append(name)
    return discrete


def _gradient(output: torch.Tensor, position: torch.Tensor, retain_graph: bool) -> torch.Tensor:
    """d sum(output) / d position: each (chain, point) depends on its own u only."""
    (gradient,) = torch.autograd.grad(
        output.sum(), position, retain_graph=retain_graph, allow_unused=True
    )
    return torch.zeros_like(position) if gradient is None else gradient


@dataclass(frozen=True)
class _StepSizes:
    """A per-point step size for every b: log step sizes recorded at the pilot's betas,
    linearly interpolated in between.

    :ivar betas: (P + 1,) increasing, from 0 to 1 (float64, on the CPU).
    :ivar log_step_sizes: (P + 1, N) float64, on the data's device.
    """

    betas: torch.Tensor
    log_step_sizes: torch.Tensor

    def at(self, beta: float) -> torch.Tensor:
        """The step size per point at b = ``beta``: (N,) float64."""
        upper = int(torch.searchsorted(self.betas, torch.tensor(beta, dtype=torch.float64)))
        upper = min(max(upper, 1), self.betas.shape[0] - 1)
        low, high = self.betas[upper - 1].item(), self.betas[upper].item()
        fraction = min(max((beta - low) / (high - low), 0.0), 1.0)
        log_step = (1 - fraction) * self.log_step_sizes[upper - 1] + fraction * (
            self.log_step_sizes[upper]
        )
        return log_step.exp()


def _transition(
    path: _AnnealingPath,
    state: HMCState,
    beta: float,
    step_sizes: _StepSizes | torch.Tensor,
    settings: _Settings,
) -> tuple[HMCState, HMCInfo]:
    """One HMC transition at b = ``beta`` with the scheduled (or given, (N,)) step sizes,
    jittered per chain and point."""
    base = step_sizes.at(beta) if isinstance(step_sizes, _StepSizes) else step_sizes
    jitter = torch.empty(state.log_q.shape, dtype=torch.float64, device=base.device)
    jitter.uniform_(1 - _STEP_SIZE_JITTER, 1 + _STEP_SIZE_JITTER)
    step_size = (base * jitter).to(state.position.dtype)  # (C, N)
    return hmc_step(state, path.evaluate, beta, step_size, settings.num_leapfrog)


def _pilot_step_sizes(path: _AnnealingPath, settings: _Settings, bar: tqdm) -> _StepSizes:
    """Adapt one step size per point along a pilot AIS run; its chains are discarded.

    After each transition, log step += gain * (mean acceptance over chains - target). The
    step size after the transition at b_j is recorded for b_j (after ``_START_TRANSITIONS``
    of them at b_0 = 0).
    """
    betas = _sigmoid_schedule(settings.num_warmup)
    state = hmc_init(path.sample_start(settings.num_chains), path.evaluate)
    log_step = torch.full(
        (path.units,),
        math.log(_INITIAL_STEP_SIZE),
        dtype=torch.float64,
        device=state.position.device,
    )
    recorded = []
    for index, beta in enumerate(betas.tolist()):
        for _ in range(_START_TRANSITIONS if index == 0 else 1):
            state, info = _transition(path, state, beta, log_step.exp(), settings)
            acceptance = info.acceptance_rate.double().mean(0)  # (N,)
            log_step = log_step + _ADAPTATION_GAIN * (acceptance - settings.target_accept)
        recorded.append(log_step)
        if index > 0:
            bar.update()
    return _StepSizes(betas, torch.stack(recorded))


class _Run(NamedTuple):
    """One annealing run: log weights (C, N) float64, the final state, and the mean
    acceptance rate per point (N,) (NaN when the run made no transition)."""

    log_weights: torch.Tensor
    state: HMCState
    acceptance: torch.Tensor


def _anneal(
    path: _AnnealingPath,
    state: HMCState,
    betas: torch.Tensor,
    step_sizes: _StepSizes,
    settings: _Settings,
    bar: tqdm,
) -> _Run:
    """AIS along ``betas`` (increasing: forward; decreasing: reverse) from ``state``.

    log w += (b_t - b_{t-1}) [log p(x, z) - log q(z)] at the current state, then one
    transition at b_t, for t = 1..T; the transition at b_T would not change the weight and is
    skipped.
    """
    betas = betas.tolist()
    log_weights = torch.zeros(state.log_q.shape, dtype=torch.float64, device=state.log_q.device)
    acceptance = torch.zeros_like(log_weights)
    for step in range(1, len(betas)):
        increment = (betas[step] - betas[step - 1]) * (state.log_joint - state.log_q)  # (C, N)
        log_weights = log_weights + increment.double()
        if step < len(betas) - 1:
            state, info = _transition(path, state, betas[step], step_sizes, settings)
            acceptance = acceptance + info.acceptance_rate.double()
        bar.update()
    _check_weights(log_weights)
    return _Run(log_weights, state, acceptance.mean(0) / (len(betas) - 2))


def _check_weights(log_weights: torch.Tensor) -> None:
    bad = torch.isnan(log_weights) | (log_weights == math.inf)
    if bool(bad.any()):
        points = bad.any(0).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"AIS log weights are NaN or +inf at points {points}: a log-density of the model "
            "or guide overflows there (or the guide has zero density where the model has mass)"
        )


def _estimate(
    run: _Run, step_sizes: _StepSizes, settings: _Settings, evaluations: int, reverse: bool
) -> AISEstimate:
    """log mean exp of the chains' weights (minus it for a reverse run) and diagnostics."""
    log_weights = run.log_weights
    num_chains = log_weights.shape[0]
    ess, khat = weight_diagnostics(log_weights)
    log_mean = torch.logsumexp(log_weights, 0) - math.log(num_chains)  # (N,)
    return AISEstimate(
        -log_mean if reverse else log_mean,
        _delta_method_stderr(ess, num_chains),
        num_chains,
        ess=ess,
        khat=khat,
        acceptance=run.acceptance,
        step_size=step_sizes.at(1.0),
        num_steps=settings.num_steps,
        num_evaluations=evaluations,
    )


def _enumerated_estimate(path: _AnnealingPath, settings: _Settings, reverse: bool) -> AISEstimate:
    """With no continuous latent every weight is the enumerated p(x) (1 / p(x) reversed)."""
    log_marginal = path.log_marginal().double()  # (N,)
    log_weights = (-log_marginal if reverse else log_marginal).expand(settings.num_chains, -1)
    ess, khat = weight_diagnostics(log_weights)
    nan = torch.full_like(log_marginal, math.nan)
    return AISEstimate(
        log_marginal.clone(),
        torch.zeros_like(log_marginal),
        settings.num_chains,
        ess=ess,
        khat=khat,
        acceptance=nan,
        step_size=nan,
        num_steps=settings.num_steps,
        num_evaluations=1,
    )


def _simulate(model: Callable, inputs: Inputs) -> tuple[Inputs, dict[str, torch.Tensor]]:
    """Data of x's shape drawn from the model (with the other inputs as they are), and the
    latent values that generated it.

    :raises ValueError: when the model has more than one observed site, or its value has
        another number of elements than x.
    """
    x = inputs.x
    trace = trace_program(poutine.uncondition(model), inputs)
    observed = [n for n, s in sample_sites(trace) if s["infer"].get("was_observed", False)]
    if len(observed) != 1:
        raise ValueError(
            f"bdmc(simulate=True) needs a model with exactly one observed site; it has "
            f"{len(observed)}: {observed}"
        )
    value = trace.nodes[observed[0]]["value"]
    if value.numel() != x.numel():
        raise ValueError(
            f"the model simulated site '{observed[0]}' with shape {tuple(value.shape)}, "
            f"{value.numel()} elements; x has shape {tuple(x.shape)}, {x.numel()} elements"
        )
    latents = {
        name: site["value"]
        for name, site in sample_sites(trace)
        if not site["is_observed"] and name not in observed
    }
    return inputs.with_x(value.reshape(x.shape).to(dtype=x.dtype, device=x.device)), latents
