"""Is the latent used? Rate, distortion, active units and mutual information of an encoder."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, NamedTuple

import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.poutine.trace_struct import Trace
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
from inference.estimators.ais import AIS_CHAINS, AIS_STEPS, ais_log_marginal
from inference.estimators.exact import NoExactValueError, exact_log_marginal

if TYPE_CHECKING:
    from inference.estimators.gaps import GapDecomposition

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): Cov_x(E_q[z_i]) above this is active
RATE_THRESHOLD = 0.05  # nats per point: below it the encoder carries (almost) nothing about x
UNCERTAIN_UNIT_Z = 2.0  # a unit this many standard errors from the threshold could go either way
MUTUAL_INFO_METHODS = ("auto", "knn", "aggregate")
KNN_NEIGHBOURS = 3  # k of the k-nearest-neighbour entropy (Kraskov et al., 2004)
# The k-NN entropy's bias (Gaussian channels, k = 3, N = 500-1000): about 0.03 nat at d = 2,
# 0.1 at d = 4, 0.5 and more at d = 16. Above this dimension "auto" keeps to the aggregate
# estimate and its flag.
KNN_MAX_DIM = 4
# The aggregate-posterior estimate is reported as only a lower bound when its known bias bound
# (leave-one-out minus it) exceeds this fraction of it, and RATE_THRESHOLD in nats.
MUTUAL_INFO_TOLERANCE = 0.1
_SPLIT_GROUPS = 8  # the k-NN standard error: the draws split into this many groups ...
_SPLIT_PARTITIONS = 8  # ... in this many random partitions


@dataclass(frozen=True)
class Diagnosis:
    """How much a trained pair uses its latent, in nats per data point.

    Every ``*_stderr`` is the standard error of its figure as an estimate of the population
    value (x drawn from the data distribution, z from the guide): the spread over the N points
    of the per-point figures, over sqrt(N), unless said otherwise.

    :ivar rate: mean KL(q(z given x) || p(z)) (analytic when both are Gaussian).
    :ivar distortion: mean -E_q log p(x given z).
    :ivar elbo: mean ELBO, E_q[log p(x, z) - log q(z given x)] by Monte Carlo (equal to
        -(rate + distortion) in expectation), with discrete latents that have enumerate
        support summed over exactly (Pyro's ``TraceEnum_ELBO``).
    :ivar active_units: latent dimensions i with Cov_x(E_q[z_i]) > 0.01 (continuous sites).
    :ivar mutual_info: estimate of I_q(x; z) under the aggregate posterior q(z) = E_x q(z given
        x), by ``mutual_info_method``, clamped to [0, rate] where the true value lies.
    :ivar exact: mean exact log p(x), or None where no exact route exists.
    :ivar gap: reference - elbo = mean KL(q(z given x) || p(z given x)), or None.
    :ivar reference: what ``gap`` is measured from: ``"exact"``, ``"ais"`` (an annealed
        importance sampling estimate, asked for with ``reference="ais"`` where no exact
        value exists: a stochastic lower bound, so the gap is too), or None.
    :ivar reference_value: the mean log p(x) of that reference, or None.
    :ivar latent_ignored: rate < ``rate_threshold``.
    :ivar rate_is_analytic: whether the rate used closed-form KLs.
    :ivar rate_stderr, distortion_stderr: their standard errors.
    :ivar mutual_info_stderr: the standard error of ``mutual_info`` before clamping; for
        ``"knn"`` from the spread of the estimate over disjoint groups of the draws (the k-NN
        terms of neighbouring draws are correlated, so the per-point spread would understate it).
    :ivar mutual_info_method: ``"knn"`` or ``"aggregate"`` (see :func:`diagnose`).
    :ivar mutual_info_lower: the aggregate-posterior (InfoNCE) estimate: a lower bound on I_q
        in expectation, and never above ``mutual_info_ceiling``.
    :ivar mutual_info_upper: its leave-one-out twin: an upper bound on I_q in expectation
        (inf where a draw has no density under any other point's q).
    :ivar mutual_info_ceiling: log N, the most ``mutual_info_lower`` can read.
    :ivar mutual_info_is_bound: True when ``mutual_info`` is the aggregate estimate and its
        bias bound ``mutual_info_upper - mutual_info_lower`` exceeds 10% of it (and 0.05
        nats): then it is only a lower bound, and N is too small to resolve I_q that way.
    :ivar unit_activity: Cov_x(E_q[z_i]) per latent dimension i, the figure behind
        ``active_units``; ``unit_activity_stderr`` its delta-method standard error
        sqrt((m4 - v^2) / N), m4 the fourth central moment of the E_q[z_i].
    :ivar active_units_uncertain: dimensions whose activity lies within 2 standard errors of
        the 0.01 threshold: ``active_units`` could be off by up to this many.
    :ivar gaps: the per-point decomposition of the inference gap
        (:func:`~inference.estimators.gaps.gap_decomposition`) with ``decompose_gap=True``;
        else None.
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
    rate_stderr: float = math.nan
    distortion_stderr: float = math.nan
    mutual_info_stderr: float = math.nan
    mutual_info_method: str = "aggregate"
    mutual_info_lower: float = math.nan
    mutual_info_upper: float = math.nan
    mutual_info_ceiling: float = math.nan
    mutual_info_is_bound: bool = False
    unit_activity: tuple[float, ...] = ()
    unit_activity_stderr: tuple[float, ...] = ()
    active_units_uncertain: int = 0
    gaps: GapDecomposition | None = None

    def to_dict(self) -> dict:
        """The fields as plain Python values (``gaps`` as its summary), ready for JSON."""
        values = {f.name: _json_number(getattr(self, f.name)) for f in fields(self)}
        values["gaps"] = None if self.gaps is None else self.gaps.to_dict()
        return values


def _json_number(value: object) -> object:
    """JSON has no infinity (an unbounded ``mutual_info_upper``) nor NaN: they become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _MutualInformation(NamedTuple):
    estimate: float
    stderr: float
    method: str
    lower: float
    upper: float

    @property
    def is_bound(self) -> bool:
        """The aggregate estimate whose bias bound (upper - lower) is too wide to trust it."""
        width = self.upper - self.lower
        return self.method == "aggregate" and width > max(
            MUTUAL_INFO_TOLERANCE * self.lower, RATE_THRESHOLD
        )


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
    mutual_info_method: str = "auto",
    decompose_gap: bool = False,
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
    - I_q(x; z) = E_x KL(q(z given x) || q(z)) with the aggregate posterior q(z) = E_x q(z given
      x) (Hoffman and Johnson, 2016), from one draw z_n ~ q(z given x_n) per point, which
      makes z_1..z_N a sample of q(z). ``mutual_info_method``:

      * ``"knn"``: I_q = R - KL(q(z) || p(z)), the rate minus the marginal KL (Hoffman and
        Johnson, 2016), the marginal KL as mean_n [log q(z_n) - log p(z_n)] with log q(z_n)
        from the Kozachenko-Leonenko k-nearest-neighbour density of the draws (k = 3, on
        whitened draws; Kraskov, Stoegbauer and Grassberger, 2004). Equal in expectation to
        H[q(z)] - E_x H[q(z given x)]; consistent, with no ceiling; its bias grows with the
        latent dimension (a few hundredths of a nat at d <= 2, N >= 256).
      * ``"aggregate"``: mean_n [log q(z_n given x_n) - log (1/N) sum_m q(z_n given x_m)],
        O(N^2) guide evaluations, streamed (Hoffman and Johnson, 2016; He et al., 2019). It is
        InfoNCE (van den Oord et al., 2018) with log q(z given x) as critic: a lower bound in
        expectation that can never exceed log N, so it saturates once I_q nears log N (on a
        linear-Gaussian channel with N = 256, I = 6.4 reads 5.1). Leaving out m = n gives an
        upper bound in expectation (Poole et al., 2019, "On variational bounds of mutual
        information"), whose distance from it bounds the bias.
      * ``"auto"`` (default): ``"aggregate"`` where its bias bound (leave-one-out minus
        it) is below its standard error (I_q well under log N: a collapsed or weak latent);
        otherwise ``"knn"`` when every latent site is continuous with total dimension at
        most 4 (and N > 2(k + 1)); otherwise ``"aggregate"``, flagged when it is a bound.

      Both bounds of the aggregate estimate are reported whatever the method
      (``mutual_info_lower``, ``mutual_info_upper``), with the ceiling log N and the flag
      ``mutual_info_is_bound``. The marginal KL through the N-component mixture instead of
      the k-NN density would bring back the same ceiling: the mixture's own component
      dominates it once q(z given x) is narrow next to the spacing of the N points.

    :param x: data (N, D).
    :param exact: a precomputed exact log p(x) (N,); by default :func:`exact_log_marginal`
        where it has a route.
    :param with_exact: False skips the exact value (and the gap), e.g. to spare a quadrature.
    :param reference: ``"ais"``: where no exact value exists, measure the gap from
        :func:`inference.ais_log_marginal` (``ais_steps`` steps, ``ais_chains`` chains from
        the guide); None (default): the exact value only.
    :param mutual_info_method: ``"auto"``, ``"knn"`` or ``"aggregate"`` (above).
    :param decompose_gap: also split the inference gap into its approximation and
        amortisation parts per point (:func:`~inference.estimators.gaps.gap_decomposition`, which
        fits a mean-field Gaussian to every point: far slower than the rest), as
        ``Diagnosis.gaps``.
    :param model_args, model_kwargs, data_plate, vectorize: as in :func:`inference.elbo`.
    :returns: a :class:`Diagnosis` in nats per data point.
    """
    check_positive_int("num_particles", num_particles)
    if reference not in (None, "ais"):
        raise ValueError(f"reference must be None or 'ais'; got {reference!r}")
    if mutual_info_method not in MUTUAL_INFO_METHODS:
        raise ValueError(
            f"mutual_info_method must be one of {MUTUAL_INFO_METHODS}; got {mutual_info_method!r}"
        )
    if not isinstance(decompose_gap, bool):
        raise TypeError(f"decompose_gap must be a bool; got {type(decompose_gap).__name__}")
    if decompose_gap and (model_args or model_kwargs or data_plate is not None):
        raise ValueError(
            "decompose_gap=True needs a model called as model(x): the per-point guide it fits "
            "takes no extra arguments and samples in pyro.plate('data')"
        )
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
        rates, analytic, log_likelihood, log_prior_ratio, means = draws
        information = _mutual_information(model, guide, inputs, info, rates, mutual_info_method)
    distortions = -log_likelihood.mean(0)  # (N,)
    check_finite_result("E_q log p(x given z)", -distortions, inputs.x)
    check_finite_result("the rate", rates, inputs.x)
    rate = rates.mean().item()
    exact_values = None
    if with_exact:
        with contextlib.suppress(NoExactValueError):
            exact_values = exact_log_marginal(model, x, **program) if exact is None else exact
    exact_mean = None if exact_values is None else exact_values.double().mean().item()
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
    activity, activity_stderr = _unit_activity(means)
    gaps = None
    if decompose_gap:
        # Imported here: the gaps module trains with fit, whose module imports this one.
        from inference.estimators.gaps import gap_decomposition

        gaps = gap_decomposition(model, guide, x, exact=exact_values, seed=seed)
    ceiling = math.log(inputs.num_data)
    return Diagnosis(
        rate=rate,
        distortion=distortions.mean().item(),
        elbo=elbo_value,
        active_units=int((activity > ACTIVE_UNIT_THRESHOLD).sum()),
        latent_dims=means.shape[-1],
        mutual_info=min(max(information.estimate, 0.0), rate),
        exact=exact_mean,
        gap=None if reference_value is None else reference_value - elbo_value,
        latent_ignored=rate < rate_threshold,
        rate_threshold=rate_threshold,
        rate_is_analytic=analytic,
        reference=reference_name,
        reference_value=reference_value,
        rate_stderr=_stderr_of_mean(rates),
        distortion_stderr=_stderr_of_mean(distortions),
        mutual_info_stderr=information.stderr,
        mutual_info_method=information.method,
        mutual_info_lower=information.lower,
        mutual_info_upper=information.upper,
        mutual_info_ceiling=ceiling,
        mutual_info_is_bound=information.is_bound,
        unit_activity=tuple(activity.tolist()),
        unit_activity_stderr=tuple(activity_stderr.tolist()),
        active_units_uncertain=int(
            ((activity - ACTIVE_UNIT_THRESHOLD).abs() < UNCERTAIN_UNIT_Z * activity_stderr).sum()
        ),
        gaps=gaps,
    )


def _stderr_of_mean(per_point: torch.Tensor) -> float:
    """sd / sqrt(N) of per-point figures (NaN for a single point)."""
    if per_point.numel() < 2:
        return math.nan
    return (per_point.double().std() / math.sqrt(per_point.numel())).item()


def _unit_activity(means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Var_x(E_q[z_i]) per dimension of the (N, d) posterior means, and its delta-method
    standard error sqrt((m4 - v^2) / N) (the large-N variance of a sample variance)."""
    centred = means - means.mean(0)
    variance = centred.pow(2).mean(0)  # (d,)
    fourth = centred.pow(4).mean(0)
    return variance, ((fourth - variance.pow(2)).clamp_min(0) / means.shape[0]).sqrt()


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
) -> tuple[torch.Tensor, bool, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``num_particles`` draws of z ~ q: the rate per point (N,) and whether it was
    analytic, log p(x given z) and log p(z) - log q(z given x) per draw and point (K, N), and
    E_q[z] per point (N, d)."""
    rates, analytic, likelihoods, ratios, means = [], True, [], [], []
    for model_trace, guide_trace, count in particle_traces(
        model, guide, inputs, num_particles, info
    ):
        rate, exact_kl = _rate(model_trace, guide_trace, info)
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
    rates, _, log_likelihood, _, _ = _draws(model, guide, Inputs.of(inputs), info, num_particles)
    return rates.mean().item(), -log_likelihood.mean().item()


def mutual_information_of(guide: Callable, inputs: Inputs, info: ProgramInfo) -> float:
    """I_q(x; z) of the points ``inputs`` by the aggregate-posterior estimate of :func:`diagnose`
    (He et al., 2019's ``calc_mi``: one draw per point, the points' mixture as q(z)), for a
    guide already inspected (``info``); no checks. A lower bound on I_q in expectation."""
    return _aggregate_mutual_information(guide, inputs, info, trace_program(guide, inputs)).lower


def _rate(model_trace: Trace, guide_trace: Trace, info: ProgramInfo) -> tuple[torch.Tensor, bool]:
    """KL(q || p) per point (N,), summed over latent sites and averaged over the traces'
    particles; and whether every site's KL was analytic."""
    total = torch.zeros(info.num_data, dtype=torch.float64, device=info.device)
    analytic = True
    for name in info.latent_sites:
        guide_site, model_site = guide_trace.nodes[name], model_trace.nodes[name]
        kl = _analytic_kl(guide_site["fn"], model_site["fn"])
        if kl is None:
            analytic = False
            kl = guide_site["fn"].log_prob(guide_site["value"]) - model_site["fn"].log_prob(
                guide_site["value"]
            )
        total = total + per_point_sum(kl, info, name).double().mean(0).expand(info.num_data)
    return total, analytic


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


def _posterior_means(guide_trace: Trace, info: ProgramInfo) -> torch.Tensor:
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
        return torch.zeros(info.num_data, 0, dtype=torch.float64, device=info.device)
    return torch.cat(columns, -1).double()


_CROSS_EVALS_PER_CHUNK = 2**18


def _mutual_information(
    model: Callable,
    guide: Callable,
    inputs: Inputs,
    info: ProgramInfo,
    rates: torch.Tensor,
    method: str,
) -> _MutualInformation:
    """I_q(x; z) from one draw z_n ~ q(. given x_n) per point, by ``method`` (see
    :func:`diagnose`), with the aggregate estimate's two bounds. ``rates``: KL(q || p) (N,)."""
    trace = trace_program(guide, inputs)
    names = _latent_names(trace)
    aggregate = _aggregate_mutual_information(guide, inputs, info, trace)
    # Where the bias bound is below the noise the aggregate estimate is as good as any.
    if (method == "auto" and aggregate.upper - aggregate.lower <= aggregate.stderr) or not (
        _knn_applies(method, trace, names, info)
    ):
        return aggregate
    values = torch.cat(
        [per_point_vector(trace.nodes[n]["value"], info, _event_dims(trace, n)) for n in names], -1
    ).double()  # (N, d)
    model_trace = trace_program(poutine.replay(model, trace=trace), inputs)
    log_prior = log_density_per_point(model_trace, info, 1, info.latent_sites)[0].double()  # (N,)
    estimate, stderr = _knn_mutual_information(values, rates + log_prior)
    return _MutualInformation(estimate, stderr, "knn", aggregate.lower, aggregate.upper)


def _latent_names(trace: Trace) -> list[str]:
    return [n for n, s in sample_sites(trace) if not is_auxiliary(s)]


def _aggregate_mutual_information(
    guide: Callable, inputs: Inputs, info: ProgramInfo, trace: Trace
) -> _MutualInformation:
    """The aggregate-posterior estimate from the draws of the guide's ``trace`` (one per
    point) and its leave-one-out twin (see :func:`diagnose`)."""
    names = _latent_names(trace)
    own = log_density_per_point(trace, info, 1, names)[0].double()  # (N,)
    cross = _cross_log_q if info.vectorized else _cross_log_q_one_by_one
    log_all, log_others = cross(guide, inputs, info, trace, names)  # (N,) each
    num_data = info.num_data
    lower_terms = own - (log_all - math.log(num_data))  # (N,)
    upper = (
        (own - (log_others - math.log(num_data - 1))).mean().item() if num_data > 1 else math.inf
    )
    lower, lower_stderr = lower_terms.mean().item(), _stderr_of_mean(lower_terms)
    return _MutualInformation(lower, lower_stderr, "aggregate", lower, upper)


def _event_dims(trace: Trace, name: str) -> int:
    return len(trace.nodes[name]["fn"].event_shape)


def _knn_applies(method: str, trace: Trace, names: list[str], info: ProgramInfo) -> bool:
    """Whether ``method`` (``"auto"`` or ``"knn"``) asks for the k-NN estimate and it can run."""
    if method == "aggregate":
        return False
    discrete = [n for n in names if trace.nodes[n]["fn"].support.is_discrete]
    if method == "knn" and discrete:
        raise ValueError(
            f"mutual_info_method='knn' needs continuous latents; site(s) {discrete} are "
            "discrete: use 'aggregate' or 'auto'"
        )
    if method == "knn":
        return True
    dims = sum(
        per_point_vector(trace.nodes[n]["value"], info, _event_dims(trace, n)).shape[1]
        for n in names
    )
    return not discrete and dims <= KNN_MAX_DIM and info.num_data > 2 * (KNN_NEIGHBOURS + 1)


def _knn_mutual_information(values: torch.Tensor, offsets: torch.Tensor) -> tuple[float, float]:
    """I = mean_n [offset_n - log q(z_n)], log q(z_n) by k-NN from the draws (N, d), and its
    standard error from ``_SPLIT_PARTITIONS`` random splits into ``_SPLIT_GROUPS`` groups.

    With offset_n = KL(q(z given x_n) || p(z)) + log p(z_n) this is R - KL(q(z) || p(z)):
    the rate minus the marginal KL, mean_n [log q(z_n) - log p(z_n)] (Hoffman and Johnson,
    2016). Given x_n, KL_n + log p(z_n) has mean -H[q(z given x_n)], so this is also
    H[q(z)] - E_x H[q(z given x)], with log p(z_n) as a control variate: where q(z) is close
    to p(z) most of the noise of log q(z_n) cancels.

    The draws are whitened first (log q(z) = log q_w(w) - log |det L| for w = L^-1 (z - mean),
    L the Cholesky factor of their covariance), so the neighbours weigh every direction alike.
    The k-NN terms of nearby draws share neighbours, so the per-point spread understates the
    error (by 10-20% at k = 3); the spread of the estimate over disjoint groups of N / G draws,
    over sqrt(G), does not. Written by hand: neither torch nor Pyro has a k-NN entropy.
    """
    num_data = values.shape[0]
    centred = values - values.mean(0)
    covariance = centred.T @ centred / max(num_data - 1, 1)
    tril, failed = torch.linalg.cholesky_ex(covariance)
    if bool(failed):  # degenerate draws: no whitening
        whitened, log_det = centred, 0.0
    else:
        whitened = torch.linalg.solve_triangular(tril, centred.T, upper=False).T  # (N, d)
        log_det = tril.diagonal().log().sum().item()
    terms = offsets + _knn_neg_log_density(whitened) + log_det  # (N,)
    groups = min(_SPLIT_GROUPS, num_data // (2 * (KNN_NEIGHBOURS + 1)))
    if groups < 2:
        return terms.mean().item(), _stderr_of_mean(terms)
    variances = []
    for _ in range(_SPLIT_PARTITIONS):
        parts = torch.randperm(num_data, device=values.device).tensor_split(groups)
        estimates = torch.stack(
            [(offsets[p] + _knn_neg_log_density(whitened[p])).mean() for p in parts]
        )  # (G,)
        variances.append(estimates.var() / groups)
    return terms.mean().item(), torch.stack(variances).mean().sqrt().item()


_KNN_DISTANCES_PER_CHUNK = 2**22


def _knn_neg_log_density(points: torch.Tensor) -> torch.Tensor:
    """-log q(z_n) per point (N,) by Kozachenko and Leonenko (1987):
    psi(N) - psi(k) + log V_d + d log eps_n, eps_n the distance to the k-th nearest other point
    and V_d the volume of the unit d-ball; its mean estimates the entropy."""
    num_data, dim = points.shape
    rows = max(1, _KNN_DISTANCES_PER_CHUNK // num_data)
    distances = []
    for chunk in points.split(rows):
        # Exact distances (no matrix-product shortcut): the smallest ones are what counts.
        pairwise = torch.cdist(chunk, points, compute_mode="donot_use_mm_for_euclid_dist")
        # The point itself is the nearest, at 0: the (k+1)-th smallest is the k-th neighbour.
        distances.append(pairwise.topk(KNN_NEIGHBOURS + 1, largest=False).values[:, -1])
    log_ball = 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1)
    digammas = torch.special.digamma(
        torch.tensor([num_data, KNN_NEIGHBOURS], dtype=torch.float64, device=points.device)
    )
    return digammas[0] - digammas[1] + log_ball + dim * torch.cat(distances).log()


def _cross_log_q(
    guide: Callable, inputs: Inputs, info: ProgramInfo, trace: Trace, names: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """log sum_m q(z_n | x_m) over all m, and over m != n, each (N,). Draw n goes to the
    particle dim, so each particle n is evaluated at every point m."""
    values = {
        n: data_first(trace.nodes[n]["value"], len(trace.nodes[n]["fn"].event_shape), info)
        for n in names
    }  # (N, 1.., 1, 1.., *event)
    chunk = max(1, _CROSS_EVALS_PER_CHUNK // info.num_data)
    every, others = [], []
    for start in range(0, info.num_data, chunk):
        part = {n: v[start : start + chunk] for n, v in values.items()}
        size = next(iter(part.values())).shape[0]
        with particle_plate(size, info):
            conditioned = trace_program(poutine.condition(guide, data=part), inputs)
        log_q = log_density_per_point(conditioned, info, size, names).double()  # (size, N)
        rows = torch.arange(start, start + size, device=info.device).unsqueeze(-1)
        own = rows == torch.arange(info.num_data, device=info.device)  # (size, N)
        every.append(torch.logsumexp(log_q, dim=1))
        others.append(torch.logsumexp(log_q.masked_fill(own, -math.inf), dim=1))
    return torch.cat(every), torch.cat(others)


def _cross_log_q_one_by_one(
    guide: Callable, inputs: Inputs, info: ProgramInfo, trace: Trace, names: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`_cross_log_q` for a guide that cannot take a particle dim: one run per
    draw n, its value given to every data point m."""
    every, others = [], []
    for n in range(info.num_data):
        values = {name: _draw_for_every_point(trace.nodes[name], n, info) for name in names}
        conditioned = trace_program(poutine.condition(guide, data=values), inputs)
        log_q = log_density_per_point(conditioned, info, 1, names)[0].double()  # (N,)
        every.append(torch.logsumexp(log_q, dim=0))
        alone = log_q.index_fill(0, torch.tensor([n], device=info.device), -math.inf)
        others.append(torch.logsumexp(alone, dim=0))
    return torch.stack(every), torch.stack(others)


def _draw_for_every_point(site: dict, n: int, info: ProgramInfo) -> torch.Tensor:
    value = site["value"]
    data_position = value.dim() - len(site["fn"].event_shape) + info.data_dim
    return value.narrow(data_position, n, 1).expand_as(value)
