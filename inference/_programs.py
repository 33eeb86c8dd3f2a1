"""What the estimators learn about a model or guide by running it: plates, sites, log-densities.

Everything here relies on one convention only: the observed sites of a model lie inside a
vectorised plate over the N data points (any name, sized or not: found from the trace).
Latent and observed sites are told apart by the trace (``site["is_observed"]``), never by
their names; particles are vectorised in one more plate where the programs allow it, and run
one at a time where they do not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.indep_messenger import CondIndepStackFrame
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from inference._sites import (
    check_device,
    check_distributions,
    check_guide_draws,
    check_parameters,
    modules_of,
    name_the_failure,
)
from inference._validate import check_data, check_seed
from lvm_models._base import forked_rng, seed_32

DATA_PLATE = "data"
PARTICLE_PLATE = "_lvm_particles"


class Inputs:
    """What a model and its guide are called with: ``fn(x, *args, **kwargs)``.

    x has shape (N, ...): N data points. Extra arguments pass through unchanged (labels,
    sizes, flags); a tensor among them whose leading dimension is N is per-point and goes
    with x wherever the data points are subset (minibatches, batches of the oracle).
    """

    def __init__(self, x: torch.Tensor, args: tuple = (), kwargs: dict | None = None) -> None:
        self.x, self.args, self.kwargs = x, tuple(args), dict(kwargs or {})

    @classmethod
    def of(cls, inputs: Inputs | torch.Tensor) -> Inputs:
        return inputs if isinstance(inputs, Inputs) else cls(inputs)

    @property
    def num_data(self) -> int:
        return self.x.shape[0]

    def run(self, fn: Callable) -> object:
        return fn(self.x, *self.args, **self.kwargs)

    def subset(self, indices: torch.Tensor) -> Inputs:
        """The same call on the data points ``indices`` (per-point arguments subset too)."""
        return Inputs(
            self.x[indices],
            tuple(self._subset(a, indices) for a in self.args),
            {k: self._subset(v, indices) for k, v in self.kwargs.items()},
        )

    def with_x(self, x: torch.Tensor) -> Inputs:
        return Inputs(x, self.args, self.kwargs)

    def _subset(self, value: object, indices: torch.Tensor) -> object:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == self.num_data:
            return value[indices]
        return value


@dataclass(frozen=True)
class ProgramInfo:
    """The plate layout and sites of a model (and guide) run on data of N points.

    ``max_plate_nesting`` counts the plates of model and guide; vectorised particles go in
    one more plate to their left, at ``particle_dim``. ``data_dim`` is the (negative) dim of
    the data plate, called ``data_plate``. ``global_sites`` are latent sites outside it;
    ``given_sites`` observed sites outside it (globals fixed by ``poutine.condition``), which
    per-point figures condition on rather than count. ``enumerable_sites``: latent sites
    with enumerate support.
    ``vectorized``: whether particles may share one run in a particle plate; False runs
    them one at a time (see :func:`check_vectorization`). ``device``: x's, where the
    programs run and the per-point figures are made.
    """

    num_data: int
    max_plate_nesting: int
    data_dim: int
    latent_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]
    data_plate: str = DATA_PLATE
    global_sites: tuple[str, ...] = ()
    vectorized: bool = True
    given_sites: tuple[str, ...] = ()
    enumerable_sites: tuple[str, ...] = ()
    device: torch.device = torch.device("cpu")

    @property
    def particle_dim(self) -> int:
        return -self.max_plate_nesting - 1


def sample_sites(trace: Trace) -> Iterable[tuple[str, dict]]:
    """The sample sites of a trace, without the plates' own subsample sites."""
    return (
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    )


def is_auxiliary(site: dict) -> bool:
    return bool(site["infer"].get("is_auxiliary", False))


def trace_program(fn: Callable, inputs: Inputs | torch.Tensor) -> Trace:
    """One run of ``fn`` on ``inputs`` (or on x alone) with nothing blocked."""
    return poutine.trace(Inputs.of(inputs).run).get_trace(fn)


