"""Quadrature of log p(x) = log integral p(x, z) dz for latents of dimension 1 or 2 that
certifies itself or refuses.

The integral runs in unconstrained coordinates u (z = T(u), see
:mod:`inference.estimators._latent`), per data point, in four steps:

1. **Modes, wherever they are.** Damped Newton ascent on log p(x, z(u)) + log |det dz/du|
   from many starts per point (prior draws and the best nodes of a grid over the prior's
   box), with a trust region, so a posterior far from the prior, tilted, or with several
   modes is followed to each of its modes. Each end point gets a Laplace estimate of its mass
   and its marginal widths from the Hessian; ends whose mass is negligible are dropped.
   The starts are the coarse grid's highest local maxima (step 4) and a few prior draws.
2. **A box and a step from the modes.** In coordinates whitened by the largest mode's
   Laplace covariance, the box spans every kept mode +- ``_BOX_SDS`` of its widths; the
   grid step is a fraction of the narrowest width.
3. **A trapezoid rule checked twice.** The rule on the grid and on every other node must
   agree to ``_REFINE_TOLERANCE`` (else the grid is refined), and the mass on the box's
   boundary must be negligible (else the box is widened).
4. **A coarse pass over everything.** A coarse grid over the prior's box and the quadrature
   box together; mass it finds outside the quadrature box means a mode was missed: its
   nodes become new starts and the point is done again, up to ``_MAX_ROUNDS`` times.

Whatever cannot be certified this way raises :class:`NoExactValueError`. The method is
written by hand: Pyro has no quadrature.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from inference._programs import Inputs, ProgramInfo, particle_plate, trace_program
from inference.estimators._latent import LatentSpace, model_log_densities
from lvm_models import NoExactValueError
from lvm_models._base import forked_rng

_PRIOR_DRAWS = 512  # prior draws that place the prior's box
_PRIOR_BOX_SDS = 12.0
_PRIOR_STARTS = 4  # Newton starts per point from the prior
_GRID_STARTS = 12  # Newton starts per point from the coarse grid's highest local maxima
_MISSED_STARTS = 32  # new starts per point from the coarse pass's best nodes outside the box
_NEWTON_ITERATIONS = 80
_MODE_LOG_MASS_CUTOFF = 25.0  # modes whose Laplace mass is below e^-25 of the largest: dropped
_BOX_SDS = 10.0
_NODES_PER_SD = 3.0
_REFINE_TOLERANCE = 1e-6  # nats between the grid and its every-other-node sub-grid
_EDGE_LOG_FRACTION = math.log(1e-10)  # boundary mass allowed, relative to the whole
_MISSED_LOG_FRACTION = math.log(1e-6)  # mass outside the box the coarse pass may find
_MAX_ROUNDS = 5
_COARSE_NODES = {1: 4001, 2: 101}
_MAX_NODES = {1: 2**20 + 1, 2: 2**21}
_EVALS_PER_CHUNK = 2**17
_ROUNDING_ULPS = 64


def certified_quadrature(
    model: Callable, inputs: Inputs, info: ProgramInfo, space: LatentSpace
) -> torch.Tensor:
    """log p(x) per point (N,) to within about 1e-6 nats (or the round-off of the model's
    dtype), summed in float64 and returned in the model's dtype; or
    :class:`NoExactValueError`."""
    integrand = _Integrand(model, inputs, space)
    device = inputs.x.device
    log_marginal = torch.empty(info.num_data, dtype=torch.float64, device=device)
    prior_box = integrand.prior_box()
    pending = torch.arange(info.num_data, device=device)
    extra_starts: torch.Tensor | None = None
    for _ in range(_MAX_ROUNDS):
        part = integrand.subset(pending)
        box_of_prior = _Box(prior_box.low[pending], prior_box.high[pending])
        over_prior = _CoarseGrid.over(part, box_of_prior)
        modes = _find_modes(part, _starts(part, over_prior, extra_starts), box_of_prior)
        frame = _Frame.of(modes)
        log_z, box = _integrate(_FramedIntegrand(part, frame), _box_from_modes(modes, frame))
        log_marginal[pending] = log_z
        search = frame.bounding_box(box).union(box_of_prior)
        over_search = over_prior.redone(part, search, box_of_prior)
        missed, missed_at = over_search.mass_outside(frame, box, log_z)
        if not bool(missed.any()):
            return log_marginal.to(integrand.dtype)
        # The next round starts again from every mode found so far and the missed nodes.
        pending = pending[missed]
        extra_starts = torch.cat([modes.u, missed_at])[:, missed]
    raise NoExactValueError(
        f"quadrature: at points {pending[:5].tolist()} a coarse grid keeps finding mass outside "
        "every mode the search located (more modes than it can follow)"
    )


@dataclass(frozen=True)
class _Box:
    """Per-point boxes in u: ``low``, ``high`` of shape (N, d)."""

    low: torch.Tensor
    high: torch.Tensor

    def union(self, other: _Box) -> _Box:
        return _Box(torch.minimum(self.low, other.low), torch.maximum(self.high, other.high))

    def contains(self, u: torch.Tensor) -> torch.Tensor:
        """u (M, N, d) -> (M, N) bool."""
        return ((u >= self.low) & (u <= self.high)).all(-1)


@dataclass(frozen=True)
class _Modes:
    """End points of the Newton search: u (S, N, d), their log mass (S, N), the precision
    -H (S, N, d, d), whether it is positive definite (S, N), and the widths (N, d) to assume
    where it is not."""

    u: torch.Tensor
    log_mass: torch.Tensor
    precision: torch.Tensor
    definite: torch.Tensor
    fallback_sd: torch.Tensor

    def widths(self, frame: _Frame) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal sds, which set the box, and slice widths, which set the grid step, in the
        frame's coordinates: (S, N, d) each.

        The marginal sd along axis i is sqrt(Sigma_ii), the width of a slice along it
        1 / sqrt(P_ii): a posterior narrow along a diagonal is wide in both marginals but
        narrow in every slice. Where P is not positive definite the marginal sd falls back
        to ``fallback_sd``, and so does a slice width where P_ii <= 0 (a ring is flat along
        itself, not across).
        """
        precision = frame.scale.mT.unsqueeze(0) @ self.precision @ frame.scale.unsqueeze(0)
        covariance, _ = _inverse_if_definite(precision)
        fallback = (self.fallback_sd / torch.diagonal(frame.scale, dim1=-2, dim2=-1)).expand(
            self.u.shape
        )
        sd = torch.diagonal(covariance, dim1=-2, dim2=-1).clamp_min(0).sqrt()
        sd = torch.where(self.definite.unsqueeze(-1), sd, fallback)
        curvature = torch.diagonal(precision, dim1=-2, dim2=-1)
        slice_width = torch.where(curvature > 0, curvature.clamp_min(1e-300).rsqrt(), fallback)
        return sd, slice_width


