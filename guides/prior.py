"""The prior as a guide: the proposal of a model that ignores its latent."""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
from pyro.nn import PyroModule

from lvm_models._base import unique_pyro_name


class PriorGuide(PyroModule):
    """q(z given x) = p(z): every latent site drawn from the model's own prior.

    Runs the model with its observed sites hidden, so the latent sites (any number, any
    names, continuous or discrete, in ancestral order) are drawn from the prior. It has no
    parameters of its own. When the decoder ignores z this is the exact posterior, and the
    ELBO is tight.

    :param model: any Pyro model that follows the plate convention.
    """

    def __init__(self, model: Callable) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model; got {type(model).__name__}")
        super().__init__(name=unique_pyro_name(type(self).__name__))
        # Held outside the module tree: the model owns its parameters, the guide only reads them.
        self._model = [model]

    def forward(self, *args: object, **kwargs: object) -> None:
        model = self._model[0]
        poutine.block(model, hide_fn=_is_observed)(*args, **kwargs)


def _is_observed(msg: dict) -> bool:
    return msg["type"] == "sample" and msg["is_observed"]
