"""The ELBO and the importance-weighted estimate of log p(x), computed in JAX with NumPyro.

The twins of :mod:`inference.bounds`: the same results (:class:`~inference.Estimate`,
:class:`~inference.ImportanceEstimate`) from the same streaming statistics, with the log
weights of each chunk of particles computed by one jitted, vmapped NumPyro program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import jax
import numpy as np
import torch
from jax import random
from numpyro import handlers
from numpyro.infer.util import compute_log_probs
from torch import nn

from inference._validate import check_positive_int
from inference.bounds import (
    Estimate,
    ImportanceEstimate,
    _default_chunk_size,
    _one_replicate_estimate,
    _psis_tail_size,
    _RunningLogMeanExp,
    _RunningMoments,
)
from inference.numpyro_backend.mirror import (
    NumPyroGuide,
    NumPyroModel,
    as_mirror,
    jax_data,
    to_tensor,
)


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
    moments = _RunningMoments()
    for log_weights in log_weight_chunks(model, guide, data, num_particles, chunk_size, seed):
        moments.update(log_weights)
    return Estimate(moments.mean, moments.stderr, num_particles)


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
    ESS and PSIS k-hat from all K weights of a point.

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
    pooled = _RunningLogMeanExp(tail_size=_psis_tail_size(num_samples))
    for log_weights in log_weight_chunks(model, guide, data, num_samples, chunk_size, seed):
        pooled.update(log_weights)
    return _one_replicate_estimate(pooled, num_samples)


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
) -> Iterator[torch.Tensor]:
    """log w (c, N) for particles 0 .. num_particles - 1, chunk by chunk, as float64 tensors."""
    chunk = min(chunk_size or _default_chunk_size(data.shape[0]), num_particles)
    # Equal chunks, the last one padded and cut: one shape, so one compilation.
    chunk = -(-num_particles // -(-num_particles // chunk))
    log_weights = _log_weights_fn(model, guide)
    key = random.PRNGKey(seed)
    for start in range(0, num_particles, chunk):
        chunk_weights = log_weights(key, np.arange(start, start + chunk), data)  # (chunk, N)
        yield to_tensor(chunk_weights)[: num_particles - start]


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
