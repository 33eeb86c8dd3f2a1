"""Exact log p(x): closed forms, enumeration of discrete latents, quadrature in 1-D and 2-D."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.ops.contract import contract_to_tensor
from torch.distributions import biject_to

from inference._programs import (
    DATA_PLATE,
    ProgramInfo,
    inspect_program,
    log_density_per_point,
    particle_plate,
    sample_sites,
    seeded,
    trace_program,
)
from inference._validate import check_data
from lvm_models import NoExactValueError

MAX_QUADRATURE_DIM = 2
# Grid points per dimension: a coarse grid to locate the posterior, a fine one to integrate.
_SEARCH_POINTS = {1: 201, 2: 41}
_FINAL_POINTS = {1: 251, 2: 61}
_MAX_POINTS = {1: 16001, 2: 961}
_BOX_HALF_WIDTH_SDS = 12.0
_MAX_ZOOMS = 12
_QUADRATURE_TOLERANCE = 1e-4
_PRIOR_DRAWS = 512
_EVALS_PER_CHUNK = 2**18


def exact_log_marginal(model: Callable, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x) in nats for each row of x (N, D): a tensor of shape (N,).

    Tries, in order:

    1. the model's own ``log_marginal(x)`` (closed forms, e.g. linear-Gaussian, mixtures);
    2. enumeration: when every latent site is discrete with finite support, the latents are
       summed out exactly by Pyro's parallel enumeration and tensor variable elimination
       (works on a user's plain function too);
    3. quadrature: when the latent sites are continuous with total dimension 1 or 2, a
       trapezoid rule on a per-point grid (in unconstrained coordinates) placed from the
       posterior's location and width, found by zooming in from the prior. The result is
       checked against the same rule on every other grid point and must agree to 1e-4 nats.

    :raises NoExactValueError: naming why each route failed.
    """
    check_data(x)
    return _finite(_exact_log_marginal(model, x))


def _finite(log_marginal: torch.Tensor) -> torch.Tensor:
    """log p(x) may be -inf (zero density in floating point), never NaN or +inf."""
    bad = torch.isnan(log_marginal) | (log_marginal == math.inf)
    if bool(bad.any()):
        points = bad.nonzero().flatten()[:5].tolist()
        raise NoExactValueError(
            f"log p(x) came out NaN or +inf at points {points}: the model's density overflows "
            "there in its floating-point type"
        )
    return log_marginal


def _exact_log_marginal(model: Callable, x: torch.Tensor) -> torch.Tensor:
    # The quadrature places its first box from prior draws: a fixed seed keeps it deterministic.
    with torch.no_grad(), seeded(0):
        if callable(getattr(model, "log_marginal", None)):
            return model.log_marginal(x)
        info = inspect_program(model, x)
        model_trace = trace_program(model, x)
        reasons = []
        discrete = [
            n for n in info.latent_sites if model_trace.nodes[n]["fn"].has_enumerate_support
        ]
        continuous = [n for n in info.latent_sites if n not in discrete]
        if not continuous:
            return _enumerate_log_marginal(model, x, info)
        reasons.append(f"enumeration: latent site(s) {continuous} are not discrete")
        dim = sum(model_trace.nodes[n]["fn"].event_shape.numel() for n in continuous)
        if discrete:
            reasons.append(f"quadrature: latent site(s) {discrete} are discrete")
        elif dim > MAX_QUADRATURE_DIM:
            reasons.append(f"quadrature: the latent has dimension {dim} > {MAX_QUADRATURE_DIM}")
        else:
            return _quadrature_log_marginal(model, x, info, continuous)
        raise NoExactValueError(
            "no exact log p(x) for this model: it has no log_marginal method; " + "; ".join(reasons)
        )


def _enumerate_log_marginal(model: Callable, x: torch.Tensor, info: ProgramInfo) -> torch.Tensor:
    """Sum out every (discrete) latent with parallel enumeration, keeping the data plate."""
    enumerated = poutine.enum(
        config_enumerate(model, default="parallel"), first_available_dim=info.particle_dim
    )
    trace = trace_program(enumerated, x)
    trace.compute_log_prob()
    trace.pack_tensors()
    log_factors: OrderedDict = OrderedDict()
    sum_dims: set = set()
    plate_symbols = set(trace.plate_to_symbol.values())
    for _, site in sample_sites(trace):
        packed = site["packed"]
        log_prob = packed.get("unscaled_log_prob", packed["log_prob"])
        ordinal = frozenset(
            trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized
        )
        log_factors.setdefault(ordinal, []).append(log_prob)
        sum_dims.update(set(log_prob._pyro_dims) - plate_symbols)
    data_ordinal = frozenset({trace.plate_to_symbol[DATA_PLATE]})
    log_marginal = contract_to_tensor(log_factors, sum_dims, target_ordinal=data_ordinal)
    return log_marginal.reshape(-1).expand(info.num_data)


