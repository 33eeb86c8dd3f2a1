"""What the estimators learn about a model or guide by running it: plates, sites, log-densities.

Everything here relies on one convention only: every sample site of a model lies inside a
vectorised ``pyro.plate("data", N)``. Latent and observed sites are told apart by the
trace (``site["is_observed"]``), never by their names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

DATA_PLATE = "data"
PARTICLE_PLATE = "_lvm_particles"


@dataclass(frozen=True)
class ProgramInfo:
    """The plate layout and sites of a model (and guide) run on data of N points.

    ``max_plate_nesting`` counts the plates of model and guide; vectorised particles go in
    one more plate to their left, at ``particle_dim``. ``data_dim`` is the (negative) dim of
    the data plate.
    """

    num_data: int
    max_plate_nesting: int
    data_dim: int
    latent_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]

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


def trace_program(fn: Callable, x: torch.Tensor) -> Trace:
    """One run of ``fn(x)`` with nothing blocked."""
    return poutine.trace(fn).get_trace(x)


def inspect_program(model: Callable, x: torch.Tensor) -> ProgramInfo:
    """Run the model once on ``x`` and check the plate convention.

    :raises ValueError: when the model has no vectorised ``"data"`` plate of size N, when a
        sample site lies outside it, or when the model has no observed site.
    """
    return _program_info(x, trace_program(model, x), None)


def inspect_pair(model: Callable, guide: Callable, x: torch.Tensor) -> ProgramInfo:
    """:func:`inspect_program` on the model replayed against the guide (plates of both
    counted), then :func:`check_guide_matches`."""
    guide_trace = trace_program(guide, x)
    # Checked first: replaying the guide carries its plate's size into the model's trace.
    if any(sample_sites(guide_trace)):
        _covering_data_frame(guide_trace, "guide", x)
    try:
        model_trace = trace_program(poutine.replay(model, trace=guide_trace), x)
    except Exception:
        # A guide that does not fit the model often breaks the model itself (a float where it
        # indexes by a discrete latent, a missing plate): name the mismatch if there is one.
        prior_trace = trace_program(model, x)
        check_guide_matches(prior_trace, guide_trace, _program_info(x, prior_trace, guide_trace))
        raise
    info = _program_info(x, model_trace, guide_trace)
    check_guide_matches(model_trace, guide_trace, info)
    return info


def _program_info(x: torch.Tensor, model_trace: Trace, guide_trace: Trace | None) -> ProgramInfo:
    traces = [model_trace] if guide_trace is None else [model_trace, guide_trace]
    data_frame = _covering_data_frame(model_trace, "model", x)
    for name, site in sample_sites(model_trace):
        if data_frame not in site["cond_indep_stack"]:
            raise ValueError(
                f"sample site '{name}' of the model lies outside pyro.plate('{DATA_PLATE}'); "
                "per-point estimates need every latent and observed site inside it"
            )
    latent = tuple(n for n, s in sample_sites(model_trace) if not s["is_observed"])
    observed = tuple(n for n, s in sample_sites(model_trace) if s["is_observed"])
    if not observed:
        raise ValueError("the model has no observed site: call it with the data, model(x)")
    nesting = max(
        -frame.dim
        for trace in traces
        for _, site in sample_sites(trace)
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    )
    return ProgramInfo(x.shape[0], nesting, data_frame.dim, latent, observed)


def _covering_data_frame(trace: Trace, role: str, x: torch.Tensor):
    """The data plate's frame, which must have one index per row of x."""
    data_frame = _data_frame(trace, role)
    if data_frame.size != x.shape[0]:
        raise ValueError(
            f"the {role}'s pyro.plate('{DATA_PLATE}') has size {data_frame.size} but x has "
            f"{x.shape[0]} rows; the plate must cover every data point (no subsampling)"
        )
    return data_frame


def _data_frame(trace: Trace, role: str):
    for _, site in sample_sites(trace):
        for frame in site["cond_indep_stack"]:
            if frame.name == DATA_PLATE:
                if not frame.vectorized:
                    raise ValueError(f"the {role}'s pyro.plate('{DATA_PLATE}') must be vectorised")
                return frame
    raise ValueError(
        f"the {role} has no pyro.plate('{DATA_PLATE}', N) around its sample sites; "
        "the estimators need it to tell data points apart"
    )


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


def data_first(value: torch.Tensor, event_dims: int, info: ProgramInfo) -> torch.Tensor:
    """Pad a site value's batch dims to particles + every plate, then move data to dim 0."""
    batch_rank = value.dim() - event_dims
    value = value.reshape((1,) * (info.max_plate_nesting + 1 - batch_rank) + tuple(value.shape))
    return value.movedim(info.max_plate_nesting + 1 + info.data_dim, 0)


