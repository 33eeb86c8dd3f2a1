"""NumPyro mirrors of the built-in PyTorch models and encoders, with the same parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import torch
from torch import nn

from guides.amortized import AmortizedCategorical, AmortizedGaussian
from inference._validate import check_data
from lvm_models._nn import MIN_SCALE
from lvm_models.linear_gaussian import LinearGaussian
from lvm_models.mixture import GaussianMixture
from lvm_models.vae import BernoulliVAE, GaussianVAE

# Before any array exists: parameters and data are float64, as the PyTorch models in the tests.
numpyro.enable_x64()


@dataclass(frozen=True, eq=False)
class NumPyroModel:
    """p(z) p(x given z) as a NumPyro program: ``"z"`` and ``"x"`` inside the data plate.

    :ivar prior: p(z), batch shape ().
    :ivar likelihood: z (..., k) -> p(x given z) with event shape (D,).
    :ivar log_marginal: x (N, D) -> exact log p(x) (N,) where a closed form exists, else None.
    """

    prior: dist.Distribution
    likelihood: Callable[[jax.Array], dist.Distribution]
    log_marginal: Callable[[jax.Array], jax.Array] | None = None

    def __call__(self, x: jax.Array) -> jax.Array:
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", self.prior)
            return numpyro.sample("x", self.likelihood(z), obs=x)


@dataclass(frozen=True, eq=False)
class NumPyroGuide:
    """q(z given x) as a NumPyro program: ``site`` drawn inside the data plate.

    :ivar distribution: x (N, D) -> q(z given x) with batch shape (N,).
    :ivar site: the latent site it samples.
    """

    distribution: Callable[[jax.Array], dist.Distribution]
    site: str = "z"

    def __call__(self, x: jax.Array) -> jax.Array:
        with numpyro.plate("data", x.shape[0]):
            return numpyro.sample(self.site, self.distribution(x))


def to_numpyro(module: nn.Module) -> NumPyroModel | NumPyroGuide:
    """The NumPyro mirror of a built-in model or encoder, with its current parameters (float64).

    Models: ``LinearGaussian`` (with its closed-form ``log_marginal``), ``GaussianMixture``
    (with ``log_marginal`` by logsumexp over components), ``GaussianVAE`` (diagonal or full
    covariance) and ``BernoulliVAE``. Encoders: ``AmortizedGaussian``, ``AmortizedCategorical``.
    The parameters are copied, as constants of the program: later training of the module
    does not reach the mirror.

    :raises TypeError: for any other module.
    """
    for kind, convert in _CONVERTERS.items():
        if isinstance(module, kind):
            return convert(module)
    names = ", ".join(kind.__name__ for kind in _CONVERTERS)
    raise TypeError(f"no NumPyro mirror for {type(module).__name__}; to_numpyro converts {names}")


def numpyro_exact_log_marginal(model: nn.Module | NumPyroModel, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x) in nats computed in JAX, for x (N, D): a float64 tensor (N,).

    The closed form of the mirror (``LinearGaussian``: N(b, W W^T + diag psi^2);
    ``GaussianMixture``: logsumexp over components), the JAX twin of the models' own
    ``log_marginal``.

    :raises ValueError: when the model has no closed form (``nuts_log_marginal`` gives a
        reference).
    """
    model = as_mirror(model, NumPyroModel, "model")
    if model.log_marginal is None:
        raise ValueError("model has no closed-form log p(x); nuts_log_marginal gives a reference")
    return to_tensor(jax.jit(model.log_marginal)(jax_data(x)))


def as_mirror(program: object, kind: type, name: str) -> NumPyroModel | NumPyroGuide:
    """``program`` converted by :func:`to_numpyro` if it is a module; it must end up a ``kind``."""
    mirror = to_numpyro(program) if isinstance(program, nn.Module) else program
    if not isinstance(mirror, kind):
        raise TypeError(
            f"{name} must be a built-in module or a {kind.__name__}; got {type(program).__name__}"
        )
    return mirror


def jax_data(x: torch.Tensor) -> jax.Array:
    """Checked data (N, D) as a float64 JAX array."""
    return _array(check_data(x, matrix=True))


def to_tensor(array: jax.Array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float64))


def _array(tensor: torch.Tensor) -> jax.Array:
    return jnp.asarray(tensor.detach().cpu().double().numpy())


def _mlp(network: nn.Sequential) -> Callable[[jax.Array], jax.Array]:
    """The JAX function of a torch stack of ``Linear`` and ``Tanh`` layers (``_nn.mlp``)."""
    layers: list[tuple[jax.Array, jax.Array] | None] = []  # (weight, bias), or None for tanh
    for layer in network:
        if isinstance(layer, nn.Linear):
            layers.append((_array(layer.weight), _array(layer.bias)))
        elif isinstance(layer, nn.Tanh):
            layers.append(None)
        else:
            raise TypeError(f"network layers must be Linear or Tanh; got {type(layer).__name__}")

    def forward(h: jax.Array) -> jax.Array:
        for layer in layers:
            h = jnp.tanh(h) if layer is None else h @ layer[0].T + layer[1]
        return h

    return forward


