"""The fast paths give the values of the plain paths (same seed, same numbers); not timed."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from pyro.ops.stats import fit_generalized_pareto

from guides import AmortizedGaussian
from inference import fit
from inference._programs import Inputs, inspect_pair
from inference.estimators.bounds import (
    _generalized_pareto_shape,
    _psis_tail_size,
    _RunningLogMeanExp,
    weight_diagnostics,
)
from inference.training.optim import MultiTensorAdam
from inference.training.train import _ScaleLatent, _svi_step
from lvm_models import BernoulliVAE, datasets
from lvm_models._base import unique_pyro_name

STEPS = 30


def digits_pair():
    torch.manual_seed(0)
    return BernoulliVAE(64, 4, hidden=(16,)), AmortizedGaussian(64, 4, hidden=(16,))


def parameters_of(*modules) -> list[torch.Tensor]:
    return [p.detach().clone() for module in modules for p in module.parameters()]


def plain_fit(x: torch.Tensor, num_particles: int) -> list[torch.Tensor]:
    """Pyro's own loop: SVI, Trace_ELBO with a particle plate, pyro.optim.Adam, validation on,
    every step under the latent-scaling handler (at scale 1)."""
    model, guide = digits_pair()
    pyro.set_rng_seed(0)
    inspect_pair(model, guide, x)  # draws what fit's own check draws: the same random numbers
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss=elbo.differentiable_loss)
    for _ in range(STEPS):
        with pyro.validation_enabled(True), _ScaleLatent(1.0):
            svi.step(x)
    return parameters_of(model, guide)


def test_fit_takes_the_steps_of_pyros_plain_loop_with_one_particle():
    x = datasets.binarized_digits(seed=0).x[:64]
    model, guide = digits_pair()
    fit(model, guide, x, steps=STEPS, lr=0.01, seed=0, progress=False)
    for fast, plain in zip(parameters_of(model, guide), plain_fit(x, num_particles=1)):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


def test_fit_takes_the_steps_of_pyros_plain_loop_with_eight_particles():
    x = datasets.binarized_digits(seed=0).x[:64]
    model, guide = digits_pair()
    fit(model, guide, x, steps=STEPS, lr=0.01, num_particles=8, seed=0, progress=False)
    for fast, plain in zip(parameters_of(model, guide), plain_fit(x, num_particles=8)):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


def test_unvalidated_steps_equal_validated_ones():
    x = datasets.binarized_digits(seed=0).x[:64]
    results = []
    for validate in (True, False):
        model, guide = digits_pair()
        svi = SVI(model, guide, MultiTensorAdam({"lr": 0.01}), loss=Trace_ELBO())
        pyro.set_rng_seed(0)
        losses = [_svi_step(svi, Inputs(x), 1.0, validate) for _ in range(5)]
        results.append((losses, parameters_of(model, guide)))
    (losses, params), (fast_losses, fast_params) = results
    assert losses == fast_losses
    for fast, plain in zip(fast_params, params):
        assert torch.equal(fast, plain)


def test_batched_tail_selection_equals_selection_per_chunk():
    log_weights = torch.randn(5000, 3, generator=torch.Generator().manual_seed(0)).double()
    tail = _psis_tail_size(5000)
    expected = log_weights.topk(tail, dim=0).values
    running = _RunningLogMeanExp(tail_size=tail)
    for chunk in log_weights.split(13):
        running.update(chunk)
    running.khat()  # merges what is pending
    assert torch.equal(running._tail, expected)
    _, khat = weight_diagnostics(log_weights)
    torch.testing.assert_close(khat, running.khat())


def test_batched_pareto_fit_equals_pyros_fit_point_by_point():
    generator = torch.Generator().manual_seed(0)
    num_points, rows = 40, 600
    shapes = torch.linspace(-0.3, 1.5, num_points, dtype=torch.float64)
    uniform = torch.rand(rows, num_points, generator=generator, dtype=torch.float64)
    exceedances = (uniform.pow(-shapes) - 1) / shapes  # generalized Pareto draws of shape k
    lengths = torch.randint(10, rows + 1, (num_points,), generator=generator)
    observed = torch.rand(rows, num_points, generator=generator).argsort(0) < lengths
    expected = torch.tensor(
        [fit_generalized_pareto(exceedances[observed[:, p], p])[0] for p in range(num_points)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(
        _generalized_pareto_shape(exceedances, observed), expected, rtol=0, atol=1e-6
    )


def test_khat_is_psis_diagnostics_fit_point_by_point():
    # Below the cap: the cutoff and tail of pyro.infer.importance.psis_diagnostic, per point.
    generator = torch.Generator().manual_seed(1)
    scales = torch.linspace(0.1, 3.0, 12, dtype=torch.float64)
    log_weights = scales * torch.randn(3000, 12, generator=generator, dtype=torch.float64)
    expected = []
    for column in log_weights.T:
        ascending = (column - column.max()).sort().values
        cutoff_index = -math.ceil(min(0.2 * 3000, 3.0 * math.sqrt(3000))) - 1
        cutoff = max(math.log(1e-15), ascending[cutoff_index].item())
        tail = ascending[ascending > cutoff]
        expected.append(fit_generalized_pareto(tail.exp() - math.exp(cutoff))[0])
    _, khat = weight_diagnostics(log_weights)
    torch.testing.assert_close(khat, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6)


class DeltaEncoder(PyroModule):
    """q(z given x) = a point mass at an MLP's output: a guide that draws no random numbers,
    so two loops that draw differently still take the same steps."""

    def __init__(self) -> None:
        super().__init__(name=unique_pyro_name("DeltaEncoder"))
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)
        )

    def forward(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.encoder(x), event_dim=1))


def test_jit_fit_takes_the_steps_of_the_plain_fit():
    x = datasets.binarized_digits(seed=0).x[:256]
    results = []
    for jit in (False, True):
        model, _ = digits_pair()
        guide = DeltaEncoder()
        fit(model, guide, x, steps=STEPS, batch_size=64, lr=0.01, seed=0, progress=False, jit=jit)
        results.append(parameters_of(model, guide))
    for compiled, plain in zip(*results[::-1]):
        torch.testing.assert_close(compiled, plain, rtol=1e-5, atol=1e-6)
