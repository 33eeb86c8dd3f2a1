"""Monte-Carlo bounds on log p(x): the ELBO and the importance-weighted estimate.

Both estimators draw z from the guide under one extra (particle) plate, replay the model
against it and read log w = log p(x, z) - log q(z given x) per particle and data point; they
stream over chunks of particles, so memory depends on ``chunk_size`` and the number of data
points, never on the number of particles: the PSIS tail kept for k-hat is at most
``PSIS_MAX_TAIL`` + 1 weights per point.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from inference._programs import (
    Inputs,
    checked_inputs,
    computed_in,
    evaluation_mode,
    inspect_pair,
    seeded,
)
from inference._progress import CostNotice
from inference._validate import check_finite_result, check_positive_int
from inference.estimators._compiled import (  # noqa: F401 (the errors of compile=, re-exported)
    ChunkLogWeights,
    CompileError,
    CompileWarning,
    check_compile,
)

# Particles x data points evaluated at once when ``chunk_size`` is not given: the fastest of
# 2^12 to 2^18 on the digits VAE (``benchmarks/iw.py``, chunk sweep: 2^15 took 0.71 of 2^16's
# time and 0.61 of 2^18's; below 2^14 the per-chunk Python dominates), and memory bounded.
_DEFAULT_CHUNK_BUDGET = 2**15
_MIN_TAIL = 10  # PSIS needs at least this many tail weights to fit a Pareto shape
# PSIS fits its Pareto to the largest min(0.2 K, 3 sqrt K) weights; beyond K = 29127 that
# exceeds 512 and grows without bound, so the tail kept per point (and fitted) stops here.
PSIS_MAX_TAIL = 512
_EQUAL_LOG_WEIGHTS = 1e-9  # log weights closer than this are equal up to rounding
_ROUNDING = 8 * torch.finfo(torch.float32).eps  # relative round-off of a float32 log weight
KHAT_THRESHOLD = 0.7  # PSIS: above it an importance-sampling estimate is unreliable


@dataclass(frozen=True)
class Estimate:
    """A per-point Monte-Carlo estimate in nats.

    :ivar per_point: (N,) estimates.
    :ivar per_point_stderr: (N,) their Monte-Carlo standard errors (NaN when one draw
        cannot tell: a single particle or replicate).
    :ivar num_samples: particles per estimate.
    :ivar mean: average over points.
    :ivar stderr: Monte-Carlo standard error of ``mean`` (points are independent).
    :ivar given: sites the figures are conditional on: observed sites outside the data plate,
        such as global latents fixed by ``poutine.condition`` (log p(x_n given them)).
    """

    per_point: torch.Tensor
    per_point_stderr: torch.Tensor
    num_samples: int
    mean: float = field(init=False)
    stderr: float = field(init=False)
    given: tuple[str, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        num_data = self.per_point.shape[0]
        object.__setattr__(self, "mean", self.per_point.mean().item())
        object.__setattr__(
            self, "stderr", (self.per_point_stderr.pow(2).sum().sqrt() / num_data).item()
        )


@dataclass(frozen=True)
class ImportanceEstimate(Estimate):
    """An importance-weighted estimate of log p(x), with diagnostics of the weights.

    :ivar ess: (N,) effective sample size (sum w)^2 / sum w^2 of all the weights of a point.
    :ivar khat: (N,) Pareto k-hat of those weights (PSIS; > 0.7: the estimate is unreliable;
        NaN when too few weights to fit a tail; -inf when all weights are equal), fitted to
        the largest min(0.2 K, 3 sqrt K, ``PSIS_MAX_TAIL``) of them.
    :ivar num_replicates: independent K-sample estimates averaged into ``per_point``.
    """

    ess: torch.Tensor | None = None
    khat: torch.Tensor | None = None
    num_replicates: int = 1

    @property
    def unreliable(self) -> torch.Tensor:
        """(N,) bool: points whose k-hat exceeds 0.7, PSIS's threshold (Vehtari et al.),
        where neither the estimate nor its standard error can be trusted: the delta-method
        stderr there can be several times too small."""
        return self.khat > KHAT_THRESHOLD


def elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_particles: int = 1,
    chunk_size: int | None = None,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
    compile: bool | None = None,
) -> Estimate:
    """Monte-Carlo ELBO per point: E_q[log p(x, z) - log q(z given x)] <= log p(x).

    Kingma and Welling (2014). Averages log w over ``num_particles`` draws z ~ q(z given x).

    :param model: a Pyro model following the plate convention (``model(x)``).
    :param guide: a Pyro guide sampling every latent site of the model (``guide(x)``).
    :param x: data (N, ...).
    :param int num_particles: draws per point (>= 2 for a standard error).
    :param int chunk_size: particles evaluated at once (default: about 2^15 / N).
    :param int seed: seeds torch's RNG for this call only; None uses the caller's RNG.
    :param dtype: torch.float32 or torch.float64 to compute in: x and the model and guide
        (where they are modules) are cast for the call; None (default) keeps them as they are.
    :param model_args, model_kwargs: extra arguments of model and guide, after x:
        ``model(x, *model_args, **model_kwargs)`` (labels, flags); a tensor among them whose
        leading dimension is N goes with x.
    :param data_plate: the name of the data plate, where the trace cannot tell (default:
        the vectorised plate of size N around the observed sites).
    :param vectorize: evaluate particles in one extra plate (True) or one at a time (False);
        None (default) vectorises where that gives the same numbers as one at a time.
    :param compile: compute the chunks' log weights with ``torch.compile``: True requires it
        (:class:`CompileError` where the programs cannot be compiled), False never, None
        (default) where it pays: vectorised programs whose chunks would take 3 minutes or more
        eagerly, with a :class:`CompileWarning` and the eager path where compiling fails. The
        same draws and log weights to float round-off either way (see
        :mod:`inference.estimators._compiled`).
    :returns: an :class:`Estimate` in nats, ``per_point`` of shape (N,).
    """
    check_compile(compile)
    inputs, chunk = _checked_call(
        x, ("num_particles", num_particles), chunk_size, num_particles, model_args, model_kwargs
    )
    moments = _RunningMoments()
    with _evaluating(model, guide, inputs, seed, dtype) as inputs:
        info = inspect_pair(model, guide, inputs, data_plate=data_plate, vectorize=vectorize)
        sizes = list(_chunk_sizes(num_particles, chunk))
        chunk_log_weights = _validating_first_chunk(
            ChunkLogWeights(model, guide, inputs, info, sizes, compile, "elbo")
        )
        notice = CostNotice("elbo", len(sizes), shown=False)
        for size in sizes:
            moments.update(chunk_log_weights(size).double())
            notice.step()
    check_finite_result("the ELBO", moments.mean, inputs.x)
    return Estimate(moments.mean, moments.stderr, num_particles, given=info.given_sites)


def iw_log_marginal(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int,
    chunk_size: int | None = None,
    seed: int | None = None,
    num_replicates: int = 1,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    data_plate: str | None = None,
    vectorize: bool | None = None,
    compile: bool | None = None,
) -> ImportanceEstimate:
    """Importance-weighted estimate of log p(x) per point: log (1/K) sum_k w_k, w = p(x,z)/q(z).

    Burda, Grosse and Salakhutdinov (2016): with z_k ~ q(z given x), its expectation IW_K is a
    lower bound on log p(x) that is non-decreasing in K and tends to log p(x). K = 1 is the
    ELBO. The sum streams over chunks of particles with a running max-shifted log-sum-exp,
    so peak memory is set by ``chunk_size``, not by K.

    The standard error of one K-sample estimate comes from the delta method,
    sqrt((K / ESS - 1) / K); with ``num_replicates`` R > 1 the R independent estimates are
    averaged and their spread gives the standard error (an estimate of E[IW_K]).
    ESS and the Pareto k-hat are computed from all S = K R weights of each point. k-hat is
    PSIS's (Vehtari et al., 2024): the shape of a generalized Pareto fitted (Zhang and
    Stephens, 2009, as Pyro's ``fit_generalized_pareto``) to the M largest weights above the
    (M + 1)-th, with ``pyro.infer.importance.psis_diagnostic``'s M = min(0.2 S, 3 sqrt S) up
    to S = 29127 and M = ``PSIS_MAX_TAIL`` beyond, so that the tail kept per point does not
    grow with K either (see :func:`_psis_tail_size`).

    :param int num_samples: K, particles per estimate (>= 1).
    :param int chunk_size: particles evaluated at once (default: about 2^15 / N).
    :param int seed: seeds torch's RNG for this call only; None uses the caller's RNG.
    :param int num_replicates: R independent K-sample estimates.
    :param bool progress: show a progress bar over chunks.
    :param dtype: torch.float32 or torch.float64 to compute in (as in :func:`elbo`); the
        log-sum-exp runs in float64 either way.
    :param model_args, model_kwargs, data_plate, vectorize, compile: as in :func:`elbo`.
    :returns: an :class:`ImportanceEstimate` in nats with ``per_point``, ``ess``, ``khat``
        of shape (N,).
    """
    check_compile(compile)
    check_positive_int("num_replicates", num_replicates)
    total = check_positive_int("num_samples", num_samples) * num_replicates
    inputs, chunk = _checked_call(
        x, ("num_samples", num_samples), chunk_size, total, model_args, model_kwargs
    )
    pooled = _RunningLogMeanExp(tail_size=_psis_tail_size(total))
    replicates = _RunningMoments()
    with _evaluating(model, guide, inputs, seed, dtype) as inputs:
        info = inspect_pair(model, guide, inputs, data_plate=data_plate, vectorize=vectorize)
        plan = list(_replicate_plan(num_samples, num_replicates, chunk))
        sizes = [part.particles for part in plan]
        chunk_log_weights = _validating_first_chunk(
            ChunkLogWeights(model, guide, inputs, info, sizes, compile, "iw_log_marginal")
        )
        notice = CostNotice("iw_log_marginal", len(plan), shown=progress)
        for part in tqdm(plan, disable=not progress, desc="IW chunks"):
            log_weights = chunk_log_weights(part.particles).double()  # (particles, N)
            pooled.update(log_weights)
            if part.whole_replicates:
                replicates.feed(log_weights, part.whole_replicates, num_samples)
            else:
                replicates.feed_piece(log_weights, ends_replicate=part.ends_replicate)
            notice.step()
    check_finite_result("the IW estimate", pooled.log_mean_exp(), inputs.x)
    if num_replicates == 1:
        return replace(_one_replicate_estimate(pooled, num_samples), given=info.given_sites)
    return ImportanceEstimate(
        replicates.mean,
        replicates.stderr,
        num_samples,
        ess=pooled.ess(),
        khat=pooled.khat(),
        num_replicates=num_replicates,
        given=info.given_sites,
    )


def _one_replicate_estimate(pooled: _RunningLogMeanExp, num_samples: int) -> ImportanceEstimate:
    """IW_K of one replicate from its K streamed weights, with the delta-method stderr."""
    ess = pooled.ess()
    stderr = _delta_method_stderr(ess, num_samples)
    return ImportanceEstimate(
        pooled.log_mean_exp(), stderr, num_samples, ess=ess, khat=pooled.khat()
    )


def weight_diagnostics(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ESS and PSIS k-hat per point of importance log weights (K, N), as :func:`iw_log_marginal`
    reports them: (N,) effective sample sizes (sum w)^2 / sum w^2 and (N,) Pareto k-hats."""
    total = log_weights.shape[0]
    running = _RunningLogMeanExp(tail_size=_psis_tail_size(total))
    running.update(log_weights.double())
    return running.ess(), running.khat()