def checked_trace(role: str, fn: Callable, inputs: Inputs, replay: Trace | None = None) -> Trace:
    """:func:`trace_program` (replayed against ``replay`` where given), then the checks of
    :mod:`inference._sites`; where the run raises inside the program, the cause is named where
    it can be (:func:`~inference._sites.name_the_failure`)."""
    check_device(role, fn, inputs.x)
    program = fn if replay is None else poutine.replay(fn, trace=replay)

    def run() -> Trace:
        return trace_program(program, inputs)

    try:
        trace = run()
    except (ValueError, RuntimeError) as error:
        name_the_failure(role, fn, run, inputs.x, error)
        raise
    check_parameters(role, trace, modules_of(fn))
    check_distributions(role, trace)
    return trace


def inspect_program(
    model: Callable, inputs: Inputs | torch.Tensor, data_plate: str | None = None
) -> ProgramInfo:
    """Run the model once and find its data plate and sites (see :func:`inspect_pair`)."""
    inputs = Inputs.of(inputs)
    return _program_info(inputs, checked_trace("model", model, inputs), None, data_plate)


def inspect_pair(
    model: Callable,
    guide: Callable,
    inputs: Inputs | torch.Tensor,
    *,
    data_plate: str | None = None,
    vectorize: bool | None = None,
    allow_global: bool = False,
    allow_enumerated: bool = False,
) -> ProgramInfo:
    """Run the guide, the model replayed against it, and learn the layout from the traces.

    The data plate is the vectorised plate of size N (the rows of x) that holds observed
    sites (a plate declared without a size takes it from its sites, as Pyro does);
    ``data_plate`` names it where two qualify. Then
    :func:`check_guide_matches`, and :func:`check_vectorization` unless ``vectorize`` says.

    ``allow_enumerated`` lets the guide leave out discrete model sites with enumerate
    support, which a ``TraceEnum_ELBO`` sums out (training only).

    :raises ValueError: naming what does not fit: no or several candidate data plates, a
        latent site outside it (a global latent) unless ``allow_global``, a guide that does
        not match the model.
    """
    inputs = Inputs.of(inputs)
    # The prior run and the vectorisation check draw from a forked RNG; the caller's stream
    # gives one run of the guide, as it always has, so seeded results stay as they were.
    with forked_rng():
        prior_trace = checked_trace("model", model, inputs)
    prior_info = _program_info(inputs, prior_trace, None, data_plate)
    guide_trace = checked_trace("guide", guide, inputs)
    # Checked before the replay, which would carry the guide's plate sizes into the model.
    check_guide_matches(prior_trace, guide_trace, prior_info, allow_enumerated)
    check_guide_draws(prior_trace, guide_trace, prior_info.latent_sites)
    model_trace = checked_trace("model", model, inputs, replay=guide_trace)
    info = _program_info(inputs, model_trace, guide_trace, prior_info.data_plate)
    if info.global_sites and not allow_global:
        raise ValueError(
            f"latent site(s) {list(info.global_sites)} lie outside the data plate "
            f"'{info.data_plate}': global latents have no per-point log p(x). Estimate the "
            "evidence of the whole data set with inference.log_evidence, or fix them with "
            "pyro.poutine.condition for per-point figures given the globals"
        )
    check_guide_matches(model_trace, guide_trace, info, allow_enumerated)
    if vectorize is None:
        with forked_rng():
            vectorize = check_vectorization(model, guide, inputs, info)
    return replace(info, vectorized=bool(vectorize))


def prepare_pair(
    model: Callable,
    guide: Callable,
    x: object,
    *,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
    allow_global: bool = False,
) -> tuple[Inputs, ProgramInfo]:
    """Check the data and the extra arguments at an estimator's boundary, then
    :func:`inspect_pair`: the inputs to call the programs with, and their layout."""
    inputs = checked_inputs(x, model_args, model_kwargs)
    info = inspect_pair(
        model,
        guide,
        inputs,
        data_plate=data_plate,
        vectorize=vectorize,
        allow_global=allow_global,
    )
    return inputs, info


