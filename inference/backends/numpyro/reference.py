"""A reference log p(x) without an oracle: NUTS, a proposal fitted to its draws, importance."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import torch
from jax import random
from numpyro.infer import MCMC, NUTS
from torch import nn

from inference._validate import check_positive_int
from inference.backends.numpyro.bounds import importance_estimate
from inference.backends.numpyro.mirror import NumPyroGuide, NumPyroModel, as_mirror, jax_data
from inference.estimators.bounds import Estimate, ImportanceEstimate

MAX_RHAT = 1.01  # Vehtari et al. (2021): rank-normalised split R-hat above this is not converged
MIN_BULK_ESS_PER_CHAIN = 100  # ibid.: at least 100 effective draws per chain
MAX_KHAT = 0.7  # PSIS: above this the importance estimate is unreliable
_COVARIANCE_JITTER = 1e-9  # keeps the proposal's scale positive definite for stuck chains


@dataclass(frozen=True)
class ReferenceEstimate(ImportanceEstimate):
    """A reference log p(x) per point: an importance estimate whose proposal came from NUTS.

    :ivar rhat: (N,) largest rank-normalised split R-hat over the point's latent coordinates.
    :ivar bulk_ess: (N,) smallest bulk effective sample size over those coordinates.
    :ivar draws: (chain, draw, N, k) the NUTS draws of z, e.g. for
        ``to_inference_data(..., reference_draws={"z": draws})``.
    """

    rhat: torch.Tensor | None = None
    bulk_ess: torch.Tensor | None = None
    draws: torch.Tensor | None = None


class UnreliableReferenceWarning(UserWarning):
    """NUTS did not converge at some points, or their importance weights have a heavy tail."""


def nuts_log_marginal(
    model: nn.Module | NumPyroModel,
    x: torch.Tensor,
    *,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 2,
    num_importance: int = 10_000,
    proposal_df: float = 5.0,
    chunk_size: int | None = None,
    seed: int = 0,
) -> ReferenceEstimate:
    """A reference log p(x) per point for a model with a continuous latent and no oracle.

    1. NUTS (Hoffman and Gelman, 2014) on p(z given x) of all N points at once: given the
       parameters the posterior factorises over points, so one chain over the (N, k) latent
       samples every point's posterior.
    2. Per point, a multivariate Student-t proposal r(z) with ``proposal_df`` degrees of
       freedom, the draws' mean as location and their covariance as scale matrix: a
       standard deviation sqrt(df / (df - 2)) times the posterior's, and polynomial tails.
       The prior is N(0, I) and the likelihood bounded, so p(x, z) / r(z) is bounded: the
       weights have finite variance.
    3. log p(x) ~ log (1/K) sum_k p(x, z_k) / r(z_k), z_k ~ r, with K = ``num_importance``
       (``numpyro_iw_log_marginal`` with r as the guide). The estimate is consistent
       whatever NUTS did; NUTS only makes r a good proposal.

    Warns (:class:`UnreliableReferenceWarning`, naming the points) when R-hat > 1.01 or bulk
    ESS < 100 per chain (ArviZ; Vehtari et al., 2021), or when the weights' k-hat > 0.7.

    :param model: a built-in model with a continuous latent, or its ``to_numpyro`` mirror.
    :param x: data (N, D).
    :param int num_warmup: NUTS adaptation steps per chain.
    :param int num_samples: NUTS draws kept per chain.
    :param int num_chains: at least 2, for R-hat.
    :param int num_importance: K, draws from the proposal per point.
    :param float proposal_df: the Student-t's degrees of freedom (> 2).
    :param int chunk_size: proposal draws evaluated at once (default: about 2^16 / N).
    :param int seed: the JAX PRNG seed.
    :returns: a :class:`ReferenceEstimate` in nats, fields of shape (N,).
    """
    model = as_mirror(model, NumPyroModel, "model")
    if model.prior.is_discrete:
        raise ValueError("model has a discrete latent: NUTS needs a continuous one")
    for name, value in (("num_warmup", num_warmup), ("num_samples", num_samples)):
        check_positive_int(name, value)
    if check_positive_int("num_chains", num_chains) < 2:
        raise ValueError(f"num_chains must be >= 2 for R-hat; got {num_chains}")
    check_positive_int("num_importance", num_importance)
    if not proposal_df > 2:
        raise ValueError(f"proposal_df must be > 2 (a finite covariance); got {proposal_df!r}")
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    data = jax_data(x)
    mcmc = MCMC(
        NUTS(model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(random.PRNGKey(seed), data)
    draws = np.array(mcmc.get_samples(group_by_chain=True)["z"])  # (C, S, N, k)
    proposal = _student_t_proposal(draws.reshape(-1, *draws.shape[2:]), proposal_df)
    estimate = importance_estimate(
        model, NumPyroGuide(lambda _: proposal), data, num_importance, chunk_size, seed + 1
    )
    posterior = az.convert_to_dataset({"z": draws})
    rhat = torch.from_numpy(az.rhat(posterior)["z"].values.max(-1))
    bulk_ess = torch.from_numpy(az.ess(posterior, method="bulk")["z"].values.min(-1))
    _warn_if_unreliable(rhat, bulk_ess, estimate.khat, MIN_BULK_ESS_PER_CHAIN * num_chains)
    return ReferenceEstimate(
        estimate.per_point,
        estimate.per_point_stderr,
        num_importance,
        ess=estimate.ess,
        khat=estimate.khat,
        rhat=rhat,
        bulk_ess=bulk_ess,
        draws=torch.from_numpy(draws),
    )


def inference_gap(reference: Estimate, encoder: Estimate) -> Estimate:
    """How much tighter the reference log p(x) is than the encoder's estimate, per point.

    gap(x) = log p(x) - IW_K[q](x) in nats, non-negative in expectation, with ``reference``
    from :func:`nuts_log_marginal` (or an exact value as an :class:`~inference.Estimate`
    with zero standard errors) and ``encoder`` the amortised encoder's ``iw_log_marginal``
    (PyTorch or NumPyro) on the same x. At K = 1 (the ELBO) this is the inference gap of
    Cremer, Li and Duvenaud (2018), "Inference suboptimality in variational autoencoders":
    the approximation gap (what the variational family costs) plus the amortisation gap
    (what sharing one encoder across points costs);
    :func:`inference.estimators.gaps.gap_decomposition` separates the two. It shrinks to 0 as
    K grows, and how fast says how good the encoder is.

    :returns: an :class:`~inference.Estimate` (N,) whose standard errors combine both.
    """
    if reference.per_point.shape != encoder.per_point.shape:
        raise ValueError(
            "reference and encoder must cover the same points; got shapes "
            f"{tuple(reference.per_point.shape)} and {tuple(encoder.per_point.shape)}"
        )
    stderr = torch.hypot(reference.per_point_stderr, encoder.per_point_stderr.double())
    return Estimate(reference.per_point - encoder.per_point.double(), stderr, encoder.num_samples)


def amortization_gap(reference: Estimate, encoder: Estimate) -> Estimate:
    """Deprecated: the old name of :func:`inference_gap`, which it returns. The figure is the
    whole inference gap, not the amortisation gap of Cremer et al. (2018) alone (see
    :func:`inference.estimators.gaps.gap_decomposition` for that).

    :returns: :func:`inference_gap` of the same arguments.
    """
    warnings.warn(
        "amortization_gap is deprecated: it measures the inference gap (approximation plus "
        "amortisation); call inference_gap, or inference.gap_decomposition for the parts",
        DeprecationWarning,
        stacklevel=2,
    )
    return inference_gap(reference, encoder)


@jax.jit
def _student_t_proposal(draws: jax.Array, df: float) -> dist.MultivariateStudentT:
    """A Student-t per point with the draws' (S, N, k) mean and covariance: batch shape (N,)."""
    loc = draws.mean(0)  # (N, k)
    centered = draws - loc
    covariance = jnp.einsum("snk,snl->nkl", centered, centered) / (draws.shape[0] - 1)
    covariance += _COVARIANCE_JITTER * jnp.eye(draws.shape[-1])  # (N, k, k)
    return dist.MultivariateStudentT(df, loc, jnp.linalg.cholesky(covariance))


def _warn_if_unreliable(
    rhat: torch.Tensor, bulk_ess: torch.Tensor, khat: torch.Tensor, min_ess: int
) -> None:
    checks = (
        (rhat > MAX_RHAT, f"NUTS R-hat > {MAX_RHAT}: the chains disagree; run them longer"),
        (bulk_ess < min_ess, f"NUTS bulk ESS < {min_ess}: raise num_samples"),
        (khat > MAX_KHAT, f"k-hat > {MAX_KHAT}: the proposal misses some of the posterior"),
    )
    for flagged, what in checks:
        points = flagged.nonzero().flatten().tolist()
        if points:
            warnings.warn(
                f"the NUTS reference is not reliable at point(s) {points}: {what}",
                UnreliableReferenceWarning,
                stacklevel=3,
            )
