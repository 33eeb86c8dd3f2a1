"""The inference gap of an encoder, split into its approximation and amortisation parts.

Cremer, Li and Duvenaud (2018), "Inference suboptimality in variational autoencoders": for an
encoder q(z given x) in a variational family Q, and q*_x the best member of Q for the point x
alone,

    log p(x) - L[q]  =  (log p(x) - L[q*_x])  +  (L[q*_x] - L[q])
    inference gap       approximation gap        amortisation gap

with L the ELBO. The approximation gap is what the family costs (KL(q*_x || p(z given x))),
the amortisation gap what sharing one network across points costs. Here Q is the diagonal
Gaussians (``guides.MeanField``: one free N(m_n, diag s_n^2) per point), the family of
``guides.AmortizedGaussian``; for an encoder outside it (a full-covariance one, the exact
posterior) the "amortisation gap" can be negative.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace

from guides import MeanField
from inference._programs import (
    Inputs,
    ProgramInfo,
    evaluation_mode,
    prepare_pair,
    seeded,
    trace_program,
)
from inference._sites import modules_of
from inference._validate import check_per_point, check_positive_int, check_seed
from inference.estimators.bounds import Estimate, elbo, iw_log_marginal
from inference.estimators.exact import NoExactValueError, exact_log_marginal
from inference.training.optim import MultiTensorAdam
from inference.training.train import fit
from lvm_models._base import forked_rng

GAP_BOUNDS = ("elbo", "iw")
_FIT_PARTICLES = 32  # ELBO draws per point and step while fitting q*: little gradient noise
_FINAL_LR_FACTOR = 0.01  # the learning rate decays geometrically to this fraction of lr


@dataclass(frozen=True)
class GapDecomposition:
    """The inference gap of an encoder per data point, and its two parts, in nats.

    Each field is an :class:`~inference.Estimate`: ``per_point`` (N,), ``per_point_stderr``
    (N,), and ``mean`` / ``stderr`` over the points. Standard errors are Monte Carlo, given
    the points and the fitted q* (its optimisation error is not in them); the three bounds
    use independent draws, so a gap's error is the root sum of squares of its terms'.

    :ivar log_marginal: log p(x): exact (zero standard errors), given, or IW with q*.
    :ivar encoder: the bound of the encoder, L[q] (``bound``).
    :ivar optimal: the bound of the best per-point diagonal Gaussian, L[q*].
    :ivar approximation_gap: log p(x) - L[q*].
    :ivar amortization_gap: L[q*] - L[q].
    :ivar inference_gap: log p(x) - L[q], their sum.
    :ivar bound: ``"elbo"`` or ``"iw"`` (IW_K with K = ``num_samples``, for both q and q*).
    :ivar reference: where log p(x) came from: ``"exact"``, ``"given"`` or ``"iw"``.
    """

    log_marginal: Estimate
    encoder: Estimate
    optimal: Estimate
    approximation_gap: Estimate
    amortization_gap: Estimate
    inference_gap: Estimate
    bound: str
    reference: str

    def to_dict(self) -> dict:
        """Means and standard errors of every part (no per-point tensors), for JSON."""
        parts = (
            "log_marginal",
            "encoder",
            "optimal",
            "approximation_gap",
            "amortization_gap",
            "inference_gap",
        )
        summary = {
            name: {"mean": getattr(self, name).mean, "stderr": getattr(self, name).stderr}
            for name in parts
        }
        return {**summary, "bound": self.bound, "reference": self.reference}


def gap_decomposition(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    exact: torch.Tensor | None = None,
    reference: Estimate | None = None,
    bound: str = "elbo",
    num_samples: int = 100,
    reference_samples: int = 1000,
    steps: int = 1000,
    lr: float = 0.05,
    seed: int | None = None,
) -> GapDecomposition:
    """Split log p(x) - L[q] into approximation and amortisation gaps, per point (Cremer,
    Li and Duvenaud, 2018).

    1. L[q]: the encoder's ELBO (``bound="elbo"``, as Cremer et al.) or IW_K, per point, with
       ``num_samples`` draws.
    2. q*: a :class:`guides.MeanField` (a free diagonal Gaussian per point), started at the
       encoder's mean and standard deviations, fitted by :func:`inference.fit` (ELBO, full
       batch, ``steps`` steps of Adam from ``lr`` decaying geometrically to lr / 100) with the
       model's parameters held fixed: hidden from SVI by ``poutine.block`` and their
       ``requires_grad`` off for the fit, then restored. L[q*] as in step 1, fresh draws.
    3. log p(x): ``exact`` if given, else ``reference`` (e.g. :func:`inference.backends.numpyro.
       nuts_log_marginal`), else :func:`inference.exact_log_marginal` where it has a route,
       else IW with q* as proposal and K = ``reference_samples`` (a stochastic lower bound, so
       the approximation gap is then one too).

    With ``bound="iw"`` every L above is IW_K (K = ``num_samples``): the gaps of the
    importance-weighted bound, smaller than the ELBO's (q* is still the ELBO's best).

    The model must have one latent site, continuous, drawn inside ``pyro.plate("data", N)``
    with event shape (k,): the layout MeanField samples.

    Example::

        gaps = gap_decomposition(model, encoder, x[:200], seed=0)
        gaps.approximation_gap.mean, gaps.amortization_gap.mean  # nats per point

    :param x: data (N, D).
    :param exact: exact log p(x) (N,), if already known.
    :param reference: an :class:`~inference.Estimate` of log p(x) (N,) to use instead.
    :param bound: ``"elbo"`` or ``"iw"``.
    :param num_samples: draws per point of each bound (>= 2, for a standard error).
    :param reference_samples: K of the IW reference, where it is needed.
    :param steps, lr: the fit of q*.
    :param seed: seeds the fit and every estimate; None uses the caller's RNG.
    :returns: a :class:`GapDecomposition` of (N,) estimates in nats.
    """
    if bound not in GAP_BOUNDS:
        raise ValueError(f"bound must be one of {GAP_BOUNDS}; got {bound!r}")
    if check_positive_int("num_samples", num_samples) < 2:
        raise ValueError(f"num_samples must be >= 2 for a standard error; got {num_samples}")
    check_positive_int("reference_samples", reference_samples)
    check_positive_int("steps", steps)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    seeds = _seeds(check_seed(seed))
    with torch.no_grad(), seeded(seeds[0]), evaluation_mode(model, guide):
        inputs, info = prepare_pair(model, guide, x)
        guide_trace = trace_program(guide, inputs)
    if exact is not None:
        check_per_point("exact", exact, inputs.num_data)
    if reference is not None and (
        not isinstance(reference, Estimate) or reference.per_point.shape != (inputs.num_data,)
    ):
        shape = getattr(getattr(reference, "per_point", None), "shape", None)
        raise ValueError(
            f"reference must be an Estimate with per_point of shape ({inputs.num_data},); got "
            f"{type(reference).__name__} of shape {tuple(shape) if shape is not None else None}"
        )
    site = _single_vector_site(info, guide_trace, inputs.num_data)

    def measure(program: Callable, seed: int | None) -> Estimate:
        if bound == "elbo":
            return elbo(model, program, x, num_particles=num_samples, seed=seed)
        return iw_log_marginal(model, program, x, num_samples=num_samples, seed=seed)

    encoder = measure(guide, seeds[1])
    optimal_guide = _mean_field_from(guide_trace.nodes[site], site)
    # fit reseeds torch's global RNG; the caller's stream is put back after a seeded fit.
    keep_rng = contextlib.nullcontext() if seeds[2] is None else forked_rng()
    with keep_rng, _held_fixed(model, inputs) as fixed_model:
        fit(
            fixed_model,
            optimal_guide,
            x,
            steps=steps,
            num_particles=_FIT_PARTICLES,
            optimizer=MultiTensorAdam(
                {"lr": lr}, lr_factor=lambda step: _FINAL_LR_FACTOR ** (step / steps)
            ),
            seed=seeds[2],
            progress=False,
            log_every=steps,
        )
    optimal = measure(optimal_guide, seeds[3])
    log_marginal, source = _log_marginal(
        model, optimal_guide, x, exact, reference, reference_samples, seeds[4]
    )
    return GapDecomposition(
        log_marginal=log_marginal,
        encoder=encoder,
        optimal=optimal,
        approximation_gap=_difference(log_marginal, optimal),
        amortization_gap=_difference(optimal, encoder),
        inference_gap=_difference(log_marginal, encoder),
        bound=bound,
        reference=source,
    )


def _seeds(seed: int | None) -> list[int | None]:
    """Independent seeds for the five random steps (None: the caller's RNG for each)."""
    if seed is None:
        return [None] * 5
    generator = torch.Generator().manual_seed(seed % 2**63)
    return torch.randint(2**62, (5,), generator=generator).tolist()


def _single_vector_site(info: ProgramInfo, guide_trace: Trace, num_data: int) -> str:
    """The model's one latent site, checked to be a continuous (N, k) draw in plate "data"."""
    if len(info.latent_sites) != 1:
        raise ValueError(
            "gap_decomposition fits one diagonal Gaussian per point to a single latent site; "
            f"the model has latent sites {list(info.latent_sites)}"
        )
    name = info.latent_sites[0]
    site = guide_trace.nodes[name]
    shape = tuple(site["value"].shape)
    if (
        site["fn"].support.is_discrete
        or len(site["fn"].event_shape) != 1
        or len(shape) != 2
        or shape[0] != num_data
        or info.data_plate != "data"
    ):
        raise ValueError(
            f"gap_decomposition needs the latent site '{name}' to be continuous, of shape "
            f"(N, k) = ({num_data}, k) with event shape (k,), in pyro.plate('data'); got shape "
            f"{shape}, event shape {tuple(site['fn'].event_shape)}, plate '{info.data_plate}'"
        )
    return name


def _mean_field_from(site: dict, name: str) -> MeanField:
    """A MeanField over ``name`` started at the encoder's mean and marginal standard deviations
    (the origin and unit scales where the encoder's distribution has no moments)."""
    num_data, latent_dim = site["value"].shape
    dtype, device = site["value"].dtype, site["value"].device
    guide = MeanField(num_data, latent_dim, site=name).to(dtype=dtype, device=device)
    loc = torch.zeros(num_data, latent_dim, dtype=dtype, device=device)
    scale = torch.ones_like(guide.scale)
    with contextlib.suppress(NotImplementedError):
        loc = site["fn"].mean.expand(num_data, latent_dim)
        variance = site["fn"].variance.expand(num_data, latent_dim)
        # A point mass (a Delta encoder) has no spread to start from: unit scales there.
        scale = torch.where(variance > 0, variance.sqrt(), scale)
    with torch.no_grad():
        guide.loc.copy_(loc)
        guide.scale = scale.detach().clone()
    return guide


@contextlib.contextmanager
def _held_fixed(model: Callable, inputs: Inputs) -> Iterator[Callable]:
    """The model with its parameters out of training: hidden from SVI's parameter capture
    (``poutine.block``) and ``requires_grad`` off (so no gradient lands on them), restored
    after."""
    with torch.no_grad(), forked_rng():
        capture = poutine.trace(inputs.run, param_only=True).get_trace(model)
    tensors = {id(p): p for m in modules_of(model) for p in m.parameters()}
    for site in capture.nodes.values():
        unconstrained = site["value"].unconstrained()
        tensors[id(unconstrained)] = unconstrained
    flags = {key: tensor.requires_grad for key, tensor in tensors.items()}
    try:
        for tensor in tensors.values():
            tensor.requires_grad_(False)
        with warnings.catch_warnings():  # Pyro notes each frozen network weight it skips
            warnings.filterwarnings("ignore", message=".*not registered in the param store")
            yield poutine.block(model, hide_types=["param"])
    finally:
        for key, tensor in tensors.items():
            tensor.requires_grad_(flags[key])


def _log_marginal(
    model: Callable,
    proposal: Callable,
    x: torch.Tensor,
    exact: torch.Tensor | None,
    reference: Estimate | None,
    num_samples: int,
    seed: int | None,
) -> tuple[Estimate, str]:
    if exact is None and reference is None:
        try:
            exact = exact_log_marginal(model, x)
        except NoExactValueError:
            return iw_log_marginal(model, proposal, x, num_samples=num_samples, seed=seed), "iw"
    if exact is not None:
        exact = exact.detach().double()
        return Estimate(exact, torch.zeros_like(exact), 0), "exact"
    return reference, "given"


def _difference(minuend: Estimate, subtrahend: Estimate) -> Estimate:
    """Per-point a - b of two independent estimates; standard errors add in quadrature."""
    stderr = torch.hypot(minuend.per_point_stderr.double(), subtrahend.per_point_stderr.double())
    return Estimate(
        minuend.per_point.double() - subtrahend.per_point.double(),
        stderr,
        max(minuend.num_samples, subtrahend.num_samples),
    )
