"""The ELBO and the importance-weighted estimate of log p(x), computed in JAX with NumPyro.

The twins of :mod:`inference.estimators.bounds`: the same results (:class:`~inference.Estimate`,
:class:`~inference.ImportanceEstimate`), with the log weights of each chunk of particles
computed by one jitted, vmapped NumPyro program and reduced by this module's own streaming
statistics in ``jax.numpy`` (running log-sum-exps, shifted sums, a top-k tail), k-hat from
ArviZ's ``psislw``. No reduction is shared with the PyTorch side, only the result classes
and the definition of the PSIS tail (``PSIS_MAX_TAIL``), so when the two agree, that is
evidence for both.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax, random
from numpyro import handlers
from numpyro.infer.util import compute_log_probs
from torch import nn

from inference._validate import check_positive_int
from inference.backends.numpyro.mirror import (
    NumPyroGuide,
    NumPyroModel,
    as_mirror,
    jax_data,
    to_tensor,
)
from inference.estimators.bounds import (
    PSIS_MAX_TAIL,
    Estimate,
    ImportanceEstimate,
    _default_chunk_size,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its refactor on import
    import arviz as az

# Log weights closer than this (relative to the largest) are equal up to float64 round-off.
_EQUAL_LOG_WEIGHTS = 1e-9


def numpyro_elbo(
    model: nn.Module | NumPyroModel,
    guide: nn.Module | NumPyroGuide,
    x: torch.Tensor,
    *,
    num_particles: int = 1,
    chunk_size: int | None = None,
    seed: int = 0,
) -> Estimate:
    """Monte-Carlo ELBO per point, E_q[log p(x, z) - log q(z given x)], computed in JAX.

    The NumPyro twin of :func:`inference.elbo` (Kingma and Welling, 2014): same arguments
    and result, with model and guide converted by ``to_numpyro`` when they are modules.

    :param x: data (N, D).
    :param int num_particles: draws per point (>= 2 for a standard error).
    :param int chunk_size: particles evaluated at once (default: about 2^16 / N).
    :param int seed: the JAX PRNG seed; particle i draws from ``fold_in(key, i)``, so the
        result does not depend on ``chunk_size``.
    :returns: an :class:`~inference.Estimate` in nats, ``per_point`` of shape (N,).
    """
    check_positive_int("num_particles", num_particles)
    model, guide, data = _prepare(model, guide, x, chunk_size)
    chunks = log_weight_chunks(model, guide, data, num_particles, chunk_size, seed)
    mean, stderr = _mean_and_stderr(chunks)
    return Estimate(to_tensor(mean), to_tensor(stderr), num_particles)


def numpyro_iw_log_marginal(
    model: nn.Module | NumPyroModel,
    guide: nn.Module | NumPyroGuide,
    x: torch.Tensor,
    *,
    num_samples: int,
    chunk_size: int | None = None,
    seed: int = 0,
) -> ImportanceEstimate:
    """Importance-weighted log p(x) per point, log (1/K) sum_k p(x, z_k) / q(z_k given x).

    The NumPyro twin of :func:`inference.iw_log_marginal` (Burda et al., 2016) with one
    replicate: z_k ~ q(z given x), streamed over chunks of particles with a running
    log-sum-exp (memory set by ``chunk_size``, not K); standard error by the delta method;
    ESS and PSIS k-hat (ArviZ's ``psislw`` on the largest weights) from all K weights of a
    point.

    :param int num_samples: K (>= 1).
    :param int chunk_size: particles evaluated at once (default: about 2^16 / N).
    :param int seed: the JAX PRNG seed (the result does not depend on ``chunk_size``).
    :returns: an :class:`~inference.ImportanceEstimate` in nats, fields of shape (N,).
    """
    check_positive_int("num_samples", num_samples)
    model, guide, data = _prepare(model, guide, x, chunk_size)
    return importance_estimate(model, guide, data, num_samples, chunk_size, seed)


def importance_estimate(
    model: NumPyroModel,
    guide: NumPyroGuide,
    data: jax.Array,
    num_samples: int,
    chunk_size: int | None,
    seed: int,
) -> ImportanceEstimate:
    """:func:`numpyro_iw_log_marginal` on checked arguments."""
    chunks = log_weight_chunks(model, guide, data, num_samples, chunk_size, seed)
    return _importance_estimate(chunks, num_samples)


def _mean_and_stderr(chunks: Iterable[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Mean per point of streamed values (c, N) and its standard error sqrt(s^2 / n) (NaN for
    n = 1), from running sums of the values shifted by the first chunk's mean: with the shift
    near the mean, the one-pass variance (S2 - S1^2 / n) / (n - 1) does not cancel."""
    count, shift, total, total_sq = 0, None, 0.0, 0.0
    for values in chunks:
        shift = values.mean(0) if shift is None else shift  # (N,)
        centred = values - shift  # (c, N)
        count += values.shape[0]
        total = total + centred.sum(0)
        total_sq = total_sq + (centred**2).sum(0)
    mean = shift + total / count
    if count == 1:
        return mean, jnp.full_like(mean, jnp.nan)
    variance = jnp.maximum(total_sq - total**2 / count, 0.0) / (count - 1)
    return mean, jnp.sqrt(variance / count)


def _importance_estimate(chunks: Iterable[jax.Array], num_samples: int) -> ImportanceEstimate:
    """IW_K, its delta-method standard error sqrt((K / ESS - 1) / K), ESS and PSIS k-hat per
    point, from the K streamed log weights (c, N) of each point.

    Running log sum w and log sum w^2 (``logaddexp`` of each chunk's ``logsumexp``, so no
    weight is exponentiated unshifted) and the largest M + 1 log weights (``lax.top_k``),
    M = min(0.2 K, 3 sqrt K, ``PSIS_MAX_TAIL``) as in :func:`inference.iw_log_marginal`.
    """
    kept = min(_psis_tail(num_samples) + 1, num_samples)
    log_sum = log_sum_sq = top = None
    for log_weights in chunks:
        if top is None:
            num_data = log_weights.shape[1]
            log_sum = log_sum_sq = jnp.full(num_data, -jnp.inf)
            top = jnp.full((num_data, kept), -jnp.inf)
        log_sum = jnp.logaddexp(log_sum, jax.nn.logsumexp(log_weights, 0))  # (N,)
        log_sum_sq = jnp.logaddexp(log_sum_sq, jax.nn.logsumexp(2 * log_weights, 0))
        top = lax.top_k(jnp.concatenate([top, log_weights.T], 1), kept)[0]  # (N, kept)
    # A point whose weights are all zero has ESS 0, not NaN.
    ess = jnp.where(log_sum > -jnp.inf, jnp.exp(2 * log_sum - log_sum_sq), 0.0)
    if num_samples == 1:
        stderr = jnp.full_like(ess, jnp.nan)
    else:
        stderr = jnp.sqrt(jnp.maximum(num_samples / ess - 1, 0.0) / num_samples)
    return ImportanceEstimate(
        to_tensor(log_sum - math.log(num_samples)),
        to_tensor(stderr),
        num_samples,
        ess=to_tensor(ess),
        khat=torch.from_numpy(_arviz_khat(np.asarray(top), _psis_tail(num_samples))),
    )


def _psis_tail(num_samples: int) -> int:
    """M, the largest weights PSIS fits: min(0.2 K, 3 sqrt K) (Vehtari et al., 2024), at most
    ``PSIS_MAX_TAIL``."""
    return min(math.ceil(min(0.2 * num_samples, 3 * math.sqrt(num_samples))), PSIS_MAX_TAIL)


def _arviz_khat(top_log_weights: np.ndarray, tail: int) -> np.ndarray:
    """ArviZ's PSIS k-hat per point from its largest log weights (N, T), descending, T <= M + 1
    for M = ``tail``: -inf where they are equal up to round-off (an exact proposal: no tail),
    NaN where ArviZ finds too few weights above the cutoff to fit.

    ``az.psislw`` fits the largest ceil(min(S / 5, 3 sqrt(S / reff))) of S weights. Padded
    with zero weights (log -inf, below any cutoff) to S = 5 M, and with a reff small enough
    that S / 5 is the smaller term, that is M: the fit psislw makes on all K weights (with
    M = 3 sqrt K up to the cap), since weights below the cutoff enter neither the cutoff nor
    the fit.
    """
    num_data, kept = top_log_weights.shape
    padded = np.full((num_data, 5 * tail), -np.inf)
    padded[:, :kept] = top_log_weights
    # A point whose weights are all zero (log -inf - -inf) gets NaN, silently.
    with np.errstate(invalid="ignore"):
        _, khat = az.psislw(padded, reff=1.0 / padded.shape[1])
        largest, cutoff = top_log_weights[:, 0], top_log_weights[:, -1]
        equal = largest - cutoff <= _EQUAL_LOG_WEIGHTS * np.maximum(1.0, np.abs(largest))
    khat = np.where(np.isposinf(khat), np.nan, khat)
    return np.where(equal, -np.inf, khat)


def _prepare(
    model: nn.Module | NumPyroModel,
    guide: nn.Module | NumPyroGuide,
    x: torch.Tensor,
    chunk_size: int | None,
) -> tuple[NumPyroModel, NumPyroGuide, jax.Array]:
    """Check the arguments once; mirrors of the modules and the data as a JAX array."""
    model = as_mirror(model, NumPyroModel, "model")
    guide = as_mirror(guide, NumPyroGuide, "guide")
    if guide.site != "z":
        raise ValueError(f"the guide samples site '{guide.site}'; the model's latent is 'z'")
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    return model, guide, jax_data(x)


def log_weight_chunks(
    model: NumPyroModel,
    guide: NumPyroGuide,
    data: jax.Array,
    num_particles: int,
    chunk_size: int | None,
    seed: int,
) -> Iterator[jax.Array]:
    """log w (c, N) for particles 0 .. num_particles - 1, chunk by chunk (float64)."""
    chunk = min(chunk_size or _default_chunk_size(data.shape[0]), num_particles)
    # Equal chunks, the last one padded and cut: one shape, so one compilation.
    chunk = -(-num_particles // -(-num_particles // chunk))
    log_weights = _log_weights_fn(model, guide)
    key = random.PRNGKey(seed)
    for start in range(0, num_particles, chunk):
        chunk_weights = log_weights(key, np.arange(start, start + chunk), data)  # (chunk, N)
        yield chunk_weights[: num_particles - start]


def _log_weights_fn(model: NumPyroModel, guide: NumPyroGuide) -> Callable:
    """A jitted (key, particles (c,), x (N, D)) -> log w = log p(x, z) - log q(z given x): (c, N).

    Particle i draws from ``fold_in(key, i)``. One particle is NumPyro's ``Trace_ELBO`` step:
    the seeded guide's log-density and trace, then the model replayed against it.
    ``log_density`` would sum over the data plate; the per-point figures are its per-site
    terms before that sum (``compute_log_probs``).
    """

    def particle(key: jax.Array, index: jax.Array, x: jax.Array) -> jax.Array:
        seeded_guide = handlers.seed(guide, random.fold_in(key, index))
        log_q, guide_trace = _log_density_per_point(seeded_guide, x)
        log_p, _ = _log_density_per_point(handlers.replay(model, guide_trace), x)
        return log_p - log_q

    return jax.jit(jax.vmap(particle, in_axes=(None, 0, None)))


def _log_density_per_point(program: Callable, x: jax.Array) -> tuple[jax.Array, dict]:
    """Every site's log-density summed within each data point, (N,), and the trace."""
    log_probs, trace = compute_log_probs(program, (x,), {}, {}, sum_log_prob=False)
    return sum(log_probs.values()), trace