@contextmanager
def _evaluating(
    model: Callable, guide: Callable, inputs: Inputs, seed: int | None, dtype: torch.dtype | None
) -> Iterator[Inputs]:
    """What every estimate runs under: no gradients, its own seed, the requested dtype (the
    inputs cast, yielded) and the modules in eval mode."""
    with (
        torch.no_grad(),
        seeded(seed),
        computed_in(dtype, inputs, model, guide) as cast,
        evaluation_mode(model, guide),
    ):
        yield cast


def _validating_first_chunk(
    chunk_log_weights: Callable[[int], torch.Tensor],
) -> Callable[[int], torch.Tensor]:
    """``chunk_log_weights`` with Pyro's and torch's validation (argument and support checks)
    on the first chunk only, as the caller has it: the programs have been checked on a trace
    of all the data by then, and on the digits VAE the checks cost two fifths of each chunk
    (and break a compiled graph at every site). A later chunk whose numbers go bad still
    ends in :func:`~inference._validate.check_finite_result`."""
    calls = itertools.count()

    def evaluate(size: int) -> torch.Tensor:
        validate = is_validation_enabled() and next(calls) == 0
        with pyro.validation_enabled(validate):
            return chunk_log_weights(size)

    return evaluate


def _checked_call(
    x: object,
    count: tuple[str, int],
    chunk_size: int | None,
    total: int,
    model_args: tuple,
    model_kwargs: dict | None,
) -> tuple[Inputs, int]:
    """Check the arguments before any work: the inputs, and the chunk size (at most ``total``
    particles; by default about 2^15 particle-points)."""
    count_name, num_particles = count
    check_positive_int(count_name, num_particles)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    inputs = checked_inputs(x, model_args, model_kwargs)
    chunk = chunk_size or _default_chunk_size(inputs.num_data)
    return inputs, min(chunk, total)