@dataclass(frozen=True)
class _Frame:
    """Per-point affine coordinates v with u = center + scale v: center (N, d), scale
    (N, d, d) lower triangular. Whitened by the largest mode's covariance, a correlated
    posterior needs no finer grid than an uncorrelated one."""

    center: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def of(cls, modes: _Modes) -> _Frame:
        """Centred on each point's largest mode and scaled by its Laplace covariance (the
        identity where that mode is not strictly concave)."""
        best = modes.log_mass.argmax(0)  # (N,)
        points = torch.arange(best.shape[0], device=best.device)
        precision = modes.precision[best, points]  # (N, d, d)
        covariance, definite = _inverse_if_definite(precision)
        eye = torch.eye(precision.shape[-1], dtype=precision.dtype, device=precision.device)
        covariance = torch.where(definite[..., None, None], covariance, eye)
        return cls(modes.u[best, points], torch.linalg.cholesky(covariance))

    @property
    def log_det(self) -> torch.Tensor:
        return torch.diagonal(self.scale, dim1=-2, dim2=-1).log().sum(-1)

    def subset(self, indices: torch.Tensor) -> _Frame:
        return _Frame(self.center[indices], self.scale[indices])

    def to_u(self, v: torch.Tensor) -> torch.Tensor:
        """(M, N, d) -> (M, N, d)."""
        return self.center + (self.scale @ v.unsqueeze(-1)).squeeze(-1)

    def to_v(self, u: torch.Tensor) -> torch.Tensor:
        difference = (u - self.center).unsqueeze(-1).movedim(0, -1).squeeze(-2)  # (N, d, M)
        solved = torch.linalg.solve_triangular(self.scale, difference, upper=False)
        return solved.movedim(-1, 0)

    def bounding_box(self, box: _Box) -> _Box:
        """The axis-aligned box in u that holds the box ``box`` in v."""
        dim = box.low.shape[-1]
        corners = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * dim).reshape(-1, dim)
        corners = corners.to(box.low)
        v = box.low + (box.high - box.low) * corners.unsqueeze(1)  # (2^d, N, d)
        u = self.to_u(v)
        return _Box(u.min(0).values, u.max(0).values)