def checked_inputs(
    x: object, model_args: tuple = (), model_kwargs: dict | None = None, name: str = "x"
) -> Inputs:
    """x checked as data (N, ...), with the extra arguments the programs take after it."""
    check_data(x, name)
    if not isinstance(model_args, tuple):
        raise TypeError(f"model_args must be a tuple; got {type(model_args).__name__}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs must be a dict; got {type(model_kwargs).__name__}")
    return Inputs(x, model_args, model_kwargs)


def _program_info(
    inputs: Inputs, model_trace: Trace, guide_trace: Trace | None, data_plate: str | None
) -> ProgramInfo:
    traces = [model_trace] if guide_trace is None else [model_trace, guide_trace]
    observed = tuple(n for n, s in sample_sites(model_trace) if s["is_observed"])
    if not observed:
        raise ValueError("the model has no observed site: call it with the data, model(x)")
    frame = _data_frame(model_trace, "model", inputs.num_data, data_plate)
    inside = {n for n, s in sample_sites(model_trace) if _in_frame(s, frame)}
    # Observed sites outside the data plate (globals fixed by poutine.condition) are given,
    # not data: per-point figures are conditional on them.
    given = tuple(n for n in observed if n not in inside)
    observed = tuple(n for n in observed if n in inside)
    latent = tuple(n for n, s in sample_sites(model_trace) if not s["is_observed"])
    nesting = max(
        [
            -f.dim
            for trace in traces
            for _, site in sample_sites(trace)
            for f in site["cond_indep_stack"]
            if f.vectorized
        ]
        + [1]
    )
    return ProgramInfo(
        inputs.num_data,
        nesting,
        frame.dim,
        latent,
        observed,
        frame.name,
        tuple(n for n in latent if n not in inside),
        given_sites=given,
        enumerable_sites=tuple(
            n for n in latent if model_trace.nodes[n]["fn"].has_enumerate_support
        ),
        device=inputs.x.device,
    )


def _in_frame(site: dict, frame: CondIndepStackFrame) -> bool:
    return any(f.name == frame.name for f in site["cond_indep_stack"])


def _frame_size(trace: Trace, frame: CondIndepStackFrame) -> int:
    """A plate's size; for a plate declared without one, the size its sites' values give it
    (an observed value broadcasts against its distribution, so both count)."""
    if frame.size is not None and frame.size > 0:
        return frame.size
    sizes = []
    for _, site in sample_sites(trace):
        if not _in_frame(site, frame):
            continue
        event_dims = len(site["fn"].event_shape)
        for shape in (
            site["fn"].batch_shape,
            site["value"].shape[: site["value"].dim() - event_dims],
        ):
            if len(shape) >= -frame.dim:
                sizes.append(shape[frame.dim])
    return max(sizes, default=1)


def _data_frame(
    trace: Trace, role: str, num_data: int, data_plate: str | None
) -> CondIndepStackFrame:
    """The data plate of a trace: the one named, or the vectorised plate of size N around
    every observed site."""
    frames = {f.name: f for _, site in sample_sites(trace) for f in site["cond_indep_stack"]}
    described = ", ".join(f"'{n}' (size {_frame_size(trace, f)})" for n, f in frames.items())
    if data_plate is not None:
        if data_plate not in frames:
            raise ValueError(
                f"data_plate={data_plate!r}: the {role} has no such plate around its sample "
                f"sites; its plates: {described or 'none'}"
            )
        candidates = [frames[data_plate]]
    else:
        observed = [s for _, s in sample_sites(trace) if s["is_observed"]]
        candidates = [
            f
            for f in frames.values()
            if f.vectorized
            and _frame_size(trace, f) == num_data
            and any(_in_frame(site, f) for site in observed)
        ]
        if not candidates:
            raise ValueError(
                f"the {role} has no vectorised pyro.plate of size N={num_data} (the rows of x) "
                f"around its observed sites; its plates: {described or 'none'}. Put them in a "
                "plate over the data points, e.g. pyro.plate('data', N)"
            )
        if len(candidates) > 1:
            names = [f.name for f in candidates]
            raise ValueError(
                f"the {role}'s plates {names} all have size N={num_data} and hold observed "
                "sites: name the data plate with data_plate="
            )
    frame = candidates[0]
    if not frame.vectorized:
        raise ValueError(f"the {role}'s data plate '{frame.name}' must be vectorised")
    size = _frame_size(trace, frame)
    if size != num_data:
        raise ValueError(
            f"the {role}'s data plate '{frame.name}' has size {size} but x has {num_data} "
            "rows; the plate must cover every data point (no subsampling)"
        )
    return frame


