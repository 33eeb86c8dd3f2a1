"""Is the latent used? Rate, distortion, active units and mutual information of an encoder."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence

from inference._programs import (
    Inputs,
    ProgramInfo,
    data_first,
    evaluation_mode,
    is_auxiliary,
    log_density_per_point,
    particle_plate,
    particle_traces,
    per_point_sum,
    per_point_vector,
    prepare_pair,
    sample_sites,
    seeded,
    trace_program,
    with_particle_dim,
)
from inference._validate import check_finite_result, check_per_point, check_positive_int
from inference.ais import AIS_CHAINS, AIS_STEPS, ais_log_marginal
from inference.exact import NoExactValueError, exact_log_marginal

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): Cov_x(E_q[z_i]) above this is active
RATE_THRESHOLD = 0.05  # nats per point: below it the encoder carries (almost) nothing about x


@dataclass(frozen=True)
class Diagnosis:
    """How much a trained pair uses its latent, in nats per data point.

    :ivar rate: mean KL(q(z given x) || p(z)) (analytic when both are Gaussian).
    :ivar distortion: mean -E_q log p(x given z).
    :ivar elbo: mean ELBO, E_q[log p(x, z) - log q(z given x)] by Monte Carlo (equal to
        -(rate + distortion) in expectation), with discrete latents that have enumerate
        support summed over exactly (Pyro's ``TraceEnum_ELBO``).
    :ivar active_units: latent dimensions i with Cov_x(E_q[z_i]) > 0.01 (continuous sites).
    :ivar mutual_info: estimate of I_q(x; z) under the aggregate posterior (<= rate), clamped
        at 0.
    :ivar exact: mean exact log p(x), or None where no exact route exists.
    :ivar gap: reference - elbo = mean KL(q(z given x) || p(z given x)), or None.
    :ivar reference: what ``gap`` is measured from: ``"exact"``, ``"ais"`` (an annealed
        importance sampling estimate, asked for with ``reference="ais"`` where no exact
        value exists: a stochastic lower bound, so the gap is too), or None.
    :ivar reference_value: the mean log p(x) of that reference, or None.
    :ivar latent_ignored: rate < ``rate_threshold``.
    :ivar rate_is_analytic: whether the rate used closed-form KLs.
    """

    rate: float
    distortion: float
    elbo: float
    active_units: int
    latent_dims: int
    mutual_info: float
    exact: float | None
    gap: float | None
    latent_ignored: bool
    rate_threshold: float
    rate_is_analytic: bool
    reference: str | None = None
    reference_value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def diagnose(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_particles: int = 16,
    rate_threshold: float = RATE_THRESHOLD,
    exact: torch.Tensor | None = None,
    with_exact: bool = True,
    reference: str | None = None,
    ais_steps: int = AIS_STEPS,
    ais_chains: int = AIS_CHAINS,
    seed: int | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
) -> Diagnosis:
    """Rate, distortion, active units, I_q(x; z) and the verdict ``latent_ignored``.

    - rate R = E_x KL(q(z given x) || p(z)): per latent site, closed form when torch knows the KL
      (Gaussians included), otherwise Monte Carlo E_q[log q - log p] over ``num_particles``.
      A site whose prior depends on another latent uses its conditional KL, averaged over draws.
    - distortion = -E_x E_q log p(x given z), so ELBO = -(R + distortion) (Alemi et al., 2018).
    - active units: Cov_x(E_q[z_i]) > 0.01 (Burda et al., 2016), E_q[z] from the guide's
      distributions (their mean, or Monte Carlo).
    - I_q(x; z) = E_x E_q log q(z given x) - E_q(z) log q(z), with the aggregate posterior
      q(z) = (1/N) sum_n q(z given x_n) evaluated on every data point (Hoffman and Johnson,
      2016; He et al., 2019): O(N^2) guide evaluations, streamed.

    :param x: data (N, D).
    :param exact: a precomputed exact log p(x) (N,); by default :func:`exact_log_marginal`
        where it has a route.
    :param with_exact: False skips the exact value (and the gap), e.g. to spare a quadrature.
    :param reference: ``"ais"``: where no exact value exists, measure the gap from
        :func:`inference.ais_log_marginal` (``ais_steps`` steps, ``ais_chains`` chains from
        the guide); None (default): the exact value only.
    :param model_args, model_kwargs, data_plate, vectorize: as in :func:`inference.elbo`.
    :returns: a :class:`Diagnosis` in nats per data point.
    """
    check_positive_int("num_particles", num_particles)
    if reference not in (None, "ais"):
        raise ValueError(f"reference must be None or 'ais'; got {reference!r}")
    if (
        isinstance(rate_threshold, bool)
        or not isinstance(rate_threshold, (int, float))
        or not rate_threshold > 0
    ):
        raise ValueError(f"rate_threshold must be a number > 0; got {rate_threshold!r}")
    program = dict(model_args=model_args, model_kwargs=model_kwargs, data_plate=data_plate)
    with torch.no_grad(), seeded(seed), evaluation_mode(model, guide):
        inputs, info = prepare_pair(model, guide, x, vectorize=vectorize, **program)
        if exact is not None:
            check_per_point("exact", exact, inputs.num_data)
        draws = _draws(model, guide, inputs, info, num_particles)
        mutual_info = _mutual_information(guide, inputs, info)
    rate, analytic, log_likelihood, log_prior_ratio, means = draws
    check_finite_result("E_q log p(x given z)", log_likelihood.mean(0), inputs.x)
    check_finite_result("the rate", torch.tensor([rate]), inputs.x)
    exact_mean = None
    if with_exact:
        with contextlib.suppress(NoExactValueError):
            exact_mean = (
                (exact_log_marginal(model, x, **program) if exact is None else exact)
                .double()
                .mean()
                .item()
            )
    elbo_value = (log_likelihood + log_prior_ratio).mean().item()
    if info.enumerable_sites:
        with torch.no_grad(), seeded(seed), evaluation_mode(model, guide):
            elbo_value = _enumerated_elbo(model, guide, inputs, info, num_particles)
    reference_name, reference_value = (
        ("exact", exact_mean) if exact_mean is not None else (None, None)
    )
    if reference_value is None and reference == "ais":
        estimate = ais_log_marginal(
            model, guide, x, num_steps=ais_steps, num_chains=ais_chains, seed=seed, **program
        )
        reference_name, reference_value = "ais", estimate.mean
    active = (
        int((means.var(0, unbiased=False) > ACTIVE_UNIT_THRESHOLD).sum()) if means.numel() else 0
    )
    return Diagnosis(
        rate=rate,
        distortion=-log_likelihood.mean().item(),
        elbo=elbo_value,
        active_units=active,
        latent_dims=means.shape[-1],
        mutual_info=mutual_info,
        exact=exact_mean,
        gap=None if reference_value is None else reference_value - elbo_value,
        latent_ignored=rate < rate_threshold,
        rate_threshold=rate_threshold,
        rate_is_analytic=analytic,
        reference=reference_name,
        reference_value=reference_value,
    )


def _enumerated_elbo(
    model: Callable, guide: Callable, inputs: Inputs, info: ProgramInfo, num_particles: int
) -> float:
    """The mean ELBO with the discrete latent sites summed over their support, exactly, as
    Pyro's ``TraceEnum_ELBO`` does: a confident guide that never draws its unlikely values
    would otherwise put the Monte-Carlo ELBO above log p(x), and the gap below 0."""
    elbo = TraceEnum_ELBO(
        num_particles=num_particles,
        vectorize_particles=info.vectorized and num_particles > 1,
        max_plate_nesting=info.max_plate_nesting,
    )
    enumerated = (config_enumerate(p, default="parallel") for p in (model, guide))
    loss = elbo.loss(*enumerated, inputs.x, *inputs.args, **inputs.kwargs)
    return -loss / info.num_data


def _draws(
    model: Callable, guide: Callable, inputs: Inputs, info: ProgramInfo, num_particles: int
) -> tuple[float, bool, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``num_particles`` draws of z ~ q: the mean rate and whether it was analytic,
    log p(x given z) and log p(z) - log q(z given x) per draw and point (K, N), and E_q[z]
    per point (N, d)."""
    rates, analytic, likelihoods, ratios, means = [], True, [], [], []
    for model_trace, guide_trace, count in particle_traces(
        model, guide, inputs, num_particles, info
    ):
        rate, exact_kl = _rate(model_trace, guide_trace, info, count)
        rates.append(rate * count)
        analytic = analytic and exact_kl
        likelihoods.append(log_density_per_point(model_trace, info, count, info.observed_sites))
        ratios.append(
            log_density_per_point(model_trace, info, count, info.latent_sites)
            - log_density_per_point(guide_trace, info, count, info.latent_sites)
        )
        means.append(_posterior_means(guide_trace, info) * count)
    return (
        sum(rates) / num_particles,
        analytic,
        torch.cat(likelihoods),
        torch.cat(ratios),
        sum(means) / num_particles,
    )


def rate_and_distortion(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_particles: int = 1,
    seed: int | None = None,
) -> tuple[float, float]:
    """The mean rate E_x KL(q(z given x) || p(z)) and distortion -E_x E_q log p(x given z), in
    nats per point, as in :func:`diagnose` and nothing else.

    Cheap enough to record during training (closed-form KL for Gaussian sites).
    """
    check_positive_int("num_particles", num_particles)
    with torch.no_grad(), seeded(seed):
        inputs, info = prepare_pair(model, guide, x)
        return rate_and_distortion_of(model, guide, inputs, info, num_particles)


def rate_and_distortion_of(
    model: Callable,
    guide: Callable,
    inputs: Inputs | torch.Tensor,
    info: ProgramInfo,
    num_particles: int,
) -> tuple[float, float]:
    """:func:`rate_and_distortion` for a pair already inspected (``info``); no checks."""
    rate, _, log_likelihood, _, _ = _draws(model, guide, Inputs.of(inputs), info, num_particles)
    return rate, -log_likelihood.mean().item()


def _rate(model_trace, guide_trace, info: ProgramInfo, num_particles: int) -> tuple[float, bool]:
    """Mean over points of KL(q || p) summed over latent sites; and whether all were analytic."""
    total, analytic = 0.0, True
    for name in info.latent_sites:
        guide_site, model_site = guide_trace.nodes[name], model_trace.nodes[name]
        kl = _analytic_kl(guide_site["fn"], model_site["fn"])
        if kl is None:
            analytic = False
            kl = guide_site["fn"].log_prob(guide_site["value"]) - model_site["fn"].log_prob(
                guide_site["value"]
            )
        total = total + per_point_sum(kl, info, name).mean()
    return float(total), analytic


def _analytic_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) in closed form, batch-shaped, or None when torch has no formula for the pair."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        pass
    q_gaussian, p_gaussian = as_multivariate_normal(q), as_multivariate_normal(p)
    if q_gaussian is None or p_gaussian is None:
        return None
    return kl_divergence(q_gaussian, p_gaussian)


