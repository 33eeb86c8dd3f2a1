"""VAE decoders: Gaussian (diagonal or full covariance) and factorised Bernoulli.

Whether a decoder is *powerful* for a data set decides whether the ELBO wants the latent at
all: if some parameter setting gives p(x given z) = p_data(x) for every z, ignoring z (with
q = prior) makes the bound tight, and that is a global optimum of the ELBO.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro import distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroParam

from lvm_models._base import LatentVariableModel, check_positive_int
from lvm_models._nn import MIN_SCALE, check_hidden, mlp, output_layer

COVARIANCE_KINDS = ("diagonal", "full")


class _MLPDecoderModel(LatentVariableModel):
    """p(z) = N(0, I_k) and an MLP that maps z to the parameters of p(x given z)."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int], num_outputs: int):
        super().__init__(data_dim, latent_dim)
        self.hidden = check_hidden(hidden)
        self.decoder = mlp(self.latent_dim, self.hidden, num_outputs)

    @torch.no_grad()
    def ignore_latent(self) -> None:
        """Cut every dependence of the decoder on z (zero its first-layer weights)."""
        self.decoder[0].weight.zero_()


class GaussianVAE(_MLPDecoderModel):
    """p(z) = N(0, I_k), p(x given z) = N(mu(z), Sigma(z)) with mu and Sigma from an MLP.

    ``covariance="diagonal"``: Sigma(z) = diag(sigma(z)^2), sigma a network output. Such a
    decoder can represent p_data without using z only when the data's coordinates are
    independent: it is powerful for independent-coordinate Gaussian data, and there the
    ELBO's global optimum ignores the latent. For *correlated* Gaussian data it is not
    powerful: a diagonal Gaussian cannot carry the correlations, so the latent is used to
    carry them.

    ``covariance="full"``: Sigma = L L^T with a learned lower Cholesky factor L (a free
    parameter, or a network output of z with ``cholesky_from_z=True``). This decoder is
    powerful for any Gaussian data: with the decoder ignoring z and outputting the
    maximum-likelihood mean and covariance, the ELBO equals the best log-likelihood a
    Gaussian can reach (see :meth:`set_collapsed`).

    :param int data_dim: D.
    :param int latent_dim: k.
    :param hidden: widths of the decoder's hidden layers.
    :param str covariance: ``"diagonal"`` or ``"full"``.
    :param bool cholesky_from_z: with ``"full"``, make L a network output of z.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (64, 64),
        covariance: str = "diagonal",
        cholesky_from_z: bool = False,
    ) -> None:
        if covariance not in COVARIANCE_KINDS:
            raise ValueError(f"covariance must be one of {COVARIANCE_KINDS}; got {covariance!r}")
        if not isinstance(cholesky_from_z, bool):
            raise TypeError(f"cholesky_from_z must be True or False; got {cholesky_from_z!r}")
        data_dim = check_positive_int("data_dim", data_dim)  # sizes the decoder's output below
        cholesky_from_z = covariance == "full" and cholesky_from_z
        num_tril = data_dim * (data_dim + 1) // 2
        scale_outputs = {"diagonal": data_dim, "full": num_tril if cholesky_from_z else 0}
        super().__init__(data_dim, latent_dim, hidden, data_dim + scale_outputs[covariance])
        self.covariance = covariance
        self.cholesky_from_z = cholesky_from_z
        if covariance == "full" and not self.cholesky_from_z:
            self.scale_tril = PyroParam(torch.eye(data_dim), constraints.lower_cholesky)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        out = self.decoder(z)
        loc, raw_scale = out[..., : self.data_dim], out[..., self.data_dim :]
        if self.covariance == "diagonal":
            return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)
        scale_tril = (
            _tril_from_raw(raw_scale, self.data_dim) if self.cholesky_from_z else self.scale_tril
        )
        # The factor is lower-triangular with a positive diagonal by construction; checking it on
        # every (particle, point) expansion would dominate the cost.
        return dist.MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)

    @torch.no_grad()
    def set_collapsed(self, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        """Make the decoder ignore z and output N(mean, covariance) for every z.

        With the maximum-likelihood mean and covariance of the data (and q = prior), this is
        the collapsed solution whose ELBO equals the best Gaussian log-likelihood. With
        ``covariance="diagonal"`` only the diagonal of ``covariance`` is used.
        """
        self.ignore_latent()
        last = output_layer(self.decoder)
        last.weight.zero_()
        mean = torch.as_tensor(mean, dtype=last.bias.dtype, device=last.bias.device)
        covariance = torch.as_tensor(covariance, dtype=last.bias.dtype, device=last.bias.device)
        if self.covariance == "diagonal":
            raw_scale = _inverse_softplus(covariance.diagonal().sqrt() - MIN_SCALE)
            last.bias.copy_(torch.cat([mean, raw_scale]))
            return
        cholesky = torch.linalg.cholesky(covariance)
        if self.cholesky_from_z:
            last.bias.copy_(torch.cat([mean, _raw_from_tril(cholesky)]))
        else:
            last.bias.copy_(mean)
            self.scale_tril = PyroParam(cholesky, constraints.lower_cholesky)


class BernoulliVAE(_MLPDecoderModel):
    """p(z) = N(0, I_k), p(x given z) = prod_d Bernoulli(x_d; sigmoid(f(z))_d).

    A factorised decoder is not powerful for binary data with dependent pixels: without z it
    can only represent independent pixels, so the latent is used to carry the dependence.

    :param int data_dim: D (number of binary pixels).
    :param int latent_dim: k.
    :param hidden: widths of the decoder's hidden layers.
    """

    binary_data = True

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (128,)) -> None:
        super().__init__(data_dim, latent_dim, hidden, data_dim)

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=self.decoder(z)).to_event(1)


def _tril_from_raw(raw: torch.Tensor, size: int) -> torch.Tensor:
    """(..., size*(size+1)/2) unconstrained numbers -> (..., size, size) lower Cholesky factors."""
    rows, cols = torch.tril_indices(size, size, device=raw.device)
    tril = raw.new_zeros((*raw.shape[:-1], size, size))
    tril[..., rows, cols] = raw
    diagonal = F.softplus(tril.diagonal(dim1=-2, dim2=-1)) + MIN_SCALE
    return tril.tril(-1) + torch.diag_embed(diagonal)


def _raw_from_tril(tril: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_tril_from_raw` for one (size, size) factor."""
    size = tril.shape[-1]
    raw = tril.clone()
    raw.diagonal().copy_(_inverse_softplus(tril.diagonal() - MIN_SCALE))
    rows, cols = torch.tril_indices(size, size)
    return raw[rows, cols]


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))