def particle_plate(num_particles: int, info: ProgramInfo) -> pyro.plate:
    """A plate that vectorises ``num_particles`` independent runs, left of every model plate."""
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=info.particle_dim)


def site_log_prob_per_point(site: dict, info: ProgramInfo) -> torch.Tensor:
    """log-density of one site, summed within each (particle, data point): shape (K, N).

    Uses the unscaled log-density (masks apply, ``poutine.scale`` does not): the estimators
    compute log p(x) of the model as written.
    """
    log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
    return per_point_sum(log_prob, info, site["name"])


def per_point_sum(batch_tensor: torch.Tensor, info: ProgramInfo, name: str) -> torch.Tensor:
    """Sum a tensor laid out on the plates over every plate but particles and data: (K, N).

    Dims of size 1 (or missing on the left) stay 1, to broadcast.
    """
    rank = info.max_plate_nesting + 1
    if batch_tensor.dim() > rank:
        raise ValueError(
            f"site '{name}' has log_prob of shape {tuple(batch_tensor.shape)}: more batch dims "
            "than plates; declare extra dims as event dims (.to_event) or add plates"
        )
    batch_tensor = batch_tensor.reshape(
        (1,) * (rank - batch_tensor.dim()) + tuple(batch_tensor.shape)
    )
    data_index = rank + info.data_dim
    other_dims = [d for d in range(1, rank) if d != data_index]
    if other_dims:
        batch_tensor = batch_tensor.sum(other_dims, keepdim=True)
    return batch_tensor.reshape(batch_tensor.shape[0], batch_tensor.shape[data_index])


def with_particle_dim(value: torch.Tensor, event_dims: int, info: ProgramInfo) -> torch.Tensor:
    """Pad a site value's batch dims with 1s on the left to particles + every plate."""
    batch_rank = value.dim() - event_dims
    return value.reshape((1,) * (info.max_plate_nesting + 1 - batch_rank) + tuple(value.shape))


def data_first(value: torch.Tensor, event_dims: int, info: ProgramInfo) -> torch.Tensor:
    """Pad a site value's batch dims to particles + every plate, then move data to dim 0."""
    value = with_particle_dim(value, event_dims, info)
    return value.movedim(info.max_plate_nesting + 1 + info.data_dim, 0)


def per_point_vector(value: torch.Tensor, info: ProgramInfo, event_dims: int) -> torch.Tensor:
    """(1, 1.., N, 1.., *event) -> (N, e): the latent of each data point as a flat vector."""
    return data_first(value, event_dims, info).reshape(info.num_data, -1)


def log_density_per_point(
    trace: Trace, info: ProgramInfo, num_particles: int, sites: Iterable[str]
) -> torch.Tensor:
    """Sum of the named sites' log-densities per particle and data point: shape (K, N)."""
    total = torch.zeros((), device=info.device)
    for name in sites:
        total = total + site_log_prob_per_point(trace.nodes[name], info)
    return total.expand(num_particles, info.num_data)


def log_density_total(
    trace: Trace, info: ProgramInfo, num_particles: int, sites: Iterable[str]
) -> torch.Tensor:
    """Sum of the named sites' log-densities per particle over every plate: (K,). The
    log-density of the whole data set, global sites counted once."""
    rank = info.max_plate_nesting + 1
    total = torch.zeros(num_particles, dtype=torch.float64, device=info.device)
    for name in sites:
        site = trace.nodes[name]
        log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
        log_prob = log_prob.reshape((1,) * (rank - log_prob.dim()) + tuple(log_prob.shape))
        total = total + log_prob.sum(tuple(range(1, rank))).double()
    return total