def as_multivariate_normal(fn: Distribution) -> MultivariateNormal | None:
    """A diagonal Normal with one event dim, or a MultivariateNormal, as a MultivariateNormal."""
    if isinstance(fn, MultivariateNormal):
        return fn
    if (
        isinstance(fn, Independent)
        and isinstance(fn.base_dist, Normal)
        and fn.reinterpreted_batch_ndims == 1
    ):
        return MultivariateNormal(fn.base_dist.loc, scale_tril=torch.diag_embed(fn.base_dist.scale))
    return None


def _posterior_means(guide_trace, info: ProgramInfo) -> torch.Tensor:
    """E_q[z] per data point for the continuous latent sites, concatenated: (N, d)."""
    columns = []
    for name in info.latent_sites:
        site = guide_trace.nodes[name]
        if site["fn"].support.is_discrete:
            continue
        try:
            mean = site["fn"].mean.expand(site["value"].shape)
        except NotImplementedError:
            mean = site["value"]
        event_dims = len(site["fn"].event_shape)
        # Average over particles (exact when fn.mean exists); a plain run has no particle dim.
        mean = with_particle_dim(mean, event_dims, info).mean(0, keepdim=True)
        columns.append(per_point_vector(mean, info, event_dims))
    if not columns:
        return torch.zeros(info.num_data, 0)
    return torch.cat(columns, -1).double()