def per_point_vector(value: torch.Tensor, info: ProgramInfo, event_dims: int) -> torch.Tensor:
    """(1, 1.., N, 1.., *event) -> (N, e): the latent of each data point as a flat vector."""
    return data_first(value, event_dims, info).reshape(info.num_data, -1)


def log_density_per_point(
    trace: Trace, info: ProgramInfo, num_particles: int, sites: Iterable[str]
) -> torch.Tensor:
    """Sum of the named sites' log-densities per particle and data point: shape (K, N)."""
    total = torch.zeros(())
    for name in sites:
        total = total + site_log_prob_per_point(trace.nodes[name], info)
    return total.expand(num_particles, info.num_data)


def check_guide_matches(model_trace: Trace, guide_trace: Trace, info: ProgramInfo) -> None:
    """The guide must sample every latent site of the model and nothing else, in the same plate.

    :raises ValueError: naming the site (or the plate) that does not match.
    """
    guide_sites = {n: s for n, s in sample_sites(guide_trace) if not is_auxiliary(s)}
    missing = [n for n in info.latent_sites if n not in guide_sites]
    if missing:
        raise ValueError(f"the guide does not sample latent site(s) {missing} of the model")
    model_sites = dict(sample_sites(model_trace))
    extra = [n for n in guide_sites if n not in model_sites]
    if extra:
        raise ValueError(
            f"the guide samples site(s) {extra} that the model does not have "
            "(mark auxiliary guide sites with infer={'is_auxiliary': True})"
        )
    observed = [n for n in guide_sites if model_sites[n]["is_observed"]]
    if observed:
        raise ValueError(f"the guide samples site(s) {observed} that the model observes")
    for name in info.latent_sites:
        model_kind, guide_kind = _support_kind(model_sites[name]), _support_kind(guide_sites[name])
        if model_kind != guide_kind:
            raise ValueError(
                f"latent site '{name}' is {model_kind} in the model but {guide_kind} in the guide"
            )
    frame = _data_frame(guide_trace, "guide")
    if frame.size != info.num_data or frame.dim != info.data_dim:
        raise ValueError(
            f"the guide's pyro.plate('{DATA_PLATE}') has size {frame.size} at dim {frame.dim}; "
            f"the model's has size {info.num_data} at dim {info.data_dim}"
        )


def _support_kind(site: dict) -> str:
    return "discrete" if site["fn"].support.is_discrete else "continuous"


def vectorized_traces(
    model: Callable, guide: Callable, x: torch.Tensor, num_particles: int, info: ProgramInfo
) -> tuple[Trace, Trace]:
    """The guide traced under a particle plate and the model replayed against it: (model, guide)."""
    with particle_plate(num_particles, info):
        guide_trace = trace_program(guide, x)
        model_trace = trace_program(poutine.replay(model, trace=guide_trace), x)
    return model_trace, guide_trace


def log_importance_weights(
    model: Callable, guide: Callable, x: torch.Tensor, num_particles: int, info: ProgramInfo
) -> torch.Tensor:
    """log w = log p(x, z) - log q(z given x) for z ~ q, vectorised: shape (K, N)."""
    model_trace, guide_trace = vectorized_traces(model, guide, x, num_particles, info)
    return log_weights_of_traces(model_trace, guide_trace, info, num_particles)


def log_weights_of_traces(
    model_trace: Trace, guide_trace: Trace, info: ProgramInfo, num_particles: int
) -> torch.Tensor:
    """log p(x, z) - log q(z given x) of vectorised traces (:func:`vectorized_traces`): (K, N)."""
    model_names = [n for n, _ in sample_sites(model_trace)]
    guide_names = [n for n, s in sample_sites(guide_trace) if not is_auxiliary(s)]
    log_joint = log_density_per_point(model_trace, info, num_particles, model_names)
    log_weights = log_joint - log_density_per_point(guide_trace, info, num_particles, guide_names)
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
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


FLOAT_DTYPES = (torch.float32, torch.float64)


@contextmanager
def computed_in(dtype: torch.dtype | None, *programs: Callable) -> Iterator[None]:
    """Run the block with every program that is a ``torch.nn.Module`` cast to ``dtype``.

    ``Module.to`` converts parameters in place, so the param store and any optimiser keep the
    same tensors; float32 -> float64 -> float32 is exact, so the modules come back unchanged.
    None changes nothing.
    """
    if dtype is None:
        yield
        return
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be None, torch.float32 or torch.float64; got {dtype!r}")
    modules = list({id(p): p for p in programs if isinstance(p, torch.nn.Module)}.values())
    originals = [_floating_dtype(module) for module in modules]
    for module in modules:
        module.to(dtype)
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            if original is not None:
                module.to(original)


def _floating_dtype(module: torch.nn.Module) -> torch.dtype | None:
    tensors = [*module.parameters(), *module.buffers()]
    return next((t.dtype for t in tensors if t.is_floating_point()), None)