def _quadrature_log_marginal(
    model: Callable, x: torch.Tensor, info: ProgramInfo, sites: list[str]
) -> torch.Tensor:
    """log p(x) = log integral p(x, z) dz by a trapezoid rule on a per-point grid.

    Points whose fine and half grids disagree are integrated again on grids twice as fine,
    up to ``_MAX_POINTS``.
    """
    integrand = _Integrand(model, x, info, sites)
    mean, sd = _locate_posterior(integrand)
    log_marginal = None
    pending = torch.arange(info.num_data)
    points = _FINAL_POINTS[integrand.dim]
    while True:
        part = integrand if pending.numel() == info.num_data else integrand.subset(pending)
        fine, coarse = part.integrate(mean[pending], _BOX_HALF_WIDTH_SDS * sd[pending], points)
        if log_marginal is None:
            log_marginal = fine.clone()
        log_marginal[pending] = fine
        error = (fine - coarse).abs()
        unconverged = error > _QUADRATURE_TOLERANCE
        if not bool(unconverged.any()):
            return log_marginal
        if points >= _MAX_POINTS[integrand.dim]:
            worst = int(error.argmax())
            raise NoExactValueError(
                f"quadrature did not converge: at point {int(pending[worst])} grids of {points} "
                f"and {(points + 1) // 2} points per dimension differ by "
                f"{float(error[worst]):.2e} nats (posterior too multimodal or too narrow)"
            )
        pending, points = pending[unconverged], 2 * points - 1


def _locate_posterior(integrand: _Integrand) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and sd per point (N, d), zooming in from the prior's box."""
    center, half_width = integrand.prior_box()
    search_points = _SEARCH_POINTS[integrand.dim]
    for _ in range(_MAX_ZOOMS):
        mean, sd, step = integrand.moments(center, half_width, search_points)
        resolved = bool((sd >= step).all())
        center = mean
        half_width = torch.maximum(_BOX_HALF_WIDTH_SDS * sd, 3 * step)
        if resolved:
            mean, sd, _ = integrand.moments(center, half_width, search_points)
            return mean, sd
    raise NoExactValueError("quadrature: could not locate the posterior of every point")


