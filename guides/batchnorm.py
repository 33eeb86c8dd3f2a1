"""Batch-normalised encoder means (BN-VAE): an expected KL from N(0, I) of at least k gamma^2 / 2.

Zhu et al. (2020), "A batch normalized inference network keeps the KL vanishing away", sec. 3:
pass the encoder's means through batch normalisation with a fixed scale gamma and a learned
shift beta. Over a batch the means of each dimension then have mean beta_j and second moment
gamma^2 + beta_j^2, so the batch average of the KL from N(0, 1) cannot fall below
0.5 (gamma^2 + beta_j^2) per dimension, whatever the rest of the encoder learns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro import distributions as dist
from torch import nn

from guides.amortized import _AmortizedGuide
from lvm_models._base import check_columns, check_positive_int
from lvm_models._nn import MIN_SCALE

# BatchNorm's variance floor, small so that the batch's second moment is gamma^2 + beta^2 to
# float precision: the identity below carries a factor v / (v + eps).
BATCH_NORM_EPS = 1e-8


class BatchNormGaussian(_AmortizedGuide):
    """q(z given x) = N(mu(x), diag(sigma(x)^2)) with batch-normalised means (Zhu et al., 2020).

    ``mu_j = gamma * BN(u_j) + beta_j``: u and the raw scale from one MLP, BN a
    ``BatchNorm1d(k, affine=False)``, gamma a fixed number (a buffer, not trained) and beta a
    learned shift per dimension; ``sigma = softplus(raw) + MIN_SCALE`` as in
    :class:`~guides.AmortizedGaussian`.

    In training mode BN normalises with the batch's own mean m_j and (biased) variance v_j, so
    over the B rows of the batch, exactly,

        mean_b mu_bj = beta_j,    mean_b mu_bj^2 = gamma^2 v_j / (v_j + eps) + beta_j^2,

    with eps = ``BATCH_NORM_EPS`` (1e-8), and the batch average of the KL from N(0, 1) is
    (Zhu et al., 2020, eq. 8)

        mean_b KL(q(z_j given x_b) || N(0, 1))
            = 0.5 (gamma^2 + beta_j^2) + mean_b 0.5 (sigma_bj^2 - 1 - log sigma_bj^2)
            >= 0.5 (gamma^2 + beta_j^2) >= 0.5 gamma^2,

    since sigma^2 - 1 - log sigma^2 >= 0; summed over dimensions, at least k gamma^2 / 2 per
    point. It needs spread in u over the batch: a batch of identical rows has v_j = 0 and
    mu_j = beta_j (and BN refuses a batch of one row in training mode). BN is invariant to the
    scale of u, so the gradient of the loss never shrinks that spread.

    In eval mode (every estimator evaluates in eval mode) BN uses its running mean and
    variance (momentum 0.1) from the training batches, which lag the encoder and describe
    batches, not the evaluated points: there the floor holds only approximately. After
    training, :meth:`calibrate` sets them to the statistics of a data set, so that eval mode on
    that data normalises exactly as one training batch of it would, and the floor holds
    there exactly (on other data, as far as its statistics match).

    The floor is a KL from a standard normal prior, N(0, I), that of the built-in VAEs and
    linear-Gaussian models; :func:`~guides.check_standard_normal_prior` refuses another.

    :param int data_dim: D.
    :param int latent_dim: k.
    :param float gamma: the fixed scale of the normalised means, > 0.
    :param hidden: widths of the encoder's hidden layers.
    :param str site: the name of the latent site it samples.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        gamma: float = 0.5,
        hidden: Sequence[int] = (64, 64),
        site: str = "z",
    ) -> None:
        latent_dim = check_positive_int("latent_dim", latent_dim)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"gamma must be a positive number; got {gamma!r}")
        super().__init__(data_dim, hidden, 2 * latent_dim, site)
        self.latent_dim = latent_dim
        self.batch_norm = nn.BatchNorm1d(latent_dim, eps=BATCH_NORM_EPS, affine=False)
        self.register_buffer("gamma", torch.tensor(float(gamma)))
        self.beta = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        """Draw the latent for every row of ``x`` (N, D); N >= 2 in training mode."""
        if self.training and x.shape[0] < 2:
            raise ValueError(
                f"BatchNormGaussian normalises over the batch in training mode: x must have "
                f"at least 2 rows; got {x.shape[0]} (call .eval() to use running statistics)"
            )
        return super().forward(x, **kwargs)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Set BN's running mean and variance to the batch statistics of ``x`` (N, D), N >= 2:
        the mean and biased variance of the pre-normalisation means over its rows."""
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"x must be 2-D (N, D) with N >= 2; got shape {tuple(x.shape)}")
        check_columns(x, self.data_dim, self)
        raw_loc = self._raw(x.to(self._origin.dtype))[0]  # (N, k)
        running_mean, running_var = self.batch_norm.running_mean, self.batch_norm.running_var
        assert running_mean is not None and running_var is not None  # track_running_stats
        running_mean.copy_(raw_loc.mean(0))
        running_var.copy_(raw_loc.var(0, unbiased=False))

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        raw_loc, raw_scale = self._raw(x)
        # BatchNorm1d reads a 3-D input's dim 1 as channels: normalise rows of (-1, k) instead.
        normalised = self.batch_norm(raw_loc.reshape(-1, self.latent_dim)).reshape(raw_loc.shape)
        loc = self.gamma * normalised + self.beta
        return dist.Normal(loc, F.softplus(raw_scale) + MIN_SCALE).to_event(1)

    def _raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's means before normalisation and its raw scales, each (..., k)."""
        out = self.encoder(x)
        return out[..., : self.latent_dim], out[..., self.latent_dim :]