_CROSS_EVALS_PER_CHUNK = 2**18


def _mutual_information(guide: Callable, inputs: Inputs, info: ProgramInfo) -> float:
    """I_q(x; z) ~ mean_n [log q(z_n | x_n) - log (1/N) sum_m q(z_n | x_m)], z_n ~ q(. | x_n)."""
    trace = trace_program(guide, inputs)
    names = [n for n, s in sample_sites(trace) if not is_auxiliary(s)]
    own = log_density_per_point(trace, info, 1, names)[0]  # (N,)
    cross = _cross_log_q if info.vectorized else _cross_log_q_one_by_one
    log_aggregate = cross(guide, inputs, info, trace, names)  # (N,): log (1/N) sum_m q(z_n | x_m)
    # The estimator can dip below zero by its own noise; I(x; z) cannot.
    return max(0.0, (own.double() - log_aggregate).mean().item())


def _cross_log_q(
    guide: Callable, inputs: Inputs, info: ProgramInfo, trace, names: list[str]
) -> torch.Tensor:
    """Draw n goes to the particle dim, so each particle n is evaluated at every point m."""
    values = {
        n: data_first(trace.nodes[n]["value"], len(trace.nodes[n]["fn"].event_shape), info)
        for n in names
    }  # (N, 1.., 1, 1.., *event)
    chunk = max(1, _CROSS_EVALS_PER_CHUNK // info.num_data)
    cross = []
    for start in range(0, info.num_data, chunk):
        part = {n: v[start : start + chunk] for n, v in values.items()}
        size = next(iter(part.values())).shape[0]
        with particle_plate(size, info):
            conditioned = trace_program(poutine.condition(guide, data=part), inputs)
        log_q = log_density_per_point(conditioned, info, size, names)  # (size, N): q(z_n | x_m)
        cross.append(torch.logsumexp(log_q.double(), dim=1) - math.log(info.num_data))
    return torch.cat(cross)


def _cross_log_q_one_by_one(
    guide: Callable, inputs: Inputs, info: ProgramInfo, trace, names: list[str]
) -> torch.Tensor:
    """As :func:`_cross_log_q` for a guide that cannot take a particle dim: one run per
    draw n, its value given to every data point m."""
    cross = []
    for n in range(info.num_data):
        values = {name: _draw_for_every_point(trace.nodes[name], n, info) for name in names}
        conditioned = trace_program(poutine.condition(guide, data=values), inputs)
        log_q = log_density_per_point(conditioned, info, 1, names)[0]  # (N,): q(z_n | x_m)
        cross.append(torch.logsumexp(log_q.double(), dim=0) - math.log(info.num_data))
    return torch.stack(cross)


def _draw_for_every_point(site: dict, n: int, info: ProgramInfo) -> torch.Tensor:
    value = site["value"]
    data_position = value.dim() - len(site["fn"].event_shape) + info.data_dim
    return value.narrow(data_position, n, 1).expand_as(value)