class _Integrand:
    """log p(x, z) on grids of z, in the unconstrained coordinates u of the latent sites.

    The per-point latent is the concatenation of the sites' event shapes; z = T(u) with
    T = biject_to(support), and the integrand includes log |det dT/du|.
    """

    def __init__(self, model: Callable, x: torch.Tensor, info: ProgramInfo, sites: list[str]):
        self.model, self.x, self.info, self.sites = model, x, info, sites
        trace = trace_program(model, x)
        for name in sites:
            if trace.nodes[name]["fn"].batch_shape.numel() != info.num_data:
                raise NoExactValueError(
                    f"quadrature: latent site '{name}' lies in plates other than '{DATA_PLATE}'"
                )
        self.event_shapes = [trace.nodes[n]["fn"].event_shape for n in sites]
        self.transforms = [biject_to(trace.nodes[n]["fn"].support) for n in sites]
        self.dim = sum(shape.numel() for shape in self.event_shapes)
        self.dtype = trace.nodes[sites[0]]["value"].dtype

    def subset(self, indices: torch.Tensor) -> _Integrand:
        """The same integrand on the data points ``indices`` only."""
        x = self.x[indices]
        return _Integrand(self.model, x, inspect_program(self.model, x), self.sites)

    def prior_box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Center and half-width (N, d) of a box that holds the prior's mass, per point."""
        with particle_plate(_PRIOR_DRAWS, self.info):
            trace = trace_program(self.model, self.x)
        u = torch.cat(
            [
                self._per_point(transform.inv(trace.nodes[n]["value"]))
                for n, transform in zip(self.sites, self.transforms)
            ],
            dim=-1,
        )  # (S, N, d)
        return u.mean(0), _BOX_HALF_WIDTH_SDS * u.std(0).clamp_min(1e-3)

    def moments(self, center: torch.Tensor, half_width: torch.Tensor, points: int):
        """Posterior mean, sd (N, d) from the grid, and the grid step (N, d)."""
        unit, _ = _unit_grid(self.dim, points, self.dtype)
        u = center + half_width * unit.unsqueeze(1)  # (M, N, d)
        weights = torch.softmax(self.log_joint(u), dim=0).unsqueeze(-1)  # (M, N, 1)
        mean = (weights * u).sum(0)
        sd = ((weights * (u - mean) ** 2).sum(0)).sqrt()
        return mean, sd, 2 * half_width / (points - 1)

    def integrate(self, center: torch.Tensor, half_width: torch.Tensor, points: int):
        """Trapezoid log-integral on the full grid and on every other point: (N,), (N,)."""
        unit, log_weights = _unit_grid(self.dim, points, self.dtype)
        u = center + half_width * unit.unsqueeze(1)  # (M, N, d)
        log_joint = self.log_joint(u)  # (M, N)
        log_cell = torch.log(2 * half_width / (points - 1)).sum(-1)  # (N,)
        fine = torch.logsumexp(log_joint + log_weights.unsqueeze(1), 0) + log_cell
        half = _every_other_point(self.dim, points)
        _, coarse_weights = _unit_grid(self.dim, (points + 1) // 2, self.dtype)
        coarse = (
            torch.logsumexp(log_joint[half] + coarse_weights.unsqueeze(1), 0)
            + log_cell
            + self.dim * math.log(2.0)
        )
        return fine, coarse

    def log_joint(self, u: torch.Tensor) -> torch.Tensor:
        """log p(x, z(u)) + log |det dz/du| for u of shape (M, N, d): shape (M, N)."""
        chunk = max(1, _EVALS_PER_CHUNK // self.info.num_data)
        return torch.cat([self._log_joint_chunk(part) for part in u.split(chunk)], dim=0)

    def _log_joint_chunk(self, u: torch.Tensor) -> torch.Tensor:
        num_points = u.shape[0]
        values, log_jacobian = {}, 0.0
        for name, transform, shape, part in zip(
            self.sites, self.transforms, self.event_shapes, self._split(u)
        ):
            site_u = self._site_value(part, shape)
            values[name] = transform(site_u)
            log_jacobian = log_jacobian + self._log_jacobian(
                transform.log_abs_det_jacobian(site_u, values[name])
            )
        with particle_plate(num_points, self.info):
            trace = trace_program(poutine.condition(self.model, data=values), self.x)
        names = [n for n, _ in sample_sites(trace)]
        return log_density_per_point(trace, self.info, num_points, names) + log_jacobian

    def _split(self, u: torch.Tensor) -> list[torch.Tensor]:
        return list(u.split([shape.numel() for shape in self.event_shapes], dim=-1))

    def _site_value(self, flat: torch.Tensor, event_shape: torch.Size) -> torch.Tensor:
        """(M, N, e) -> (M, 1.., N, 1.., *event_shape) laid out on the model's plates."""
        batch = [1] * self.info.max_plate_nesting
        batch[self.info.max_plate_nesting + self.info.data_dim] = self.info.num_data
        return flat.reshape(flat.shape[0], *batch, *event_shape)

    def _per_point(self, value: torch.Tensor) -> torch.Tensor:
        """(S, 1.., N, 1.., *rest) -> (S, N, prod(rest)): the inverse of ``_site_value``."""
        return value.reshape(value.shape[0], self.info.num_data, -1)

    def _log_jacobian(self, log_det: torch.Tensor) -> torch.Tensor:
        """Sum a site's log |det dz/du| within each (grid point, data point): (M, N)."""
        batch_rank = 1 + self.info.max_plate_nesting
        if log_det.dim() > batch_rank:
            log_det = log_det.sum(list(range(batch_rank, log_det.dim())))
        return self._per_point(log_det).squeeze(-1)


def _unit_grid(dim: int, points: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A grid on [-1, 1]^dim, (points^dim, dim), and its log trapezoid weights (points^dim,)."""
    axis = torch.linspace(-1.0, 1.0, points, dtype=dtype)
    log_axis_weights = torch.zeros(points, dtype=dtype)
    log_axis_weights[[0, -1]] = math.log(0.5)
    grid = torch.cartesian_prod(*[axis] * dim).reshape(-1, dim)
    log_weights = torch.cartesian_prod(*[log_axis_weights] * dim).reshape(-1, dim).sum(-1)
    return grid, log_weights


def _every_other_point(dim: int, points: int) -> torch.Tensor:
    """Indices into a ``points^dim`` grid of the sub-grid that keeps every other point."""
    keep = torch.arange(points) % 2 == 0
    return torch.cartesian_prod(*[keep] * dim).reshape(-1, dim).all(-1).nonzero().squeeze(-1)