def check_guide_matches(
    model_trace: Trace, guide_trace: Trace, info: ProgramInfo, allow_enumerated: bool = False
) -> None:
    """The guide must sample every latent site of the model and nothing else, in the same plate
    (with ``allow_enumerated``, discrete model sites with enumerate support may be left out).

    :raises ValueError: naming the site (or the plate) that does not match.
    """
    guide_sites = {n: s for n, s in sample_sites(guide_trace) if not is_auxiliary(s)}
    model_sites = dict(sample_sites(model_trace))
    missing = [
        n
        for n in info.latent_sites
        if n not in guide_sites
        and not (allow_enumerated and model_sites[n]["fn"].has_enumerate_support)
    ]
    if missing:
        raise ValueError(f"the guide does not sample latent site(s) {missing} of the model")
    extra = [n for n in guide_sites if n not in model_sites]
    if extra:
        raise ValueError(
            f"the guide samples site(s) {extra} that the model does not have "
            "(mark auxiliary guide sites with infer={'is_auxiliary': True})"
        )
    observed = [n for n in guide_sites if model_sites[n]["is_observed"]]
    if observed:
        raise ValueError(f"the guide samples site(s) {observed} that the model observes")
    for name in (n for n in info.latent_sites if n in guide_sites):
        model_kind, guide_kind = _support_kind(model_sites[name]), _support_kind(guide_sites[name])
        if model_kind != guide_kind:
            raise ValueError(
                f"latent site '{name}' is {model_kind} in the model but {guide_kind} in the guide"
            )
    local = [n for n in guide_sites if n not in info.global_sites]
    if not local:
        return
    frame = _data_frame(guide_trace, "guide", info.num_data, info.data_plate)
    outside = [n for n in local if not _in_frame(guide_sites[n], frame)]
    if outside:
        raise ValueError(
            f"the guide samples local site(s) {outside} outside its data plate '{frame.name}'"
        )
    if frame.dim != info.data_dim:
        raise ValueError(
            f"the guide's data plate '{frame.name}' is at dim {frame.dim}; the model's is at "
            f"dim {info.data_dim}"
        )


def _support_kind(site: dict) -> str:
    return "discrete" if site["fn"].support.is_discrete else "continuous"


def vectorized_traces(
    model: Callable,
    guide: Callable,
    inputs: Inputs | torch.Tensor,
    num_particles: int,
    info: ProgramInfo,
) -> tuple[Trace, Trace]:
    """The guide traced under a particle plate and the model replayed against it: (model, guide)."""
    with particle_plate(num_particles, info):
        guide_trace = trace_program(guide, inputs)
        model_trace = trace_program(poutine.replay(model, trace=guide_trace), inputs)
    return model_trace, guide_trace


def particle_traces(
    model: Callable,
    guide: Callable,
    inputs: Inputs | torch.Tensor,
    num_particles: int,
    info: ProgramInfo,
) -> Iterator[tuple[Trace, Trace, int]]:
    """Traces of ``num_particles`` draws, as (model trace, guide trace, particles in them).

    One vectorised pair where ``info.vectorized``; otherwise one pair per particle, run
    without any extra plate, as Pyro's ``vectorize_particles=False`` does: the programs see
    the batch shapes they were written for. Either way :func:`per_point_sum` reads every
    trace as (particles, N).
    """
    if info.vectorized:
        yield (*vectorized_traces(model, guide, inputs, num_particles, info), num_particles)
        return
    for _ in range(num_particles):
        guide_trace = trace_program(guide, inputs)
        yield trace_program(poutine.replay(model, trace=guide_trace), inputs), guide_trace, 1


