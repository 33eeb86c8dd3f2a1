"""The continuous latent sites of a model as one unconstrained vector per data point.

Quadrature (``exact.py``) and annealed importance sampling (``ais.py``) both move in the
space of u = T^{-1}(z), T = ``biject_to(support)`` of each latent site, with the sites of a
data point concatenated into one vector of dimension d. :class:`LatentSpace` maps between u
(M, N, d) -- M evaluation points (grid nodes, chains) for each of N data points -- and site
values laid out on the model's plates, and evaluates log-densities there, vectorised over M
by one extra plate as every other estimator is. :func:`enumerated_log_density` sums the
discrete latents with finite support out of a program's density instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import unpack
from pyro.poutine.trace_struct import Trace
from torch.distributions import Transform, biject_to

from inference._programs import (
    PARTICLE_PLATE,
    Inputs,
    ProgramInfo,
    is_auxiliary,
    log_density_per_point,
    log_density_total,
    particle_plate,
    per_point_sum,
    sample_sites,
    trace_program,
)


@dataclass(frozen=True)
class LatentSpace:
    """Named continuous latent sites as one unconstrained vector per unit.

    A unit is one data point (sites inside the data plate and no other plate), or, with
    ``whole``, the whole data set (every site, global and local: the evidence of the data set
    as one unit). u has shape (M, units, d).

    :ivar sites: the site names, in the order their coordinates appear in u.
    :ivar unit_shapes: each site's value for one unit: its event shape per point, or its
        whole value laid out on the plates (with ``whole``).
    :ivar transforms: T per site, from unconstrained u to the site's support.
    """

    info: ProgramInfo
    sites: tuple[str, ...]
    unit_shapes: tuple[torch.Size, ...]
    transforms: tuple[Transform, ...]
    dtype: torch.dtype
    whole: bool = False

    @classmethod
    def of(
        cls, trace: Trace, info: ProgramInfo, sites: Sequence[str], whole: bool = False
    ) -> LatentSpace:
        """The space of ``sites`` as a plain model trace run on all N points shows them.

        :raises ValueError: when a site is discrete or, per point, lies in a plate besides
            the data plate.
        """
        nodes = [trace.nodes[name] for name in sites]
        for site in nodes:
            if site["fn"].support.is_discrete:
                raise ValueError(f"latent site '{site['name']}' is discrete")
            if not whole and site["fn"].batch_shape.numel() != info.num_data:
                raise ValueError(
                    f"latent site '{site['name']}' has batch shape "
                    f"{tuple(site['fn'].batch_shape)}: it lies in plates besides the data plate "
                    f"(one value per data point is needed, {info.num_data} in all)"
                )
        shapes = [_on_all_plates(site, info) if whole else site["fn"].event_shape for site in nodes]
        return cls(
            info,
            tuple(sites),
            tuple(shapes),
            tuple(biject_to(site["fn"].support) for site in nodes),
            nodes[0]["value"].dtype,
            whole,
        )

    @property
    def units(self) -> int:
        return 1 if self.whole else self.info.num_data

    @property
    def dim(self) -> int:
        return sum(shape.numel() for shape in self.unit_shapes)

    def subset(self, num_data: int) -> LatentSpace:
        """The same space for a batch of ``num_data`` points."""
        info = replace(self.info, num_data=num_data)
        return replace(self, info=info)

    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """u (M, units, d) -> site values on the plates, and log |det dz/du| per (M, units)."""
        values, log_jacobian = {}, torch.zeros(u.shape[:2], dtype=u.dtype, device=u.device)
        for name, transform, shape, part in zip(
            self.sites, self.transforms, self.unit_shapes, self._split(u)
        ):
            site_u = self._on_plates(part, shape)
            values[name] = transform(site_u)
            log_det = transform.log_abs_det_jacobian(site_u, values[name])
            log_jacobian = log_jacobian + self._per_unit(self._sum_event(log_det)).sum(-1)
        return values, log_jacobian

    def unconstrain(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Site values (M, 1.., N, 1.., *event) -> u (M, units, d): the inverse of
        ``constrain``."""
        parts = [
            self._per_unit(transform.inv(values[name]))
            for name, transform in zip(self.sites, self.transforms)
        ]
        return torch.cat(parts, dim=-1)

    def log_density(self, trace: Trace, count: int, names: Sequence[str]) -> torch.Tensor:
        """The named sites' log-densities per particle and unit: (count, units)."""
        if self.whole:
            return log_density_total(trace, self.info, count, names).unsqueeze(-1)
        return log_density_per_point(trace, self.info, count, names)

    def _split(self, u: torch.Tensor) -> list[torch.Tensor]:
        return list(u.split([shape.numel() for shape in self.unit_shapes], dim=-1))

    def _on_plates(self, flat: torch.Tensor, unit_shape: torch.Size) -> torch.Tensor:
        """(M, units, e) -> (M, 1.., N, 1.., *event) laid out on the model's plates."""
        if self.whole:
            return flat.reshape(flat.shape[0], *unit_shape)
        batch = [1] * self.info.max_plate_nesting
        batch[self.info.max_plate_nesting + self.info.data_dim] = self.info.num_data
        return flat.reshape(flat.shape[0], *batch, *unit_shape)

    def _per_unit(self, value: torch.Tensor) -> torch.Tensor:
        """(M, 1.., N, 1.., *rest) -> (M, units, prod(rest))."""
        return value.reshape(value.shape[0], self.units, -1)

    def _sum_event(self, log_det: torch.Tensor) -> torch.Tensor:
        """Sum a site's log |det dz/du| over its event dims, keeping (M, 1.., N, 1..)."""
        batch_rank = 1 + self.info.max_plate_nesting
        if log_det.dim() > batch_rank:
            log_det = log_det.sum(list(range(batch_rank, log_det.dim())))
        return log_det


