"""The built-in models and encoders in NumPyro, their bounds in JAX, and a NUTS reference log p(x).

- :mod:`~inference.backends.numpyro.mirror`: :func:`to_numpyro` reads a trained PyTorch
  module's parameters into a NumPyro program with the same sites (``"z"`` latent, ``"x"``
  observed, both inside ``numpyro.plate("data", N)``), so the same model runs in JAX.
- :mod:`~inference.backends.numpyro.bounds`: :func:`numpyro_elbo` and
  :func:`numpyro_iw_log_marginal`, the estimators of :mod:`inference.estimators.bounds` written with
  NumPyro's handlers and ``jax.vmap`` / ``jax.jit``.
- :mod:`~inference.backends.numpyro.reference`: :func:`nuts_log_marginal`, a reference log
  p(x) for models without an oracle (NUTS on p(z given x), a Student-t proposal fitted to
  the draws, a large-K importance estimate), and :func:`inference_gap` (log p(x) minus the
  encoder's bound; ``amortization_gap`` is its deprecated old name).

Importing this package turns on JAX's 64-bit mode (``numpyro.enable_x64()``): the mirrors
compute in float64, as the PyTorch models do in the tests, so exact values agree to 1e-5.
"""

from inference.backends.numpyro.bounds import numpyro_elbo, numpyro_iw_log_marginal
from inference.backends.numpyro.mirror import (
    NumPyroGuide,
    NumPyroModel,
    numpyro_exact_log_marginal,
    to_numpyro,
)
from inference.backends.numpyro.reference import (
    ReferenceEstimate,
    UnreliableReferenceWarning,
    amortization_gap,
    inference_gap,
    nuts_log_marginal,
)

__all__ = [
    "NumPyroGuide",
    "NumPyroModel",
    "ReferenceEstimate",
    "UnreliableReferenceWarning",
    "amortization_gap",
    "inference_gap",
    "numpyro_elbo",
    "numpyro_exact_log_marginal",
    "numpyro_iw_log_marginal",
    "nuts_log_marginal",
    "to_numpyro",
]