class _FramedIntegrand:
    """The integrand in a frame's coordinates v, with its Jacobian log |det scale|."""

    def __init__(self, integrand: _Integrand, frame: _Frame):
        self.integrand, self.frame = integrand, frame

    @property
    def dim(self) -> int:
        return self.integrand.dim

    @property
    def dtype(self) -> torch.dtype:
        return self.integrand.dtype

    def subset(self, indices: torch.Tensor) -> _FramedIntegrand:
        return _FramedIntegrand(self.integrand.subset(indices), self.frame.subset(indices))

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.integrand(self.frame.to_u(v)) + self.frame.log_det


@dataclass(frozen=True)
class _GridBox:
    """A box with the grid step per point and dimension: the nodes per dim follow."""

    box: _Box
    step: torch.Tensor

    def nodes_per_dim(self) -> torch.Tensor:
        """(N, d) odd counts, so the every-other-node sub-grid keeps both ends."""
        intervals = ((self.box.high - self.box.low) / self.step).ceil().clamp_min(8)
        return (2 * (intervals / 2).ceil() + 1).long()


def _density_dtype(model: Callable, inputs: Inputs, space: LatentSpace) -> torch.dtype:
    """The dtype grids run in: the wider of the latent's and the one the model computes the
    density of its data in (float64 for float64 x and a float32 prior; float32 for a float32
    network that casts float64 x to its own dtype). The sums run in float64 either way."""
    with forked_rng():  # the starts' prior draws stay as they were
        trace = trace_program(model, inputs)
    observed = [
        site["fn"].log_prob(site["value"]).dtype
        for site in trace.nodes.values()
        if site["type"] == "sample" and site["is_observed"]
    ]
    return functools.reduce(torch.promote_types, observed, space.dtype)