def log_importance_weights(
    model: Callable,
    guide: Callable,
    inputs: Inputs | torch.Tensor,
    num_particles: int,
    info: ProgramInfo,
) -> torch.Tensor:
    """log w = log p(x, z) - log q(z given x) for z ~ q: shape (K, N)."""
    return torch.cat(
        [
            log_weights_of_traces(model_trace, guide_trace, info, count)
            for model_trace, guide_trace, count in particle_traces(
                model, guide, inputs, num_particles, info
            )
        ]
    )


def check_vectorization(
    model: Callable, guide: Callable, inputs: Inputs, info: ProgramInfo
) -> bool:
    """Whether two particles in one vectorised run give the log weights of two separate runs.

    A network that expects a plain (N, D) batch (``BatchNorm1d``, ``softmax(dim=1)``, a
    ``torch.cat`` along dim 1) or an index written for one particle (``z[:, None]``) breaks or,
    worse, mixes particles and data points when the particle plate adds a dim on the left.
    The check replays each vectorised draw in a plain run and compares; on any difference or
    error the estimators evaluate particles one at a time, and say so once (a warning).
    """
    reason = vectorization_problem(model, guide, inputs, info)
    if reason is None:
        return True
    warnings.warn(f"evaluating particles one at a time (slower): {reason}", VectorizationWarning, 2)
    return False


class VectorizationWarning(UserWarning):
    """The model or guide cannot take the extra particle dimension; particles run one by one."""


def vectorization_problem(
    model: Callable, guide: Callable, inputs: Inputs, info: ProgramInfo
) -> str | None:
    """Why particles cannot share one vectorised run (see :func:`check_vectorization`), or
    None when they can."""
    checked = replace(info, vectorized=True)
    try:
        with torch.no_grad():
            model_trace, guide_trace = vectorized_traces(model, guide, inputs, 2, checked)
            together = log_weights_of_traces(model_trace, guide_trace, checked, 2)
    except Exception as error:  # any failure of the vectorised run means: run them apart
        return f"the vectorised run fails ({type(error).__name__}: {str(error).splitlines()[0]})"
    names = [n for n, _ in sample_sites(guide_trace)]  # auxiliary sites too: the same draw
    for particle in range(2):
        values = {n: _particle(guide_trace.nodes[n], particle, checked) for n in names}
        with torch.no_grad():
            apart_guide = trace_program(poutine.condition(guide, data=values), inputs)
            apart_model = trace_program(poutine.condition(model, data=values), inputs)
            apart = log_weights_of_traces(apart_model, apart_guide, checked, 1)[0]
        scale = 1e-4 if apart.dtype == torch.float32 else 1e-8
        close = torch.allclose(together[particle], apart, rtol=scale, atol=scale, equal_nan=True)
        if not close:
            worst = int((together[particle] - apart).abs().argmax())
            return (
                f"a vectorised particle's log weight differs from the same draw run alone "
                f"(point {worst}: {together[particle, worst].item():.6g} against "
                f"{apart[worst].item():.6g}); the programs mix the particle dimension with the "
                "data (a network that assumes a 2-D batch, or an index such as z[:, None])"
            )
    return None


def _particle(site: dict, particle: int, info: ProgramInfo) -> torch.Tensor:
    """A vectorised site's value for one particle, with the particle dim removed."""
    value = site["value"]
    position = value.dim() - len(site["fn"].event_shape) - (info.max_plate_nesting + 1)
    if position < 0 or value.shape[position] == 1:
        return value if position < 0 else value.select(position, 0)
    return value.select(position, particle)