def _default_chunk_size(num_data: int) -> int:
    """Particles per chunk when the caller names none: about 2^15 particle-points at once."""
    return max(1, _DEFAULT_CHUNK_BUDGET // num_data)


def _chunk_sizes(total: int, chunk: int) -> Iterator[int]:
    for start in range(0, total, chunk):
        yield min(chunk, total - start)


class _Chunk(NamedTuple):
    """One chunk of particles of :func:`iw_log_marginal`'s R replicates of K.

    :ivar particles: how many particles the chunk draws.
    :ivar whole_replicates: complete K-sample replicates in it (``particles`` = that times
        K); 0 when K exceeds the chunk size and the chunk is a piece of one replicate.
    :ivar ends_replicate: whether the chunk completes its replicate(s): always for whole
        replicates, only for the last piece of a replicate split into pieces.
    """

    particles: int
    whole_replicates: int = 0
    ends_replicate: bool = True


def _replicate_plan(num_samples: int, num_replicates: int, chunk: int) -> Iterator[_Chunk]:
    """The chunks of R replicates of K particles, at most ``chunk`` particles each: as many
    whole replicates per chunk as fit when K <= chunk, otherwise each replicate in pieces."""
    if num_samples <= chunk:
        per_chunk = chunk // num_samples
        for start in range(0, num_replicates, per_chunk):
            count = min(per_chunk, num_replicates - start)
            yield _Chunk(count * num_samples, whole_replicates=count)
        return
    for _ in range(num_replicates):
        sizes = list(_chunk_sizes(num_samples, chunk))
        for index, size in enumerate(sizes):
            yield _Chunk(size, ends_replicate=index == len(sizes) - 1)


def _psis_tail_size(total: int) -> int:
    """M + 1: the M largest of ``total`` weights PSIS fits its Pareto to, and the cutoff.

    M = min(0.2 K, 3 sqrt K) is ``psis_diagnostic``'s (Vehtari et al., 2024, who recommend
    it) up to ``PSIS_MAX_TAIL``, where it stops, so the tail kept per point is bounded in K.
    Past the cap (K > 29127) the fit departs from ``psis_diagnostic``'s cutoff, and is still
    an estimate of the same k: exceedances over any high enough threshold are generalized
    Pareto (Pickands, 1975), and the fit to the M largest order statistics estimates k for any
    M that is large but small next to K (Vehtari et al.'s 3 sqrt K is one such choice). With M
    held at 512 the threshold only moves further into the tail as K grows (less bias), while
    the standard error stays near (1 + k) / sqrt(512), below 0.08 for k < 0.7, instead of
    shrinking further: ample to tell k-hat from the 0.7 threshold.
    """
    psis_tail = int(math.ceil(min(0.2 * total, 3.0 * math.sqrt(total))))
    return min(psis_tail, PSIS_MAX_TAIL) + 1


def _delta_method_stderr(ess: torch.Tensor, num_samples: int) -> torch.Tensor:
    if num_samples == 1:
        return torch.full_like(ess, math.nan)
    return ((num_samples / ess - 1).clamp_min(0) / num_samples).sqrt()


class _RunningMoments:
    """Mean and variance per point of streamed values, merged chunk by chunk (Chan et al.).

    ``update`` takes values (c, N); ``feed`` turns a chunk of whole replicates' log weights
    into their IW estimates, and ``feed_piece`` streams a replicate that comes in pieces,
    adding its estimate with the piece that ends it.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: torch.Tensor | float = 0.0
        self._sum_sq: torch.Tensor | float = 0.0
        self._partial: _RunningLogMeanExp | None = None

    def update(self, values: torch.Tensor) -> None:
        count = values.shape[0]
        chunk_mean = values.mean(0)
        chunk_sum_sq = ((values - chunk_mean) ** 2).sum(0)
        total = self.count + count
        delta = chunk_mean - self._mean
        self._mean = self._mean + delta * count / total
        self._sum_sq = self._sum_sq + chunk_sum_sq + delta**2 * self.count * count / total
        self.count = total

    def feed(self, log_weights: torch.Tensor, replicates: int, num_samples: int) -> None:
        """Log weights (r K, N) of r whole replicates: adds their r IW_K estimates."""
        grouped = log_weights.reshape(replicates, num_samples, -1)  # (r, K, N)
        self.update(torch.logsumexp(grouped, 1) - math.log(num_samples))

    def feed_piece(self, log_weights: torch.Tensor, *, ends_replicate: bool) -> None:
        """Log weights (c, N) of a piece of one replicate: adds its IW estimate at the end."""
        self._partial = self._partial or _RunningLogMeanExp(tail_size=0)
        self._partial.update(log_weights)
        if ends_replicate:
            self.update(self._partial.log_mean_exp().unsqueeze(0))
            self._partial = None

    @property
    def mean(self) -> torch.Tensor:
        return self._mean

    @property
    def stderr(self) -> torch.Tensor:
        if self.count < 2:
            return torch.full_like(self._mean, math.nan)
        return (self._sum_sq / (self.count - 1) / self.count).sqrt()


class _RunningLogMeanExp:
    """Streams log weights (c, N) into log mean exp, the ESS and the largest weights per point.

    Keeps the running max m and s1 = sum exp(lw - m), s2 = sum exp(2 (lw - m)), rescaled
    when the max grows, so no exp ever sees an unshifted log weight.
    """

    def __init__(self, tail_size: int) -> None:
        self.tail_size = tail_size
        self.count = 0
        self._max: torch.Tensor | None = None
        self._sum = self._sum_sq = self._tail = None
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0

    def update(self, log_weights: torch.Tensor) -> None:
        chunk_max = log_weights.max(0).values  # (N,)
        new_max = chunk_max if self._max is None else torch.maximum(self._max, chunk_max)
        # A point whose weights are all zero so far (log weight -inf) shifts by 0, not by -inf.
        shift = torch.where(new_max == -math.inf, 0.0, new_max)
        shifted = log_weights - shift
        chunk_sum, chunk_sum_sq = shifted.exp().sum(0), (2 * shifted).exp().sum(0)
        if self._max is None:
            self._sum, self._sum_sq = chunk_sum, chunk_sum_sq
        else:
            rescale = (self._max - shift).exp()  # 0 where the old max was -inf
            self._sum = self._sum * rescale + chunk_sum
            self._sum_sq = self._sum_sq * rescale**2 + chunk_sum_sq
        self._max = new_max
        self._shift = shift
        self.count += log_weights.shape[0]
        if self.tail_size:
            # Chunks wait until they hold as many rows as the tail, so each weight goes through
            # about two top-k selections however small the chunks are.
            self._pending.append(log_weights)
            self._pending_rows += log_weights.shape[0]
            if self._pending_rows >= self.tail_size:
                self._merge_pending()

    def _merge_pending(self) -> None:
        kept = [] if self._tail is None else [self._tail]
        candidates = torch.cat(kept + self._pending)
        keep = min(self.tail_size, candidates.shape[0])
        self._tail = candidates.topk(keep, dim=0).values  # (T, N), descending
        self._pending, self._pending_rows = [], 0

    def log_mean_exp(self) -> torch.Tensor:
        return self._shift + self._sum.log() - math.log(self.count)

    def ess(self) -> torch.Tensor:
        """(sum w)^2 / sum w^2; 0 for a point whose weights are all zero."""
        return torch.where(self._sum > 0, self._sum**2 / self._sum_sq, 0.0)

    def khat(self) -> torch.Tensor:
        """(N,) Pareto k-hat per point, fitted to the tail as ``psis_diagnostic`` does."""
        if self._pending:
            self._merge_pending()
        return _khat_of_tails(self._tail)


def _khat_of_tails(top_log_weights: torch.Tensor) -> torch.Tensor:
    """k-hat per point from the largest log weights (T, N) (descending; the last row is the
    cutoff), with ``psis_diagnostic``'s tail: the weights above the cutoff and above 1e-15
    times the largest.

    Weights that are all equal (an exact proposal) have no tail at all: -inf. So do weights
    equal up to the round-off of a float32 log-density (8 ulps of the largest, relative):
    an exact proposal evaluated in float32 is still an exact proposal. NaN where fewer than
    10 weights are left to fit.
    """
    top = top_log_weights[0]  # (N,)
    shifted = top_log_weights - top  # (T, N)
    last = shifted[-1]
    rounding = torch.clamp_min(_ROUNDING * top.abs(), _ROUNDING).clamp_min(_EQUAL_LOG_WEIGHTS)
    all_equal = last > -rounding
    # A NaN cutoff (every weight zero) falls back to the floor, leaving an empty tail.
    cutoff = torch.where(last > math.log(1e-15), last, math.log(1e-15))
    in_tail = shifted > cutoff  # (T, N)
    exceedances = torch.where(in_tail, shifted.exp() - cutoff.exp(), 0.0)
    enough = in_tail.sum(0) >= _MIN_TAIL
    # A tail sitting on its cutoff has no shape to fit.
    has_shape = (exceedances > 0).any(0)
    khat = torch.full_like(top, math.nan)
    khat[enough & ~has_shape] = -math.inf
    fit = enough & has_shape & ~all_equal
    if bool(fit.any()):
        khat[fit] = _generalized_pareto_shape(exceedances[:, fit], in_tail[:, fit])
    khat[all_equal] = -math.inf
    return khat


def _generalized_pareto_shape(exceedances: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Shape k of a generalized Pareto fitted to each column of exceedances (T, P), using the
    entries where ``observed`` (T, P) is True (at least 2 per column, some positive): (P,).

    Zhang and Stephens (2009) with Vehtari et al.'s weak prior on k, step for step as Pyro's
    ``fit_generalized_pareto`` (to 1e-6), which fits one vector at a time: here the P fits are
    array arithmetic at once, each column with its own sample size n and grid of 30 + sqrt(n)
    candidates b = k / sigma.
    """
    num = observed.sum(0)  # (P,)
    n = num.double()
    # Ascending, the observed entries first; the others become 0, which log1p(-b x) ignores.
    sample = torch.where(observed, exceedances.double(), math.inf).sort(0).values  # (T, P)
    quartile = sample.gather(0, (n / 4 - 0.5).long().unsqueeze(0))  # (1, P)
    largest = sample.gather(0, (num - 1).unsqueeze(0))  # (1, P)
    sample = torch.where(
        torch.arange(sample.shape[0], device=sample.device).unsqueeze(-1) < num, sample, 0.0
    )
    grid_size = 30 + n.sqrt().floor()  # (P,)
    grid = torch.arange(
        1, int(grid_size.max()) + 1, dtype=torch.float64, device=sample.device
    ).unsqueeze(-1)  # (G, 1)
    on_grid = grid <= grid_size  # (G, P)
    b = (1.0 - grid_size.sqrt() / (grid - 0.5).sqrt()) / (3.0 * quartile) + 1 / largest  # (G, P)
    b = torch.where(on_grid, b, 0.0)
    k = torch.stack([(-b_row * sample).log1p().sum(0) for b_row in b]) / n  # (G, P)
    profile = torch.where(on_grid, n * ((-b / k).log() - (k + 1.0)), -math.inf)  # (G, P)
    # Pyro's weights 1 / sum_j exp(L_j - L_i) are the softmax of the profile log-likelihood.
    weights = torch.softmax(profile, dim=0)
    weights = torch.where(weights > 1e-30, weights, 0.0)
    b_mean = (b * weights).sum(0) / weights.sum(0)  # (P,)
    k_mean = (-b_mean * sample).log1p().sum(0) / n
    return k_mean * n / (n + 10.0) + 5.0 / (n + 10.0)