def _standard_normal(latent_dim: int) -> dist.Distribution:
    return dist.Normal(jnp.zeros(latent_dim), 1.0).to_event(1)


def _linear_gaussian(model: LinearGaussian) -> NumPyroModel:
    weight, bias, noise_scale = (_array(t) for t in (model.weight, model.bias, model.noise_scale))

    def likelihood(z: jax.Array) -> dist.Distribution:
        return dist.Normal(z @ weight.T + bias, noise_scale).to_event(1)

    def log_marginal(x: jax.Array) -> jax.Array:
        return dist.LowRankMultivariateNormal(bias, weight, noise_scale**2).log_prob(x)

    return NumPyroModel(_standard_normal(model.latent_dim), likelihood, log_marginal)


def _gaussian_mixture(model: GaussianMixture) -> NumPyroModel:
    logits, means, scales = (_array(t) for t in (model.logits, model.means, model.scales))

    def likelihood(z: jax.Array) -> dist.Distribution:
        return dist.Normal(means[z], scales[z]).to_event(1)

    def log_marginal(x: jax.Array) -> jax.Array:
        components = dist.Normal(means, scales).to_event(1)
        log_joint = jax.nn.log_softmax(logits) + components.log_prob(x[:, None, :])  # (N, K)
        return jax.nn.logsumexp(log_joint, -1)

    return NumPyroModel(dist.Categorical(logits=logits), likelihood, log_marginal)


def _gaussian_vae(model: GaussianVAE) -> NumPyroModel:
    decoder, data_dim = _mlp(model.decoder), model.data_dim
    diagonal, cholesky_from_z = model.covariance == "diagonal", model.cholesky_from_z
    fixed_tril = None if diagonal or cholesky_from_z else _array(model.scale_tril)

    def likelihood(z: jax.Array) -> dist.Distribution:
        out = decoder(z)
        if diagonal:
            return _diagonal_normal(out, data_dim)
        loc, raw_scale = out[..., :data_dim], out[..., data_dim:]
        scale_tril = _tril_from_raw(raw_scale, data_dim) if cholesky_from_z else fixed_tril
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)

    return NumPyroModel(_standard_normal(model.latent_dim), likelihood)


def _diagonal_normal(out: jax.Array, size: int) -> dist.Distribution:
    """N(loc, diag(softplus(raw) + MIN_SCALE)^2) from a network output [loc, raw] (..., 2 size)."""
    loc, raw_scale = out[..., :size], out[..., size:]
    return dist.Normal(loc, jax.nn.softplus(raw_scale) + MIN_SCALE).to_event(1)


def _tril_from_raw(raw: jax.Array, size: int) -> jax.Array:
    """As ``lvm_models.vae._tril_from_raw``: rows of the lower triangle, softplus diagonal."""
    rows, cols = np.tril_indices(size)  # the row-major order of torch.tril_indices
    tril = jnp.zeros((*raw.shape[:-1], size, size)).at[..., rows, cols].set(raw)
    diagonal = jax.nn.softplus(jnp.diagonal(tril, axis1=-2, axis2=-1)) + MIN_SCALE
    return jnp.tril(tril, -1) + diagonal[..., None] * jnp.eye(size)


def _bernoulli_vae(model: BernoulliVAE) -> NumPyroModel:
    decoder = _mlp(model.decoder)
    return NumPyroModel(
        _standard_normal(model.latent_dim),
        lambda z: dist.Bernoulli(logits=decoder(z)).to_event(1),
    )


def _amortized_gaussian(guide: AmortizedGaussian) -> NumPyroGuide:
    encoder, latent_dim = _mlp(guide.encoder), guide.latent_dim
    return NumPyroGuide(lambda x: _diagonal_normal(encoder(x), latent_dim), guide.site)


def _amortized_categorical(guide: AmortizedCategorical) -> NumPyroGuide:
    encoder = _mlp(guide.encoder)
    return NumPyroGuide(lambda x: dist.Categorical(logits=encoder(x)), guide.site)


_CONVERTERS: dict[type, Callable[..., NumPyroModel | NumPyroGuide]] = {
    LinearGaussian: _linear_gaussian,
    GaussianMixture: _gaussian_mixture,
    GaussianVAE: _gaussian_vae,
    BernoulliVAE: _bernoulli_vae,
    AmortizedGaussian: _amortized_gaussian,
    AmortizedCategorical: _amortized_categorical,
}