def log_weights_of_traces(
    model_trace: Trace, guide_trace: Trace, info: ProgramInfo, num_particles: int
) -> torch.Tensor:
    """log p(x, z) - log q(z given x) of vectorised traces (:func:`vectorized_traces`): (K, N)."""
    model_names = [n for n, _ in sample_sites(model_trace) if n not in info.given_sites]
    guide_names = [n for n, s in sample_sites(guide_trace) if not is_auxiliary(s)]
    log_joint = log_density_per_point(model_trace, info, num_particles, model_names)
    log_weights = log_joint - log_density_per_point(guide_trace, info, num_particles, guide_names)
    if log_weights.device.type != "cpu":
        # Reading the check back would stall the device once per chunk of particles; a NaN
        # or +inf weight reaches the estimate, whose own check (once per call) names it.
        return log_weights
    bad = torch.isnan(log_weights) | (log_weights == math.inf)
    if bool(bad.any()):
        points = bad.any(0).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"log importance weights are NaN or +inf at points {points}: a log-density of the "
            "model or guide overflows there (data too large for the dtype, or a guide density "
            "of zero where the model has mass)"
        )
    return log_weights


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run with torch's RNG seeded by ``seed``, restoring the caller's RNG state afterwards.

    ``seed=None`` draws from the caller's RNG as it stands.

    :raises ValueError: for a seed that is not None or an integer in [0, 2**63 - 1].
    """
    if check_seed(seed) is None:
        yield
        return
    with forked_rng():
        torch.manual_seed(seed_32(seed))
        yield


FLOAT_DTYPES = (torch.float32, torch.float64)


@contextmanager
def computed_in(dtype: torch.dtype | None, inputs: Inputs, *programs: Callable) -> Iterator[Inputs]:
    """Run the block with x and every floating tensor the programs compute with cast to
    ``dtype``; yields the inputs to use (x cast).

    What is cast: the parameters and buffers of the programs' modules, and what their param
    sites read (the param store's tensors: networks registered with ``pyro.module`` in a plain
    function). Each tensor's ``.data`` is swapped for a cast copy and the original put back
    after, so the caller's tensors come back bit for bit (no float64 -> float32 -> float64
    round trip) and usable for training even when the block ran under ``inference_mode``.
    None changes nothing.
    """
    if dtype is None:
        yield inputs
        return
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be None, torch.float32 or torch.float64; got {dtype!r}")
    tensors = _floating_state(inputs, programs)
    originals = [tensor.data for tensor in tensors]
    try:
        for tensor in tensors:
            tensor.data = tensor.data.to(dtype)
        yield inputs.with_x(inputs.x.to(dtype))
    finally:
        for tensor, original in zip(tensors, originals):
            tensor.data = original


def _floating_state(inputs: Inputs, programs: tuple[Callable, ...]) -> list[torch.Tensor]:
    """The floating tensors behind the programs: their modules' parameters and buffers, and
    the param-store tensors their param sites read (found by one run on the original x)."""
    found: dict[int, torch.Tensor] = {}
    for module in modules_of(*programs):
        for tensor in [*module.parameters(), *module.buffers()]:
            found[id(tensor)] = tensor
    store = pyro.get_param_store()
    for program in programs:
        for name in _param_site_names(program, inputs):
            if name in store:
                tensor = store._params[name]  # the unconstrained tensor pyro.param reads
                found[id(tensor)] = tensor
    return [t for t in found.values() if t.is_floating_point()]


def _param_site_names(program: Callable, inputs: Inputs) -> list[str]:
    """Names of the param sites one run of ``program`` visits (none if it fails to run: the
    estimator's own run then reports why)."""
    tracer = poutine.trace(inputs.run)
    with torch.no_grad(), forked_rng():
        try:
            trace = tracer.get_trace(program)
        except Exception:  # noqa: BLE001
            return []
    return [name for name, site in trace.nodes.items() if site["type"] == "param"]


@contextmanager
def evaluation_mode(*programs: Callable) -> Iterator[None]:
    """Run the block with the programs' modules in eval mode, restoring each submodule's own
    mode after: an estimate must not move BatchNorm's running statistics, nor see dropout."""
    modules = [m for module in modules_of(*programs) for m in module.modules()]
    training = [m.training for m in modules]
    for module in modules:
        module.training = False
    try:
        yield
    finally:
        for module, mode in zip(modules, training):
            module.training = mode


def _floating_dtype(module: torch.nn.Module) -> torch.dtype | None:
    tensors = [*module.parameters(), *module.buffers()]
    return next((t.dtype for t in tensors if t.is_floating_point()), None)
