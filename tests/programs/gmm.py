"""Pyro's Gaussian mixture tutorial (``tutorial/source/gmm.ipynb``), written as there.

Global latents ``weights``, ``scale`` and ``locs`` (in ``pyro.plate("components", K)``), then
one ``assignment`` per data point, enumerated in the model (``@config_enumerate``), on the
tutorial's five 1-D points. ``make_global_guide`` is the tutorial's MAP guide, ``AutoDelta``
of the model with only the globals exposed, initialised by its ``init_loc_fn``;
``initialize`` picks its best start; ``make_full_guide`` is its "full_guide": those point
estimates (their params blocked) and a free ``Categorical`` per point for ``assignment``.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta
from torch.distributions import constraints

K = 2  # Fixed number of components.
GLOBAL_SITES = ("weights", "scale", "locs")


def tutorial_data() -> torch.Tensor:
    return torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])


@config_enumerate
def model(data: torch.Tensor) -> None:
    # Global variables.
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))

    with pyro.plate("data", len(data)):
        # Local variables.
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def make_global_guide(data: torch.Tensor, seed: int) -> AutoDelta:
    """The tutorial's ``initialize(seed)``: uniform weights, scale from the data's variance,
    locs at K data points drawn with ``seed``. Clears the param store, as the tutorial does:
    AutoDelta's parameters live there by name."""
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()

    def init_loc_fn(site: dict) -> torch.Tensor:
        if site["name"] == "weights":
            # Initialize weights to uniform.
            return torch.ones(K) / K
        if site["name"] == "scale":
            return (data.var() / 2).sqrt()
        if site["name"] == "locs":
            return data[torch.multinomial(torch.ones(len(data)) / len(data), K)]
        raise ValueError(site["name"])

    return AutoDelta(poutine.block(model, expose=list(GLOBAL_SITES)), init_loc_fn=init_loc_fn)


def initialize(data: torch.Tensor, num_seeds: int) -> AutoDelta:
    """The tutorial's choice of the best among ``num_seeds`` random initializations (the
    lowest loss): mixture models are very susceptible to local modes."""
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    _, seed = min(
        (elbo.loss(model, make_global_guide(data, seed), data), seed) for seed in range(num_seeds)
    )
    # As the tutorial does: the chosen guide's parameters are set up by a loss evaluation
    # right after seeding, so they are the ones that won, whatever trains it next.
    guide = make_global_guide(data, seed)
    elbo.loss(model, guide, data)
    return guide


def make_full_guide(global_guide: AutoDelta) -> Callable[[torch.Tensor], None]:
    @config_enumerate
    def full_guide(data: torch.Tensor) -> None:
        # Global variables.
        with poutine.block(hide_types=["param"]):  # Keep our learned values of global parameters.
            global_guide(data)

        # Local variables.
        with pyro.plate("data", len(data)):
            assignment_probs = pyro.param(
                "assignment_probs",
                torch.ones(len(data), K) / K,
                constraint=constraints.simplex,
            )
            pyro.sample("assignment", dist.Categorical(assignment_probs))

    return full_guide