class _Integrand:
    """log p(x, z(u)) + log |det dz/du| of a model at u (M, N, d), per (M, N)."""

    def __init__(
        self, model: Callable, inputs: Inputs, space: LatentSpace, dtype: torch.dtype | None = None
    ):
        self.model, self.inputs, self.space = model, inputs, space
        self.dtype = dtype or _density_dtype(model, inputs, space)

    @property
    def dim(self) -> int:
        return self.space.dim

    def subset(self, indices: torch.Tensor) -> _Integrand:
        if indices.numel() == self.inputs.num_data:
            return self
        return _Integrand(
            self.model,
            self.inputs.subset(indices),
            self.space.subset(indices.numel()),
            self.dtype,
        )

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        chunk = max(1, _EVALS_PER_CHUNK // self.inputs.num_data)
        return torch.cat([self._evaluate(part) for part in u.split(chunk)], dim=0)

    def _evaluate(self, u: torch.Tensor) -> torch.Tensor:
        values, log_jacobian = self.space.constrain(u)
        log_prior, log_likelihood = model_log_densities(self.model, self.inputs, self.space, values)
        log_joint = log_prior + log_likelihood + log_jacobian
        return torch.nan_to_num(log_joint, nan=-math.inf)

    def derivatives(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Value (S, N), gradient (S, N, d) and Hessian (S, N, d, d) in u."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            value = self._evaluate(u)
            finite = torch.where(value.isfinite(), value, torch.zeros_like(value))
            (grad,) = torch.autograd.grad(finite.sum(), u, create_graph=True)
            rows = [
                torch.autograd.grad(grad[..., i].sum(), u, retain_graph=True, allow_unused=True)[0]
                for i in range(self.dim)
            ]
        hessian = torch.stack([torch.zeros_like(u) if r is None else r for r in rows], dim=-2)
        bad = ~(grad.isfinite().all(-1) & hessian.isfinite().all(-1).all(-1))
        value = torch.where(bad, torch.full_like(value, -math.inf), value)
        return value.detach(), grad.detach().nan_to_num(0.0), hessian.detach().nan_to_num(0.0)

    def prior_box(self) -> _Box:
        """A box (N, d) holding the prior's mass: prior draws' mean +- 12 sd, in u."""
        with particle_plate(_PRIOR_DRAWS, self.space.info):
            trace = trace_program(self.model, self.inputs)
        u = self.space.unconstrain({n: trace.nodes[n]["value"] for n in self.space.sites})
        center = u.mean(0)
        half_width = _PRIOR_BOX_SDS * u.std(0).clamp_min(1e-3)
        return _Box(center - half_width, center + half_width)


@dataclass(frozen=True)
class _CoarseGrid:
    """The integrand on a coarse grid over a box: nodes (M, N, d), values (M, N), and the log
    volume of one cell (N,)."""

    nodes: torch.Tensor
    log_joint: torch.Tensor
    log_cell: torch.Tensor

    @classmethod
    def over(cls, integrand: _Integrand, box: _Box) -> _CoarseGrid:
        count = _COARSE_NODES[integrand.dim]
        nodes = _grid(box, count, integrand.dtype)
        log_cell = ((box.high - box.low) / (count - 1)).log().sum(-1)
        return cls(nodes, integrand(nodes), log_cell)

    def redone(self, integrand: _Integrand, box: _Box, old: _Box) -> _CoarseGrid:
        """This grid over ``old`` (N, d), redone over ``box`` at the points where the two
        boxes differ (only there: the grid is the same elsewhere)."""
        changed = ((box.low != old.low) | (box.high != old.high)).any(-1).nonzero().squeeze(-1)
        if changed.numel() == 0:
            return self
        new = _CoarseGrid.over(integrand.subset(changed), _Box(box.low[changed], box.high[changed]))
        merged = []
        for mine, theirs in zip(
            (self.nodes, self.log_joint, self.log_cell), (new.nodes, new.log_joint, new.log_cell)
        ):
            # The boxes may differ in dtype (the prior's and the frame's): keep the wider.
            both = mine.to(torch.promote_types(mine.dtype, theirs.dtype), copy=True)
            both.index_copy_(int(mine.dim() > 1), changed, theirs.to(both.dtype))  # the N dim
            merged.append(both)
        return _CoarseGrid(*merged)

    def best_nodes(self, count: int, log_joint: torch.Tensor | None = None) -> torch.Tensor:
        """The ``count`` nodes of highest value per point: (count, N, d)."""
        values = self.log_joint if log_joint is None else log_joint
        best = values.topk(count, dim=0).indices  # (count, N)
        return self.nodes.gather(0, best.unsqueeze(-1).expand(-1, -1, self.nodes.shape[-1]))

    def local_maxima(self, count: int) -> torch.Tensor:
        """The ``count`` highest nodes per point that are at least as high as their grid
        neighbours (ties and plateaus included), as Newton starts: (count, N, d)."""
        dim, num_data = self.nodes.shape[-1], self.nodes.shape[1]
        values = self.log_joint.reshape(*[_COARSE_NODES[dim]] * dim, num_data)
        peak = torch.ones_like(values, dtype=torch.bool)
        for axis in range(dim):
            padded = torch.nn.functional.pad(
                values.movedim(axis, -1), (1, 1), value=-math.inf
            ).movedim(-1, axis)
            centre = padded.narrow(axis, 1, values.shape[axis])
            peak &= (centre >= padded.narrow(axis, 0, values.shape[axis])) & (
                centre >= padded.narrow(axis, 2, values.shape[axis])
            )
        peaks = torch.where(peak, values, -math.inf).reshape(-1, num_data)
        return self.best_nodes(count, peaks)

    def mass_outside(
        self, frame: _Frame, box: _Box, log_z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which points have mass outside ``box`` (in ``frame``'s coordinates) beyond
        ``_MISSED_LOG_FRACTION`` of exp(log_z) (N,) bool, and their best nodes outside it
        (G, N, d) as new starts."""
        inside = box.contains(frame.to_v(self.nodes))
        outside = torch.where(inside, -math.inf, self.log_joint)
        missed = torch.logsumexp(outside, 0) + self.log_cell > log_z + _MISSED_LOG_FRACTION
        return missed, self.best_nodes(_MISSED_STARTS, outside)


def _starts(integrand: _Integrand, coarse: _CoarseGrid, extra: torch.Tensor | None) -> torch.Tensor:
    """Newton starts (S, N, d): prior draws, the best nodes of a coarse grid over the prior's
    box, and any ``extra`` starts (modes of earlier rounds, nodes of missed mass)."""
    with particle_plate(_PRIOR_STARTS, integrand.space.info):
        trace = trace_program(integrand.model, integrand.inputs)
    space = integrand.space
    prior = space.unconstrain({n: trace.nodes[n]["value"] for n in space.sites})
    parts = [prior.to(integrand.dtype), coarse.local_maxima(_GRID_STARTS)]
    return torch.cat(parts + ([] if extra is None else [extra]), dim=0)


def _find_modes(integrand: _Integrand, starts: torch.Tensor, prior_box: _Box) -> _Modes:
    """Trust-region Newton ascent from every start; Laplace mass and widths at the ends."""
    u = starts
    value, grad, hessian = integrand.derivatives(u)
    radius = torch.ones_like(value)
    for _ in range(_NEWTON_ITERATIONS):
        step = _trust_region_step(grad, hessian, radius)
        candidate = u + step
        new_value, new_grad, new_hessian = integrand.derivatives(candidate)
        accept = new_value > value
        length = step.norm(dim=-1)
        radius = torch.where(accept, torch.maximum(radius, 2 * length), length / 4)
        radius = radius.clamp(1e-12, 1e6)
        u = torch.where(accept.unsqueeze(-1), candidate, u)
        value = torch.where(accept, new_value, value)
        grad = torch.where(accept.unsqueeze(-1), new_grad, grad)
        hessian = torch.where(accept[..., None, None], new_hessian, hessian)
        if bool((radius < 1e-10).all()):
            break
    return _laplace(u, value, hessian, (prior_box.high - prior_box.low) / (2 * _BOX_SDS))


def _trust_region_step(
    grad: torch.Tensor, hessian: torch.Tensor, radius: torch.Tensor
) -> torch.Tensor:
    """The Newton step where -H is positive definite, else the gradient direction; at most
    ``radius`` long."""
    covariance, definite = _inverse_if_definite(-hessian)
    newton = (covariance @ grad.unsqueeze(-1)).squeeze(-1)
    step = torch.where(definite.unsqueeze(-1), newton, grad)
    length = step.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return step * (radius.unsqueeze(-1) / length).clamp(max=1.0)


def _inverse_if_definite(precision: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of symmetric matrices (..., d, d) where they are well-conditioned positive
    definite, and which are (...): by eigendecomposition, which never fails."""
    eigenvalues, eigenvectors = torch.linalg.eigh(precision)
    definite = eigenvalues[..., 0] > 1e-10 * eigenvalues[..., -1].abs()
    inverse_values = torch.where(definite.unsqueeze(-1), 1 / eigenvalues, 0.0)
    inverse = eigenvectors @ torch.diag_embed(inverse_values) @ eigenvectors.mT
    return inverse, definite


def _laplace(
    u: torch.Tensor, value: torch.Tensor, hessian: torch.Tensor, fallback_sd: torch.Tensor
) -> _Modes:
    """The end points with their Laplace log mass, log p + (d/2) log 2 pi + (1/2) log det
    Sigma (``fallback_sd`` standing in for Sigma where -H is not positive definite)."""
    precision = -hessian
    covariance, definite = _inverse_if_definite(precision)
    log_det = torch.linalg.slogdet(
        torch.where(definite[..., None, None], covariance, torch.diag_embed(fallback_sd**2))
    ).logabsdet
    log_mass = value + 0.5 * u.shape[-1] * math.log(2 * math.pi) + 0.5 * log_det
    return _Modes(u, log_mass, precision, definite, fallback_sd)


def _box_from_modes(modes: _Modes, frame: _Frame) -> _GridBox:
    """In the frame's coordinates: every mode whose mass matters, +- ``_BOX_SDS`` marginal
    sds; a step from the narrowest slice."""
    best = modes.log_mass.max(0).values  # (N,)
    kept = (modes.log_mass >= best - _MODE_LOG_MASS_CUTOFF).unsqueeze(-1)  # (S, N, 1)
    v = frame.to_v(modes.u)
    sd, slice_width = modes.widths(frame)
    inf = torch.full_like(v, math.inf)
    low = torch.where(kept, v - _BOX_SDS * sd, inf).min(0).values
    high = torch.where(kept, v + _BOX_SDS * sd, -inf).max(0).values
    step = torch.where(kept, slice_width, inf).min(0).values / _NODES_PER_SD
    return _GridBox(_Box(low, high), step)


def _integrate(integrand: _FramedIntegrand, grid_box: _GridBox) -> tuple[torch.Tensor, _Box]:
    """Trapezoid log-integral per point (N,), refined and widened until certified; points
    that share a grid shape are integrated together."""
    counts = grid_box.nodes_per_dim()
    too_many = counts.prod(-1) > _MAX_NODES[integrand.dim]
    if bool(too_many.any()):
        n = int(too_many.nonzero()[0])
        raise NoExactValueError(
            f"quadrature: the posterior of point {n} spans a box {_text(grid_box.box, n)} but "
            f"is only {grid_box.step[n].min().item():.2e} wide somewhere: a grid would need "
            f"{int(counts[n].prod())} nodes, over the limit of {_MAX_NODES[integrand.dim]}"
        )
    log_z = torch.empty(counts.shape[0], dtype=torch.float64, device=counts.device)
    low, high = grid_box.box.low.clone(), grid_box.box.high.clone()
    for shape in counts.unique(dim=0):
        members = (counts == shape).all(-1).nonzero().squeeze(-1)
        part = _GridBox(_Box(low[members], high[members]), grid_box.step[members])
        log_z[members], box = _integrate_group(integrand.subset(members), part, shape)
        low[members], high[members] = box.low, box.high
    return log_z, _Box(low, high)


def _integrate_group(
    integrand: _FramedIntegrand, grid_box: _GridBox, shape: torch.Tensor
) -> tuple[torch.Tensor, _Box]:
    """The points of one grid shape, each refined (or widened) until its own rule is
    certified: a point is done as soon as its box holds its mass and its grid agrees with
    the sub-grid, whatever the other points of the group still need."""
    num_data = grid_box.box.low.shape[0]
    log_z = torch.empty(num_data, dtype=torch.float64, device=shape.device)
    low, high = grid_box.box.low.clone(), grid_box.box.high.clone()
    pending = torch.arange(num_data, device=shape.device)
    counts = shape.clone()
    while int(counts.prod()) <= _MAX_NODES[integrand.dim]:
        part = integrand.subset(pending)
        fine, coarse, edge = _trapezoid(part, _Box(low[pending], high[pending]), counts)
        widen = edge > fine + _EDGE_LOG_FRACTION  # (P,)
        converged = (fine - coarse).abs() <= _tolerance(fine, part.integrand.dtype)
        done = converged & ~widen
        log_z[pending[done]] = fine[done]
        pending, widen = pending[~done], widen[~done]
        if pending.numel() == 0:
            return log_z, _Box(low, high)
        # Widened first: with mass at the boundary the rule converges only slowly.
        center, half = (low[pending] + high[pending]) / 2, (high[pending] - low[pending]) / 2
        half = torch.where(widen.unsqueeze(-1), 2 * half, half)
        low[pending], high[pending] = center - half, center + half
        counts = 2 * counts - 1
    raise NoExactValueError(
        "quadrature did not converge: the grid reached its limit of "
        f"{_MAX_NODES[integrand.dim]} nodes before the trapezoid rule agreed with its "
        f"sub-grid to {_REFINE_TOLERANCE:.0e} nats and the box held all the mass"
    )


def _tolerance(log_z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``_REFINE_TOLERANCE``, or the round-off of the model's dtype where that is larger: a
    float32 log-density carries about 1e-7 relative error that no finer grid removes."""
    return torch.clamp(
        _ROUNDING_ULPS * torch.finfo(dtype).eps * (1 + log_z.abs()), min=_REFINE_TOLERANCE
    )


def _trapezoid(
    integrand: _FramedIntegrand, box: _Box, counts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The trapezoid log-integral on a grid of ``counts`` nodes per dim over ``box``, the same
    rule on every other node, and the log mass of the boundary nodes' cells: each (N,), in
    float64. The grid is streamed in chunks of nodes, never held whole."""
    dim, num_data = len(counts), box.low.shape[0]
    log_cell = ((box.high - box.low) / (counts - 1)).log().sum(-1).double()  # (N,)
    total = int(counts.prod())
    chunk = max(1, _EVALS_PER_CHUNK // num_data)
    parts: dict[str, list[torch.Tensor]] = {"fine": [], "coarse": [], "edge": []}
    for start in range(0, total, chunk):
        flat = torch.arange(start, min(start + chunk, total), device=box.low.device)
        index = torch.stack(torch.unravel_index(flat, tuple(counts.tolist())), dim=-1)  # (M, d)
        unit = (2 * index / (counts - 1) - 1).to(integrand.dtype)
        nodes = box.low + (box.high - box.low) * (unit.unsqueeze(1) + 1) / 2  # (M, N, d)
        log_joint = integrand(nodes).double()  # (M, N)
        ends = (index == 0) | (index == counts - 1)  # (M, d)
        log_weight = (ends.sum(-1) * math.log(0.5)).unsqueeze(-1)  # (M, 1)
        on_sub_grid = (index % 2 == 0).all(-1)
        parts["fine"].append(torch.logsumexp(log_joint + log_weight, 0))
        parts["coarse"].append(_masked_logsumexp(log_joint + log_weight, on_sub_grid))
        parts["edge"].append(_masked_logsumexp(log_joint, ends.any(-1)))
    fine, coarse, edge = (torch.logsumexp(torch.stack(parts[k]), 0) for k in parts)
    return fine + log_cell, coarse + log_cell + dim * math.log(2.0), edge + log_cell


def _masked_logsumexp(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """logsumexp over the rows of ``values`` (M, N) selected by ``rows`` (M,): (N,)."""
    if not bool(rows.any()):
        return torch.full(values.shape[1:], -math.inf, dtype=values.dtype, device=values.device)
    return torch.logsumexp(values[rows], 0)


def _grid(box: _Box, count: int, dtype: torch.dtype) -> torch.Tensor:
    """Nodes (M, N, d) of a per-point grid over ``box`` with ``count`` nodes along each dim."""
    axis = torch.linspace(0.0, 1.0, count, dtype=dtype, device=box.low.device)
    unit = torch.cartesian_prod(*[axis] * box.low.shape[-1]).reshape(-1, box.low.shape[-1])
    return box.low + (box.high - box.low) * unit.unsqueeze(1)


def _text(box: _Box, n: int) -> str:
    return "x".join(
        f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(box.low[n].tolist(), box.high[n].tolist())
    )
