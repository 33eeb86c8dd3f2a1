"""Latent variable models written as Pyro models: p(x) = integral of p(z) p(x given z) dz.

Every model is a :class:`pyro.nn.PyroModule` whose ``forward(x)`` draws the latent site
``"z"`` and observes ``"x"`` inside ``pyro.plate("data", N)``.
"""

from lvm_models import datasets
from lvm_models._base import LatentVariableModel, NoExactValueError
from lvm_models.autoregressive import AutoregressiveVAE
from lvm_models.linear_gaussian import LinearGaussian, ppca_max_likelihood
from lvm_models.mixture import GaussianMixture
from lvm_models.vae import BernoulliVAE, GaussianVAE

__all__ = [
    "AutoregressiveVAE",
    "BernoulliVAE",
    "GaussianMixture",
    "GaussianVAE",
    "LatentVariableModel",
    "LinearGaussian",
    "NoExactValueError",
    "datasets",
    "ppca_max_likelihood",
]
