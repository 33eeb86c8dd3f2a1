"""The exact posterior of a linear-Gaussian model, as a guide."""

from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule

from lvm_models._base import unique_pyro_name
from lvm_models.linear_gaussian import LinearGaussian


class ExactPosterior(PyroModule):
    """q(z given x) = p(z given x) of a :class:`~lvm_models.LinearGaussian`, in closed form.

    With this guide log p(x, z) - log q(z given x) = log p(x) for every z, so the ELBO is
    tight with zero variance and every importance-weighted estimate is exact.

    :param LinearGaussian model: the model whose posterior to use; its current parameters
        are read on every call (gradients flow into them).
    """

    def __init__(self, model: LinearGaussian) -> None:
        if not isinstance(model, LinearGaussian):
            raise TypeError(
                f"ExactPosterior needs a LinearGaussian model; got {type(model).__name__}"
            )
        super().__init__(name=unique_pyro_name(type(self).__name__))
        self._model = [model]  # outside the module tree: the model owns its parameters

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self._model[0].posterior(x))