def _on_all_plates(site: dict, info: ProgramInfo) -> torch.Size:
    """A site's value in a plain run, its batch dims padded with 1s to every plate."""
    value = site["value"]
    batch_rank = value.dim() - len(site["fn"].event_shape)
    return torch.Size((1,) * (info.max_plate_nesting - batch_rank) + tuple(value.shape))


def model_log_densities(
    model: Callable, inputs: Inputs | torch.Tensor, space: LatentSpace, values: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(z) and log p(x given z) of the model at the latent ``values``: (M, N) each.

    The model runs conditioned on ``values``, once under a plate of M particles (or once
    per particle where ``space.info.vectorized`` is False); "log p(z)" sums every latent
    sample site, "log p(x given z)" every observed one.
    """
    latent, observed = [], []
    for trace, count in _conditioned_runs(model, inputs, space, values):
        # Conditioning marks the latent sites observed: the model's own split tells them apart.
        names = [n for n, _ in sample_sites(trace)]
        latent_names = [n for n in names if n in space.info.latent_sites]
        observed_names = [n for n in names if n in space.info.observed_sites]
        latent.append(space.log_density(trace, count, latent_names))
        observed.append(space.log_density(trace, count, observed_names))
    return torch.cat(latent), torch.cat(observed)


def guide_log_density(
    guide: Callable, inputs: Inputs | torch.Tensor, space: LatentSpace, values: dict
) -> torch.Tensor:
    """log q(z given x) of the guide at the latent ``values``: (M, N)."""
    parts = []
    for trace, count in _conditioned_runs(guide, inputs, space, values):
        names = [n for n, s in sample_sites(trace) if not is_auxiliary(s)]
        parts.append(space.log_density(trace, count, names))
    return torch.cat(parts)


def _conditioned_runs(
    program: Callable, inputs: Inputs | torch.Tensor, space: LatentSpace, values: dict
) -> Iterator[tuple[Trace, int]]:
    """Traces of ``program`` conditioned on M particles of ``values``, with their counts."""
    num_points = next(iter(values.values())).shape[0]
    if space.info.vectorized:
        with particle_plate(num_points, space.info):
            yield trace_program(poutine.condition(program, data=values), inputs), num_points
        return
    for particle in range(num_points):
        one = {name: value[particle] for name, value in values.items()}
        yield trace_program(poutine.condition(program, data=one), inputs), 1


def enumerated_log_density(
    program: Callable,
    x: torch.Tensor,
    info: ProgramInfo,
    values: dict[str, torch.Tensor],
    num_chains: int,
) -> torch.Tensor:
    """log of sum over the discrete sites of the program's density at the continuous
    ``values``: (C, N).

    The program runs once under a plate of C particles, conditioned on ``values``, with its
    discrete sites enumerated in parallel left of the particle plate; tensor variable
    elimination (``contract_to_tensor``) sums them out, keeping particles and data points.
    """
    conditioned = config_enumerate(poutine.condition(program, data=values), default="parallel")
    enumerated = poutine.enum(conditioned, first_available_dim=info.particle_dim - 1)
    with particle_plate(num_chains, info):
        trace = trace_program(enumerated, x)
    trace.compute_log_prob()
    trace.pack_tensors()
    plate_symbols = set(trace.plate_to_symbol.values())
    log_factors: OrderedDict = OrderedDict()
    sum_dims: set = set()
    for name, site in sample_sites(trace):
        if is_auxiliary(site) or name in info.given_sites:
            continue
        packed = site["packed"]
        log_prob = packed.get("unscaled_log_prob", packed["log_prob"])
        ordinal = frozenset(
            trace.plate_to_symbol[frame.name]
            for frame in site["cond_indep_stack"]
            if frame.vectorized
        )
        log_factors.setdefault(ordinal, []).append(log_prob)
        sum_dims.update(set(log_prob._pyro_dims) - plate_symbols)
    present = set().union(*(set(f._pyro_dims) for fs in log_factors.values() for f in fs))
    # The particle plate has no dim of its own when every value is shared by the particles.
    kept = frozenset(trace.plate_to_symbol[n] for n in (PARTICLE_PLATE, info.data_plate)) & present
    log_density = contract_to_tensor(log_factors, sum_dims, target_ordinal=kept)
    log_density = unpack(log_density, trace.symbol_to_dim)  # (C, 1.., N, 1..)
    return per_point_sum(log_density, info, "enumerated density").expand(num_chains, info.num_data)
